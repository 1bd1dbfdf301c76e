"""``osctl supervise`` run in the background for a test host, with fast reconcile settings.

What the supervisor does is observed from outside: its status file
(``<root>/var/lib/osctl/supervisor.json``) names its pid and whether it is connected to the
engine, and is written again (atomically: a new file renamed over the old one) at the end of
every reconcile pass while the host's set is up (a set that is down writes nothing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.hosts import Host
from tests.support.waiting import wait_for

RECONCILE_EVERY = 0.5
FAST = ["--reconcile-every", str(RECONCILE_EVERY), "--backoff-max", "0.5", "--stable-after", "30"]


def watching(host: Host, pid: int) -> bool:
    """The supervisor ``pid`` holds ``host`` and follows the engine's events: it wrote its pid and
    ``engine_connected`` into its status file once it had subscribed to them."""
    try:
        status = json.loads(status_file(host).read_text())
    except (OSError, ValueError):
        return False
    return bool(status.get("pid") == pid and status.get("engine_connected") is True)


def status_file(host: Host) -> Path:
    return host.root / "var/lib/osctl/supervisor.json"


def _signature(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_ino, st.st_mtime_ns)


def wait_passes(host: Host, proc: subprocess.Popen[bytes], passes: int, describe: Callable[[], str],
                timeout: float | None = None) -> None:
    """Wait until the supervisor ``proc`` has written its status file ``passes`` more times: that
    many reconcile passes (or handled events) went by. A write missed between two looks only
    makes the wait longer."""
    path = status_file(host)
    seen, last = 0, _signature(path)
    deadline = time.monotonic() + (timeout or 10 + 4 * passes * RECONCILE_EVERY)
    while seen < passes:
        assert time.monotonic() < deadline, f"the supervisor made {seen} of {passes} passes: {describe()}"
        assert proc.poll() is None, f"the supervisor exited with {proc.returncode}: {describe()}"
        time.sleep(0.02)
        now = _signature(path)
        if now != last:
            seen, last = seen + 1, now


def wait_watching(host: Host, proc: subprocess.Popen[bytes], describe: Callable[[], str],
                  timeout: float = 30) -> None:
    """Wait until the supervisor ``proc`` watches ``host``: it follows the engine's events
    (``watching``) and has finished a reconcile pass since. Its first pass starts whatever is
    found stopped without counting a failure (the engine, not the service, stopped it), so a
    test that kills a service must wait for that pass. Fails early if the supervisor exited."""
    wait_for(lambda: proc.poll() is not None or watching(host, proc.pid), timeout,
             lambda: f"the supervisor to watch the engine: {describe()}")
    assert proc.poll() is None, f"the supervisor exited with {proc.returncode}: {describe()}"
    wait_passes(host, proc, 1, describe)


class Supervise:
    def __init__(self, host: Host, *args: str) -> None:
        self.host = host
        self.log = open(host.root.parent / f"supervise-{host.host_id}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "osctl", "supervise", *FAST, *args], env=host.env(),
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        with open(self.log.name) as log:
            return log.read()

    def wait_watching(self, timeout: float = 30) -> Supervise:
        """``wait_watching`` for this supervisor; returns it."""
        wait_watching(self.host, self.proc, self.output, timeout)
        return self

    def wait_passes(self, passes: int, timeout: float | None = None) -> None:
        """``wait_passes`` for this supervisor."""
        wait_passes(self.host, self.proc, passes, self.output, timeout)

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        if not self.log.closed:
            self.log.close()
        return code
