"""SIGKILL to an upgrade while the engine is still carrying out one of its stops, then `osctl boot`.

The engine finishes a stop it was asked for after the asker died: the service got SIGTERM and
goes down a few seconds later, whatever osctl does meanwhile. A boot that starts inside that
window sees the service "running"; it must not keep it as it is and report success while the
service is on its way down (issue #19, item 7).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import docker
import pytest

from tests.support.faults import FaultRecord, assert_no_strays, osctl_ok
from tests.support.hosts import Host
from tests.support.services import running_sets

GRACE = 3  # seconds the worker takes to honour SIGTERM
# worker takes GRACE seconds to stop; the swap stops app and worker at once (app depends on worker).
MANIFEST = f"""\
version: v2.0
services:
  worker:
    command: ["/bin/sh", "-c", "trap 'sleep {GRACE}; exit 0' TERM; while :; do sleep 1 & wait; done"]
    network_mode: none
    restart: always
  app:
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait; done"]
    network_mode: none
    depends_on: [worker]
    restart: always
boot:
  kernel: /boot/vmlinuz
  initrd: /boot/initrd.img
  cmdline: "console=ttyS0"
"""


class KillSeen:
    """Watches the engine for the stop signal sent to one container (its ``kill`` event)."""

    def __init__(self, client: docker.DockerClient, container: str) -> None:
        self.seen = threading.Event()
        self._stream = client.events(decode=True, filters={"container": container, "event": "kill"})
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        for _ in self._stream:
            self.seen.set()
            return

    def close(self) -> None:
        self._stream.close()


def test_sigkill_inside_a_slow_stop_then_boot(host: Host, docker_client: docker.DockerClient,
                                              publish: Callable[[str, str], str],
                                              fault: Callable[[str], FaultRecord]) -> None:
    fault("SIGKILL to osctl upgrade while the engine still stops an old service, then boot")
    host.image = publish("v2.0", MANIFEST)
    publish("v2.1", MANIFEST)
    osctl_ok(host, "upgrade", "--to", "v2.0")
    worker = f"osctl-{host.host_id}-worker-v2.0"
    watch = KillSeen(docker_client, worker)
    proc = subprocess.Popen([sys.executable, "-m", "osctl", "upgrade", "--to", "v2.1"], env=host.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        if not watch.seen.wait(60):
            pytest.fail(f"the upgrade never stopped worker: {proc.communicate(timeout=60)[1]}")
        proc.kill()
        killed = time.monotonic()
        proc.communicate(timeout=30)
    finally:
        watch.close()
        if proc.poll() is None:
            proc.kill()
    assert docker_client.containers.get(worker).attrs["State"]["Running"], "the boot must start inside the stop"
    boot = host.osctl("boot")
    booted = time.monotonic() - killed
    time.sleep(max(0.0, GRACE + 1 - (time.monotonic() - killed)))  # the dead process's stop is over by now
    sets = running_sets(docker_client, host)
    print(f"boot returned {booted:.2f}s after the kill: exit {boot.returncode}, {boot.stdout.strip()!r}; "
          f"engine: {sets}")
    assert boot.returncode == 0, boot.stderr
    assert sets == {"v2.0": {"worker", "app"}}, f"boot said {boot.stdout.strip()!r}, but the engine runs {sets}"
    assert json.loads((host.root / "var/lib/osctl/journal.json").read_text())["result"] == "rolled-back"
    assert_no_strays(host)
