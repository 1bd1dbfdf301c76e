"""The live views of a fleet against a real etcd: ``osctl fleet serve`` in headless Chromium and
``osctl fleet status --watch`` without and with a terminal, while the test moves a rollout on.

The test plays the agents: it writes host states, slots and failures into etcd as a rollout
would (``fleetstate``), one step at a time, and checks that an open page (one page load, never
reloaded) and a running watch show each step by themselves: so the updates are pushed. The
page is read over the DevTools protocol (``tests.support.chromium``).
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path


from osctl.adapters.etcd import Etcd
from osctl.domain import fleetkeys, fleetstate
from osctl.models.fleet import HostState, Rollout, RolloutFailure, SlotHolder, Wave
from tests.support.chromium import Chromium
from tests.support.etcd_cluster import EtcdCluster
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
HOSTS = [f"live-{i}" for i in range(6)]
HOSTILE = '<img src=x onerror="window.__pwned=1"> [bold]not markup[/]'
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Output:
    """What a process writes to a pipe or a terminal, collected by a thread as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd, self.data = fd, b""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty's master reads EIO once the child has closed it
                return
            if not chunk:
                return
            with self._lock:
                self.data += chunk

    @property
    def text(self) -> str:
        with self._lock:
            return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.data.decode(errors="replace"))

    def wait_for(self, needle: str, timeout: float = 30) -> float:
        return wait_for(lambda: needle in self.text, timeout, lambda: f"{needle!r} in the output:\n{self.text[-3000:]}")


def osctl(endpoints: list[str], group: str, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "osctl", "--etcd", ",".join(endpoints), "--group", group, "fleet", *args]
    # SIGINT as in a terminal: a suite started in the background (`scripts/test &`) hands its
    # children SIGINT ignored, and Ctrl-C is what these tests send.
    return subprocess.Popen(command, env=env, preexec_fn=_default_sigint,  # type: ignore[call-overload, no-any-return]
                            **popen)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"osctl did not end within 20 s of signal {sig}") from None


