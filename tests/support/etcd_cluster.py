"""A real etcd cluster on loopback ports, for tests and benchmarks (never used by osctl itself).

Fleet coordination must be tested against what it will meet: a multi-member Raft cluster whose
members can die, so the tests run Debian's ``etcd-server`` (``/usr/bin/etcd``, 3.4), not a fake.
Each member is its own session leader (``setsid``: a Ctrl-C aimed at pytest does not reach it
first), logs to its own file and keeps its data in a temporary folder (on ``/dev/shm`` when
there is one: etcd fsyncs every write, and tmpfs makes that free). Only 127.0.0.1 is used.

    with EtcdCluster(3) as cluster:      # started and healthy, or an error naming the log
        cluster.endpoints                # ["http://127.0.0.1:PORT", ...] for osctl's --etcd
        cluster.stop_member(0)           # SIGKILL: a crash, not a polite shutdown
        cluster.start_member(0)          # same data folder, rejoins and catches up
    # every process killed, every folder removed

``close`` also runs at interpreter exit, so an aborted session does not leave members behind.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ETCD = "/usr/bin/etcd"
HOST = "127.0.0.1"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """``size`` members on free loopback ports; ``start`` waits until every member is healthy.

    ``heartbeat_ms``/``election_ms`` are etcd's defaults: lower values elect faster but make a
    loaded test machine flap between leaders. They also set etcd's minimum lease TTL
    (1.5 election timeouts, rounded up to whole seconds: 2 s here).
    """

    def __init__(self, size: int = 3, *, binary: str = ETCD, heartbeat_ms: int = 100,
                 election_ms: int = 1000, base_dir: str | None = None) -> None:
        if not Path(binary).is_file():
            raise RuntimeError(f"{binary} is missing: install Debian's etcd-server (scripts/setup does)")
        self.binary = binary
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        parent = base_dir or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
        self.dir = Path(tempfile.mkdtemp(prefix="osctl-etcd-", dir=parent))
        self.token = f"osctltest-{uuid.uuid4().hex[:12]}"
        ports = _free_ports(2 * size)
        self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1], self.dir / f"m{i}", self.dir / f"m{i}.log")
                        for i in range(size)]
        self._closed = False
        atexit.register(self.close)

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every member (running or not), as osctl takes them."""
        return [m.client_url for m in self.members]

    def endpoint(self, i: int) -> str:
        return self.members[i].client_url

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for i in range(len(self.members)):
            self._spawn(i)
        self.wait_healthy(timeout)
        return self

    def stop_member(self, i: int) -> None:
        """Kill member ``i`` (SIGKILL to its process group) and wait until it is gone."""
        member = self.members[i]
        if member.process is not None:
            _kill(member.process)
            member.process = None

    def start_member(self, i: int, timeout: float = 30.0) -> None:
        """Start member ``i`` again on its data folder and wait until it answers as healthy."""
        if not self.members[i].running:
            self._spawn(i)
        self._wait(lambda: _healthy(self.members[i].client_url), timeout, f"member {i} to rejoin")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every running member answers ``/health`` (which needs a leader, i.e. quorum)."""
        self._wait(lambda: all(_healthy(m.client_url) for m in self.members if m.running), timeout,
                   "the cluster to become healthy")

    def leader(self) -> int | None:
        """The index of the member that leads now (None without one): stopping it forces an election."""
        ids: dict[str, int] = {}
        leader = None
        for i, member in enumerate(self.members):
            if member.running:
                status = _post(member.client_url, "/v3/maintenance/status", {})
                if status:
                    ids[status["header"]["member_id"]] = i
                    leader = status.get("leader") or leader
        return ids.get(leader) if leader else None

    def ensure_all_running(self, timeout: float = 30.0) -> None:
        """Restart members a test stopped, so the next test starts from a whole cluster."""
        for i, member in enumerate(self.members):
            if not member.running:
                self._spawn(i)
        self.wait_healthy(timeout)

    def close(self) -> None:
        """Kill every member and remove the data folders and logs; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for i in range(len(self.members)):
            self.stop_member(i)
        shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def log_tail(self, i: int, lines: int = 5) -> str:
        try:
            return "\n".join(self.members[i].log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- inside ----------------------------------------------------------------------------
    def _spawn(self, i: int) -> None:
        member = self.members[i]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            self.binary, "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            "--logger", "zap", "--log-level", "warn",
        ]
        with open(member.log_path, "ab") as log:
            member.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True)

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dead = [i for i, m in enumerate(self.members) if m.process is not None and m.process.poll() is not None]
            if dead:
                raise RuntimeError(f"etcd member {dead[0]} exited while waiting for {what}: "
                                   f"{self.log_tail(dead[0])}")
            if check():
                return
            if time.monotonic() > deadline:
                logs = " | ".join(self.log_tail(i, 2) for i in range(len(self.members)))
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}; logs in {self.dir}: {logs}")
            time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        with _NO_PROXY.open(f"{url}/health", timeout=1.0) as resp:
            return json.loads(resp.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def _post(url: str, path: str, body: dict[str, object]) -> dict[str, Any] | None:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST")
    try:
        with _NO_PROXY.open(request, timeout=2.0) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is etcd alone
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; held open together so that they differ from each other."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()