def cleanup(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process if a failed test left it running, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- a rollout, played step by step ----------------------------------------------------------
def start_rollout(etcd: Etcd, group: str, **changes: object) -> Rollout:
    now = datetime.now(UTC)
    rollout = Rollout(target="v1.5", max_concurrent=2, seed=11, failure_budget=2, started_at=now, updated_at=now,
                      waves=(Wave(share=0.5, after=0), Wave(share=1.0, after=3600)), **changes)  # type: ignore[arg-type]
    fleetstate.write_rollout(etcd, group, rollout)
    for host_id in HOSTS:
        publish(etcd, group, host_id, "waiting-slot", "v1.3")
    return rollout


def publish(etcd: Etcd, group: str, host_id: str, phase: str, running: str) -> int:
    state = HostState(host_id=host_id, phase=phase, running=running, target="v1.5",  # type: ignore[arg-type]
                      updated_at=datetime.now(UTC))
    return fleetstate.publish_host(etcd, group, state, 0)


def fail(etcd: Etcd, group: str, host_id: str, reason: str) -> None:
    """The host records its failure in the rollout, as an agent does (compare-and-swap)."""
    failure = RolloutFailure(host_id=host_id, version="v1.5", reason=reason, at=datetime.now(UTC))
    fleetstate.update_rollout(etcd, group, lambda r: fleetstate.add_failure(r, failure, datetime.now(UTC)))


def swap(etcd: Etcd, group: str, hosts: list[str]) -> None:
    """Those hosts take a slot each and swap: what the page must show next."""
    for index, host_id in enumerate(hosts):
        holder = SlotHolder(host_id=host_id, version="v1.5", acquired_at=datetime.now(UTC))
        etcd.put(fleetkeys.slot_key(group, index), holder.model_dump(mode="json"))
        publish(etcd, group, host_id, "swapping", "v1.3")


def finish(etcd: Etcd, group: str, hosts: list[str]) -> None:
    for index, host_id in enumerate(hosts):
        publish(etcd, group, host_id, "healthy", "v1.5")
        etcd.delete(fleetkeys.slot_key(group, index))


# -- the web page ----------------------------------------------------------------------------
def counts(browser: Chromium, page: str, table: str) -> dict[str, int]:
    rows = browser.evaluate(page, f"Array.from(document.querySelectorAll('#{table} tr[data-key]'))"
                                  ".map(r => [r.dataset.key, Number(r.dataset.count)])")
    return {key: count for key, count in rows or []}


def shown(browser: Chromium, page: str, element: str) -> str:
    return str(browser.evaluate(page, f"document.getElementById('{element}')?.textContent ?? ''"))


def test_the_page_follows_a_rollout_as_etcd_changes(etcd_cluster: EtcdCluster, etcd: Etcd, group: str) -> None:
    start_rollout(etcd, group)
    port = free_port()
    server = osctl(etcd_cluster.endpoints, group, "serve", f"127.0.0.1:{port}", stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, err = Output(server.stdout.fileno()), Output(server.stderr.fileno())  # type: ignore[union-attr]
    try:
        out.wait_for(f"serving group {group} at http://127.0.0.1:{port}/ (loopback only")
        url = f"http://127.0.0.1:{port}/"
        with NO_PROXY.open(url + "status.json", timeout=10) as answer:
            assert json.load(answer)["by_version"] == {"v1.3": 6}
        with Chromium() as browser:
            page = browser.open(url)
            look = lambda: (counts(browser, page, "by-version"), counts(browser, page, "by-phase"),  # noqa: E731
                            shown(browser, page, "on-target"), shown(browser, page, "slots"))
            wait_for(lambda: look()[0] == {"v1.3": 6}, 30, lambda: f"the first data on the page: {look()}")
            assert look()[1] == {"waiting-slot": 6} and look()[2] == "0" and look()[3] == "0 / 2 taken"
            assert "wave 1 of 2 open: 50% of the group" in shown(browser, page, "wave")
            assert shown(browser, page, "conn") == "live"

            latencies = []
            for step in range(3):
                batch = HOSTS[2 * step:2 * step + 2]
                written = time.monotonic()
                swap(etcd, group, batch)
                wait_for(lambda: look()[3] == "2 / 2 taken" and look()[1].get("swapping") == 2, 15,
                         lambda: f"step {step}: two hosts swapping on the page: {look()}")
                latencies.append(time.monotonic() - written)
                written = time.monotonic()
                finish(etcd, group, batch)
                done = 2 * (step + 1)
                wait_for(lambda: look()[2] == str(done) and look()[3] == "0 / 2 taken", 15,
                         lambda: f"step {step}: {done} hosts on v1.5 on the page: {look()}")
                latencies.append(time.monotonic() - written)
                assert look()[0] == ({"v1.3": 6 - done, "v1.5": done} if done < 6 else {"v1.5": 6})
            print(f"page update after an etcd write: max {max(latencies):.2f} s, "
                  f"mean {sum(latencies) / len(latencies):.2f} s over {len(latencies)} steps")

            # A failure whose reason is markup: shown as text, never run, budget counted.
            fail(etcd, group, HOSTS[0], HOSTILE)
            wait_for(lambda: HOSTILE in shown(browser, page, "failures"), 15,
                     lambda: f"the failure on the page: {shown(browser, page, 'failures')!r}")
            assert browser.evaluate(page, "document.querySelectorAll('#failures img').length") == 0
            assert browser.evaluate(page, "window.__pwned === undefined") is True
            assert shown(browser, page, "budget") == "1 / 2 failures used, 1 left"
        assert stop(server, signal.SIGTERM) == 0
        assert "Traceback" not in err.text and "error" not in err.text, err.text
    finally:
        cleanup(server)


def test_serve_refuses_a_port_in_use_in_one_line(etcd_cluster: EtcdCluster, group: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = osctl(etcd_cluster.endpoints, group, "serve", f"127.0.0.1:{port}", stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert stderr.decode().splitlines()[0] == f"error: cannot listen on 127.0.0.1:{port}: the port is in use"


# -- the terminal view -----------------------------------------------------------------------
def test_watch_without_a_terminal_prints_a_frame_per_change(etcd_cluster: EtcdCluster, etcd: Etcd,
                                                            group: str) -> None:
    start_rollout(etcd, group)
    proc = osctl(etcd_cluster.endpoints, group, "status", "--watch", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 stdin=subprocess.DEVNULL)
    out, err = Output(proc.stdout.fileno()), Output(proc.stderr.fileno())  # type: ignore[union-attr]
    try:
        out.wait_for("0/6 hosts on it, 0 failed, 0/2 slots taken")
        assert "wave: 1 of 2 open, 50% of the group" in out.text and "failure budget: 0/2 used, 2 left" in out.text
        written = time.monotonic()
        swap(etcd, group, HOSTS[:2])
        finish(etcd, group, HOSTS[:2])
        out.wait_for("2/6 hosts on it, 0 failed, 0/2 slots taken", 15)
        print(f"watch frame after an etcd write: {time.monotonic() - written:.2f} s")
        frames = out.text.count("--- ")
        time.sleep(2 * 2.5)  # nothing changes: the clock tick must not print frames without a terminal
        assert out.text.count("--- ") == frames
        fail(etcd, group, HOSTS[1], HOSTILE)
        out.wait_for(f"{HOSTS[1]} on v1.5 at ", 15)
        assert HOSTILE in out.text  # rich did not eat the brackets
        assert stop(proc, signal.SIGINT) == 0
        assert "Traceback" not in err.text and "interrupted" not in err.text, err.text
    finally:
        cleanup(proc)


def test_watch_on_a_terminal_redraws_and_says_when_etcd_is_away(etcd_cluster: EtcdCluster, group: str) -> None:
    """A cluster of its own, to take away: the view says so, keeps trying, and comes back."""
    with EtcdCluster(1) as own:
        client = Etcd(own.endpoints, timeout=1.0, attempts=2, deadline=5.0)
        start_rollout(client, group)
        master, slave = pty.openpty()
        proc = osctl(own.endpoints, group, "status", "--watch", stdin=slave, stdout=slave, stderr=slave,
                     start_new_session=True)
        os.close(slave)
        screen = Output(master)
        try:
            screen.wait_for("0/6 hosts on it")
            swap(client, group, HOSTS[:1])
            screen.wait_for("1/2 slots taken", 15)
            assert f"swapping: {HOSTS[0]} (slot 0, to v1.5" in screen.text
            own.stop_member(0)
            screen.wait_for("etcd: etcd cannot", 30)
            assert "trying again; showing what was read at" in screen.text
            own.start_member(0)
            finish(client, group, HOSTS[:1])
            screen.wait_for("1/6 hosts on it", 30)
            assert stop(proc, signal.SIGINT) == 0
            assert "Traceback" not in screen.text and "interrupted" not in screen.text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
            client.close()
