#!/usr/bin/env python3
"""Fleet simulator: a thousand hosts' real update agents against a real 3-member etcd, one
rollout with --max-concurrent 50, measured from what etcd recorded.

    .venv/bin/python bench/fleetsim.py [--hosts 1000] [--workers 10] [--max-concurrent 50]
        [--swap-seconds 2.5] [--stage-seconds 1-3] [--lease-ttl 30] [--also-lease-ttl 10]
        [--runs 1] [--no-kill-leader] [--failure-rate 0] [--start-spread S] [--json PATH]

Why a simulator: the 50 real hosts of bench/scale are as many as two cores can swap; the mission
is thousands. What limits a fleet at that size is coordination (etcd's load, how fast a freed
slot is taken, what a leader election costs), not one host's swap, so every host here runs the
real ``Agent`` loop, the real etcd adapter and the real rollout record, and only its engine work
is a stand-in of this file's own (``SimHost``: staging sleeps a download time, a swap sleeps the
swap time with +-5 % jitter, then the host runs the target). It is never a mode of
``osctl agent``: nothing in osctl knows it exists.

The hosts run as threads in ``--workers`` processes (this file again, with ``--worker``; ten
by default: a process with hundreds of threads spends its CPU handing the GIL around), each host
with its own root on tmpfs holding its settings file. The workers are niced (their autogroup
too), so that etcd gets the CPU first, as on its own machines; the hosts' agents then run on
what is left of two cores, which is the figures' main caveat on this machine. The rollout is started with
``osctl.operations.fleet.start_rollout``, the code ``osctl fleet rollout --no-check`` runs.
Everything under the group is followed by ONE etcd watch from the revision before the rollout
(``GroupWatch``): it tells when the rollout became active, when every host ran the target with
no slot taken, and afterwards it is replayed as the fleet test replays ``Etcd.history`` (never
more hosts swapping than slots at any revision, nobody swapping without a slot, each host
swapped once): the history read one snapshot per revision would take minutes at this size.

Figures: the staging phase (rollout written -> active, or -> every host staged when the
rollout starts active), the swap phase (-> every host on the target, no slot taken) beside
the ideal ceil(hosts / max-concurrent) x the swap time, the most hosts swapping at once, etcd
requests per host during the rollout by kind (every ``Etcd`` client in the workers is counted,
the agents' lease keepers too), and memory per host (the workers' RSS less an idle worker's).
With the leader kill (on by default) a second rollout SIGKILLs etcd's leader when half of the
hosts run the target; its cost is its total against the run without.

Swap times are short (2.5 s by default) so that the default run stays within about 3 minutes
on two cores: the ideal scales with it, and what is measured is the overhead around it.
"""

from __future__ import annotations

import atexit
import http.client
import json
import math
import os
import queue
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from base64 import b64decode, b64encode
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER_FLAG = "--worker"

from common import (
    Bench,
    Goal,
    Parser,
    Row,
    Section,
    figure,
    fmt,
    main_alone,
    run_alone,
    say,
)

GROUP = "fleetsim"
FIRST = "v1.0"  # what every host runs before the first rollout
RENEWAL = "keep a lease alive"  # the adapter's request kind of a lease renewal
WORKER_NICE = 10


# =================================================================================================
# the worker: hosts as threads, each a real Agent over a timed stand-in of its engine work
# =================================================================================================
class SimHost:
    """A host's engine work as the agent sees it (``osctl.operations.agenthost.HostWork``), timed
    instead of done: a download takes ``stage`` seconds, a swap ``swap`` seconds (+-5 %), and
    ``failure_rate`` of the swaps roll back. Sleeps end early when the worker stops."""

    def __init__(self, rng: random.Random, stop: threading.Event, swap: float, stage: tuple[float, float],
                 failure_rate: float, running: str = FIRST) -> None:
        self.rng, self.stop = rng, stop
        self.swap_seconds, self.stage_seconds, self.failure_rate = swap, stage, failure_rate
        self._running: str | None = running
        self._stored = {running}
        self._failed: set[str] = set()

    def running(self) -> str | None:
        return self._running

    def next_boot(self) -> str | None:
        return None

    def stored(self, version: str) -> bool:
        return version in self._stored

    def stage(self, version: str) -> None:
        self.stop.wait(self.rng.uniform(*self.stage_seconds))
        self._stored.add(version)

    def swap(self, version: str) -> Any:
        from osctl.operations.agenthost import Swapped

        seconds = self.swap_seconds * self.rng.uniform(0.95, 1.05)
        self.stop.wait(seconds)
        came_from = self._running
        if self.rng.random() < self.failure_rate:
            return Swapped("rolled-back", f"{came_from} -> {version}: simulated failure", seconds)
        self._running = version
        return Swapped("committed", f"{came_from} -> {version}: committed in {seconds:.1f} s", seconds)

    def recover(self) -> str | None:
        return None

    def failed_versions(self) -> set[str]:
        return set(self._failed)

    def remember_failed(self, version: str) -> None:
        self._failed.add(version)


def _raise_open_files() -> int:
    """Each host holds a few connections (its agent's, its lease keeper's, a watch): the soft
    limit goes up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _count_clients(etcd_class: Any) -> list[Any]:
    """Every etcd client made in this process from now on, to sum their ``requests``.

    The agent makes its own client and its lease keeper makes another inside its thread, out of
    reach; wrapping the constructor here (in the simulator's process only) reaches both without
    a hook in osctl. Both kinds are counted together: they are what etcd serves per host."""
    made: list[Any] = []
    lock = threading.Lock()
    original = etcd_class.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        with lock:
            made.append(self)

    etcd_class.__init__ = init
    return made


def _snapshot(counter: Counter[str]) -> dict[str, int]:
    """A copy of a counter another thread may be adding a kind to."""
    for _ in range(100):
        try:
            return dict(counter)
        except RuntimeError:  # it grew a key while being copied
            continue
    return {}


def worker() -> None:
    """One process of hosts. Reads its spec as the first line of stdin, answers ``counts`` with
    one JSON line, and stops its hosts on ``stop`` or at the end of stdin (the bench died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench ends us through stdin, after Ctrl-C too
    # A real fleet's hosts do not take etcd's CPU: here hundreds of agent threads would (each
    # waiting for the GIL wakes every 5 ms), and etcd starved of CPU answers late, leases expire
    # by the hundred, and reads wait for ReadIndex. Niced, the workers get what etcd and the bench
    # leave. With autogroups (Linux's default for desktops and many servers) a process's own nice
    # counts only inside its session's group: the group is niced too.
    os.nice(WORKER_NICE)
    try:
        Path("/proc/self/autogroup").write_text(f"{WORKER_NICE}\n")
    except OSError:
        pass  # no autogroups here: the nice above is what counts
    files = _raise_open_files()
    from osctl.adapters.etcd import Etcd
    from osctl.domain.settings import Settings
    from osctl.models import settings as _settings_models  # noqa: F401 - loaded by an idle worker too
    from osctl.operations import agenthost as _agenthost  # noqa: F401
    from osctl.operations.agent import Agent

    clients = _count_clients(Etcd)
    spec = json.loads(sys.stdin.readline())
    stop = threading.Event()
    news: Counter[str] = Counter()
    samples: dict[str, str] = {}
    news_lock = threading.Lock()

    def events(event: Any) -> None:
        what = getattr(event, "what", type(event).__name__)
        with news_lock:
            news[what] += 1
            if what in ("failed", "refused", "lease", "rolled-back") or "unavailable" in str(getattr(event, "detail", "")):
                samples.setdefault(what, str(getattr(event, "detail", ""))[:300])

    agents: list[Any] = []
    threads: list[threading.Thread] = []
    crashed: list[str] = []

    def run(agent: Any, host_id: str) -> None:
        try:
            agent.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported to the bench, which fails the run
            crashed.append(f"{host_id}: {type(exc).__name__}: {exc}"[:400])

    spread = float(spec.get("start_spread", 0.0))
    hosts = spec["hosts"]
    for index, (host_id, root, seed) in enumerate(hosts):
        settings = Settings(env={"OSCTL_ROOT": root, "OSCTL_HOST_ID": host_id})
        host = SimHost(random.Random(seed), stop, spec["swap_seconds"], tuple(spec["stage_seconds"]),
                       spec["failure_rate"], spec["running"])
        agent = Agent(settings, host, lease_ttl=spec["lease_ttl"], events=events, rng=random.Random(seed + 1))
        agents.append(agent)
        thread = threading.Thread(target=run, args=(agent, host_id), name=host_id, daemon=True)
        thread.start()
        threads.append(thread)
        if spread and hosts:
            time.sleep(spread / len(hosts))  # a fleet does not boot in one millisecond either

    def counts() -> dict[str, Any]:
        total: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for client in list(clients):
            total.update(_snapshot(client.requests))
        for agent in agents:  # the clients the agent exposes: its own and its lease keeper's
            for client in (agent.etcd, agent.keeper_etcd):
                if client is not None:
                    own.update(_snapshot(client.requests))
        with news_lock:
            told = {"news": dict(news), "samples": dict(samples)}
        return {"requests": dict(total), "agent_clients": dict(own), "clients": len(clients),
                "alive": sum(t.is_alive() for t in threads), "crashed": crashed[:5], **told}

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    reply({"ready": len(threads), "pid": os.getpid(), "open_files": files})
    for line in sys.stdin:
        command = line.strip()
        if command == "counts":
            reply(counts())
        elif command == "stop":
            break
    stop.set()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    reply({"stopped": sum(not t.is_alive() for t in threads), **counts()})


# =================================================================================================
# the bench's side
# =================================================================================================
@dataclass
class Event:
    """One change under the group, as the watch streamed it (``fleet_sim.replay_events`` reads
    ``revision``, ``kind``, ``key``, ``value``)."""

    revision: int
    kind: str
    key: str
    value: dict[str, Any]


class GroupWatch:
    """Every change under the group from one revision on, by one etcd watch, read as it streams.

    Keeps the events (for the replay), and the group as they leave it: each host's published
    state, the slots held, the rollout record; and the moments (monotonic clock, at arrival) when
    the rollout became active, every host had the target stored, every host was done. A broken
    stream (its member was killed) is opened again at another member from the revision after the
    last one seen, so nothing is lost and nothing is seen twice."""

    STAGED = frozenset({"staged", "waiting-slot", "swapping", "healthy", "rolled-back", "waiting-window"})

    def __init__(self, endpoints: list[str], group: str, since: int, initial: list[Any],
                 first_endpoint: int = 0) -> None:
        from osctl.domain import fleetkeys

        self.fleetkeys, self.group = fleetkeys, group
        self.prefix = fleetkeys.group_prefix(group)
        self.endpoints, self.turn = endpoints, first_endpoint
        self.events: list[Event] = []
        self.cond = threading.Condition()
        self.hosts: dict[str, dict[str, Any]] = {}
        self.slots: dict[str, str] = {}
        self.rollout: dict[str, Any] | None = None
        self.last_revision = since - 1
        self.reconnects = 0
        self.failure: str | None = None
        self.target: str | None = None
        self.size = 0
        self.on_target: set[str] = set()
        self.finished: set[str] = set()  # on the target, or rolled back from it
        self.staged: set[str] = set()
        self.t_active: float | None = None
        self.t_staged: float | None = None
        self.t_done: float | None = None
        self.done_revision: int | None = None
        self.started_as: str | None = None
        for kv in initial:
            self._apply(Event(kv.mod_revision, "put", kv.key, kv.value), time.monotonic())
        self._closed = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._pump, name="group-watch", daemon=True)
        self._thread.start()

    def expect(self, target: str, size: int) -> None:
        """From now on, the moments are about a rollout of ``target`` to ``size`` hosts."""
        with self.cond:
            self.target, self.size = target, size
            self.on_target = {h for h, s in self.hosts.items() if s.get("running") == target}
            self.finished = set(self.on_target)
            self.staged = set(self.on_target)

    # -- reading the stream --------------------------------------------------------------------
    def _pump(self) -> None:
        while not self._closed.is_set():
            endpoint = self.endpoints[self.turn % len(self.endpoints)]
            try:
                self._stream(endpoint)
            except Exception as exc:  # noqa: BLE001 - a broken stream, or http.client torn down by close()
                if self._closed.is_set():
                    return
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = "the stream ended"
            if self._closed.is_set() or self.failure is not None:
                return
            self.reconnects += 1
            self.turn += 1  # the member may be gone: the next one
            if self.reconnects > 50:
                self.failure = f"the watch broke {self.reconnects} times; last: {reason}"
                with self.cond:
                    self.cond.notify_all()
                return
            time.sleep(0.2)

    def _stream(self, endpoint: str) -> None:
        url = urllib.parse.urlsplit(endpoint)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        self._conn = conn
        end = bytearray(self.prefix.encode())
        end[-1] += 1
        body = {"create_request": {"key": b64encode(self.prefix.encode()).decode(),
                                   "range_end": b64encode(bytes(end)).decode(),
                                   "start_revision": str(self.last_revision + 1)}}
        conn.request("POST", "/v3/watch", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise OSError(f"{endpoint} answered {response.status}: {response.read(300)!r}")
        conn.sock.settimeout(None)  # a quiet fleet says nothing for a while; close() ends it
        while not self._closed.is_set():
            line = response.readline()
            if not line:
                return
            if not line.strip():
                continue
            result = json.loads(line).get("result") or {}
            if result.get("compact_revision"):
                self.failure = f"etcd compacted its history past revision {self.last_revision + 1}"
                return
            if result.get("canceled"):
                return
            items = result.get("events") or []
            if items:
                self._take(items, time.monotonic())

    def _take(self, items: list[dict[str, Any]], now: float) -> None:
        with self.cond:
            for item in items:
                kv = item.get("kv") or {}
                revision = int(kv.get("mod_revision") or 0)
                if revision <= self.last_revision and self.events:
                    continue  # seen before the stream broke
                key = b64decode(kv.get("key", "")).decode(errors="replace")
                if item.get("type") == "DELETE":
                    event = Event(revision, "delete", key, {})
                else:
                    event = Event(revision, "put", key, json.loads(b64decode(kv.get("value", "")) or b"{}"))
                self.events.append(event)
                self._apply(event, now)
            if items:
                self.last_revision = max(self.last_revision, max(e.revision for e in self.events[-len(items):]))
            self.cond.notify_all()

    # -- what the events mean ------------------------------------------------------------------
    def _apply(self, event: Event, now: float) -> None:
        host = self.fleetkeys.host_of(self.group, event.key)
        if host is not None:
            if event.kind == "delete":
                self.hosts.pop(host, None)
                for group in (self.on_target, self.finished, self.staged):
                    group.discard(host)
            else:
                self.hosts[host] = state = event.value
                self._host_moved(host, state)
        elif self.fleetkeys.slot_index(self.group, event.key) is not None:
            if event.kind == "delete":
                self.slots.pop(event.key, None)
            else:
                self.slots[event.key] = event.value.get("host_id", "")
        elif event.key == self.fleetkeys.rollout_key(self.group) and event.kind == "put":
            self.rollout = event.value
            if self.target is not None and event.value.get("target") == self.target:
                if self.started_as is None:
                    self.started_as = event.value.get("state")
                if event.value.get("state") == "active" and self.t_active is None:
                    self.t_active = now
        if self.target is None:
            return
        if self.t_staged is None and len(self.staged) >= self.size:
            self.t_staged = now
        if (self.t_done is None and self.t_active is not None and len(self.finished) >= self.size
                and not self.slots):
            self.t_done, self.done_revision = now, event.revision

    def _host_moved(self, host: str, state: dict[str, Any]) -> None:
        if self.target is None:
            return
        on = state.get("running") == self.target
        (self.on_target.add if on else self.on_target.discard)(host)
        failed = state.get("phase") == "rolled-back" and state.get("target") == self.target
        (self.finished.add if on or failed else self.finished.discard)(host)
        if on or (state.get("target") == self.target and state.get("phase") in self.STAGED):
            self.staged.add(host)

    # -- waiting ---------------------------------------------------------------------------------
    def wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check():
                if self.failure is not None:
                    raise SystemExit(f"fleetsim: {self.failure}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"fleetsim: timed out after {timeout:.0f} s waiting for {what}: "
                                     f"{self.describe()}")
                self.cond.wait(min(left, 1.0))

    def describe(self) -> str:
        phases = Counter(s.get("phase") for s in self.hosts.values())
        state = (self.rollout or {}).get("state")
        return (f"{len(self.hosts)} hosts listed, {len(self.on_target)} on {self.target}, rollout {state}, "
                f"{len(self.slots)} slots taken, phases {dict(phases)}, revision {self.last_revision}")

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(2)  # wakes the reader blocked in readline
            except OSError:
                pass
            conn.close()
        self._thread.join(timeout=5)


class Worker:
    """One worker process, spoken to by lines of JSON; its answers are read by a thread of its own
    so that a stuck worker costs a timeout, not the bench."""

    def __init__(self, name: str, spec: dict[str, Any], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, str(HERE / "fleetsim.py"), WORKER_FLAG],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         start_new_session=True)  # a Ctrl-C reaches the bench alone
        self.answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"{name}-answers").start()
        self._send(json.dumps(spec))
        self.last: dict[str, Any] = {}

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.answers.put(json.loads(line))
            except ValueError:
                continue
        self.answers.put(None)

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict[str, Any]:
        try:
            found = self.answers.get(timeout=timeout)
        except queue.Empty:
            found = None
        if found is None:
            tail = self.log.read_text(errors="replace")[-600:] if self.log.exists() else ""
            raise SystemExit(f"fleetsim: worker {self.name} did not answer within {timeout:.0f} s: {tail}")
        self.last = found
        return found

    def ask(self, command: str, timeout: float = 30.0) -> dict[str, Any]:
        self._send(command)
        return self.answer(timeout)

    def rss(self) -> int:
        """Resident bytes now (VmRSS), and the threads, from /proc."""
        return _proc_status(self.proc.pid)[0]

    def ask_to_stop(self) -> None:
        """Tell it to stop its hosts (each agent revokes its lease); ``stop`` waits for it."""
        if self.proc.poll() is None:
            try:
                self._send("stop")
                self.proc.stdin.close()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass

    def stop(self, timeout: float = 45.0) -> dict[str, Any] | None:
        """Stop it (asked first if not yet), then kill what is left after ``timeout``."""
        self.ask_to_stop()
        final = None
        try:
            while (found := self.answers.get(timeout=timeout)) is not None and "stopped" not in found:
                continue
            final = found
        except queue.Empty:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return final


def _proc_status(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _sep, value = line.partition(":")
        fields[name] = value.split()
    return int(fields["VmRSS"][0]) * 1024, int(fields["Threads"][0])


@dataclass
class RunResult:
    """One measured rollout."""

    target: str
    killed: bool
    staging: float
    swap_phase: float
    total: float
    max_swapping: int
    max_slots: int
    without_slot: int
    swaps_not_once: int
    requests: Counter[str]
    agent_requests: Counter[str]
    revisions: int
    reconnects: int
    started_as: str | None
    kill_at: float | None = None
    lease_ttl: int = 10
    memory: float = 0.0  # bytes per host: the workers' RSS less an idle worker's each
    threads: int = 0


class FleetSimBench(Bench):
    name = "fleetsim"
    title = "fleetsim: 1,000 simulated hosts, real agents and a 3-member etcd, one rollout"

    def __init__(self, hosts: int = 1000, workers: int = 10, max_concurrent: int = 50, swap_seconds: float = 2.5,
                 stage_seconds: tuple[float, float] = (1.0, 3.0), lease_ttl: int = 10, runs: int = 1,
                 kill_leader: bool = True, failure_rate: float = 0.0, start_spread: float | None = None,
                 check_interval: str = "10m", other_ttls: tuple[int, ...] = ()) -> None:
        self.n, self.workers_wanted, self.k = hosts, max(1, min(workers, hosts)), max_concurrent
        self.swap_seconds, self.stage_seconds, self.lease_ttl = swap_seconds, stage_seconds, lease_ttl
        self.runs, self.kill_leader, self.failure_rate = runs, kill_leader, failure_rate
        # Starting an agent costs its worker ~45 ms of CPU (settings, a lease, the first state, a
        # watch): a thousand at once would time each other's requests out on two cores.
        self.start_spread = 0.03 * hosts if start_spread is None else start_spread
        self.check_interval, self.other_ttls = check_interval, other_ttls
        self.title = (f"fleetsim: {hosts} simulated hosts (real agents, 3-member etcd), rollout max {max_concurrent}, "
                      f"swap {swap_seconds:g} s")
        self.dir: Path | None = None
        self.cluster: Any = None
        self.hosts: list[list[Any]] = []  # host id, root, seed
        self.workers: list[Worker] = []
        self.fleet_ttl = lease_ttl
        self.starts = 0
        self.used = False  # the running fleet has done a rollout already
        self.running = FIRST  # what the hosts run: the last rollout's target
        self.idle_rss = 0
        self.version = 0

    # -- set-up --------------------------------------------------------------------------------
    def prepare(self) -> None:
        from tests.support.etcd_cluster import EtcdCluster

        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="osctl-fleetsim-", dir=shm))
        atexit.register(shutil.rmtree, self.dir, ignore_errors=True)  # also when a 2nd Ctrl-C cuts clean() short
        _raise_open_files()  # etcd's members inherit it: every host holds connections to them
        say(f"fleetsim: a 3-member etcd on loopback, {self.n} host roots in {self.dir} ...")
        self.cluster = EtcdCluster(3).start()
        endpoints = self.cluster.endpoints
        hosts = []
        for i in range(self.n):
            host_id, root = f"sim-{i:04d}", self.dir / "hosts" / f"sim-{i:04d}"
            config = root / "etc/osctl/config.yaml"
            config.parent.mkdir(parents=True)
            # osctl asks the first endpoint first: a fleet's config lists them in varied orders, as
            # etcd's own clients spread over them, so that one member does not serve every host.
            mine = endpoints[i % 3:] + endpoints[:i % 3]
            config.write_text(f"update: {{policy: auto, check_interval: {self.check_interval}}}\n"
                              f"fleet: {{etcd: [{', '.join(mine)}], group: {GROUP}}}\n")
            hosts.append([host_id, str(root), 1000 * i])
        self.hosts = hosts
        (self.dir / "operator").mkdir()
        idle = Worker("idle", self._spec([], self.lease_ttl, FIRST), self.dir / "worker-idle.log")
        idle.answer(120)
        self.idle_rss = idle.rss()
        idle.stop()
        say(f"fleetsim: an idle worker holds {fmt(self.idle_rss, 'B')}")
        self.start_fleet(self.lease_ttl)

    def start_fleet(self, lease_ttl: int) -> None:
        """Every host's agent, started afresh: each measured rollout begins from hosts that run the
        previous rollout's target (the record is still there), are listed, and wait on the rollout
        record, as a fleet between rollouts does."""
        assert self.dir is not None
        self.stop_fleet()
        say(f"fleetsim: {self.n} hosts start in {self.workers_wanted} workers over {self.start_spread:g} s, "
            f"lease TTL {lease_ttl} s ...")
        self.fleet_ttl = lease_ttl
        share = math.ceil(self.n / self.workers_wanted)
        self.starts += 1
        for w in range(self.workers_wanted):
            part = self.hosts[w * share:(w + 1) * share]
            if part:
                log = self.dir / f"worker-{self.starts}-{w}.log"
                self.workers.append(Worker(f"w{w}", self._spec(part, lease_ttl, self.running), log))
        for worker in self.workers:
            worker.answer(120 + self.start_spread)
        self._wait_listed(120 + self.start_spread)

    def stop_fleet(self) -> list[str]:
        """Stop every worker: each agent revokes its lease, so its keys go at once."""
        problems = []
        for worker in self.workers:  # all at once: each takes a while when etcd is slow
            worker.ask_to_stop()
        for worker in self.workers:
            final = worker.stop()
            if final is None:
                problems.append(f"worker {worker.name} did not stop by itself; killed")
            elif final.get("crashed"):
                problems.append(f"worker {worker.name}: {final['crashed']}")
        self.workers = []
        return problems

    def _spec(self, hosts: list[list[Any]], lease_ttl: int, running: str) -> dict[str, Any]:
        return {"hosts": hosts, "lease_ttl": lease_ttl, "running": running, "swap_seconds": self.swap_seconds,
                "stage_seconds": list(self.stage_seconds), "failure_rate": self.failure_rate,
                "start_spread": self.start_spread}

    def _etcd(self) -> Any:
        from osctl.adapters.etcd import Etcd

        return Etcd(self.cluster.endpoints)

    def _wait_listed(self, timeout: float) -> None:
        """Every host published its state (it is listed in the group)."""
        from osctl.adapters.etcd import Query
        from osctl.domain import fleetkeys

        deadline = time.monotonic() + timeout
        with self._etcd() as etcd:
            while True:
                _rev, (found,) = etcd.read_many([Query(fleetkeys.hosts_prefix(GROUP), prefix=True, count_only=True)])
                if found.count >= self.n:
                    return
                if time.monotonic() > deadline:
                    raise SystemExit(f"fleetsim: only {found.count} of {self.n} hosts listed after {timeout:.0f} s")
                time.sleep(0.5)

    # -- one rollout -----------------------------------------------------------------------------
    def counts(self) -> tuple[Counter[str], Counter[str]]:
        """Requests sent so far by every client in every worker, and by the agents' own clients."""
        total: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for worker in self.workers:
            found = worker.ask("counts")
            if found.get("crashed"):
                raise SystemExit(f"fleetsim: agents crashed in {worker.name}: {found['crashed']}")
            total.update(found["requests"])
            own.update(found["agent_clients"])
        return total, own

    def rollout(self, kill: bool, lease_ttl: int | None = None) -> RunResult:
        from osctl.adapters.etcd import Query
        from osctl.domain import fleetkeys
        from osctl.domain.settings import Settings
        from osctl.operations.fleet import RolloutRequest, start_rollout
        from tests.support import fleet_sim

        assert self.dir is not None
        lease_ttl = lease_ttl or self.lease_ttl
        if self.used or not self.workers or lease_ttl != self.fleet_ttl:
            # After its swap an agent waits a whole check interval before it reads the rollout
            # again (10 min here): a second rollout to the same agents would measure that wait.
            self.start_fleet(lease_ttl)
        self.used = True
        self.version += 1
        target = f"v1.{self.version}"
        cluster = self.cluster
        leader = cluster.leader()
        follower = next(i for i in range(3) if i != leader)  # the bench's watch outlives a killed leader
        with self._etcd() as etcd:
            since, (initial,) = etcd.read_many([Query(fleetkeys.group_prefix(GROUP), prefix=True)])
            watch = GroupWatch(cluster.endpoints, GROUP, since + 1, initial.kvs, first_endpoint=follower)
            try:
                watch.expect(target, self.n)
                before, own_before = self.counts()
                settings = Settings(env={"OSCTL_ROOT": str(self.dir / "operator"), "OSCTL_HOST_ID": "operator",
                                         "OSCTL_ETCD": ",".join(cluster.endpoints), "OSCTL_GROUP": GROUP})
                budget = self.n if self.failure_rate else 1
                say(f"fleetsim: rollout to {target}, max {self.k} at once" + (", the leader killed halfway" if kill else ""))
                t0 = time.monotonic()
                start_rollout(settings, etcd, RolloutRequest(target, max_concurrent=self.k, failure_budget=budget),
                              check_registry=False)
                limit = 120 + 4 * math.ceil(self.n / self.k) * self.swap_seconds + 2 * self.stage_seconds[1]
                kill_at = None
                killed_member = None
                if kill:
                    watch.wait(lambda: len(watch.on_target) >= self.n // 2, limit, f"half the hosts on {target}")
                    killed_member = cluster.leader()
                    if killed_member is None:
                        raise SystemExit("fleetsim: etcd has no leader to kill")
                    kill_at = time.monotonic() - t0
                    cluster.stop_member(killed_member)
                    say(f"fleetsim: SIGKILLed etcd member {killed_member} (the leader) at {kill_at:.1f} s, "
                        f"{len(watch.on_target)} hosts on {target}")
                watch.wait(lambda: watch.t_done is not None, limit, f"every host on {target} with no slot taken")
                after, own_after = self.counts()
            finally:
                watch.close()
            if killed_member is not None:
                cluster.start_member(killed_member)
                cluster.wait_healthy()
        found = [_proc_status(w.proc.pid) for w in self.workers]
        rss, threads = sum(r for r, _t in found), sum(t for _r, t in found)
        assert watch.t_done is not None and watch.done_revision is not None
        self.running = target
        events = [e for e in watch.events if e.revision <= watch.done_revision]
        record = fleet_sim.replay_events(GROUP, events)
        swapped_not_once = sum(1 for h in watch.hosts if record.swaps.get(h, 0) != 1)
        boundary = watch.t_active if watch.started_as != "active" else watch.t_staged
        boundary = boundary if boundary is not None else watch.t_active
        assert boundary is not None
        result = RunResult(
            target=target, killed=kill, staging=boundary - t0, swap_phase=watch.t_done - boundary,
            total=watch.t_done - t0, max_swapping=record.max_swapping, max_slots=record.max_slots,
            without_slot=len(record.swapping_without_slot), swaps_not_once=swapped_not_once,
            requests=after - before, agent_requests=own_after - own_before,
            revisions=watch.done_revision - since, reconnects=watch.reconnects, started_as=watch.started_as,
            kill_at=kill_at, lease_ttl=lease_ttl, memory=(rss - len(found) * self.idle_rss) / self.n,
            threads=threads)
        say(f"fleetsim: {target}: staging {result.staging:.1f} s, swap phase {result.swap_phase:.1f} s, total "
            f"{result.total:.1f} s; at most {record.max_swapping} swapping; "
            f"{sum(result.requests.values()) / self.n:.1f} requests/host; {result.revisions} revisions")
        return result

    # -- measuring -------------------------------------------------------------------------------
    def measure(self) -> Section:
        plain = [self.rollout(kill=False) for _ in range(self.runs)]
        killed = [self.rollout(kill=True)] if self.kill_leader else []
        others = [self.rollout(kill=False, lease_ttl=ttl) for ttl in self.other_ttls]
        return self.section(plain, killed, others)

    def section(self, plain: list[RunResult], killed: list[RunResult], others: list[RunResult]) -> Section:
        n, k = self.n, self.k
        ideal_seconds = math.ceil(n / k) * self.swap_seconds
        ideal = figure(f"  ideal: ceil({n}/{k}) x {self.swap_seconds:g} s swap", [ideal_seconds])
        f_swap = figure(f"{n} hosts, max {k}: swap phase", [r.swap_phase for r in plain])
        f_stage = figure("  staging phase (start -> active)", [r.staging for r in plain])
        f_total = figure(f"{n} hosts, max {k}: rollout total", [r.total for r in plain], peer="no kill")
        f_ratio = figure("  swap phase / ideal", [r.swap_phase / ideal_seconds for r in plain], unit="x", goal=1.2)
        f_most = figure("  hosts swapping at once, most (etcd's record)", [r.max_swapping for r in plain + killed + others],
                        unit="hosts", goal=k)
        f_bad = figure("  swapping without a slot, or not once (revisions)",
                       [r.without_slot + r.swaps_not_once for r in plain + killed + others], unit="", goal=0)
        per_host = [sum(r.requests.values()) / n for r in plain]
        f_req = figure("  etcd requests per host per rollout", per_host, unit="req", goal=29.999)
        f_renew = figure("    of which lease renewals", [r.requests[RENEWAL] / n for r in plain], unit="req")
        kinds = sorted({kind for r in plain for kind in r.requests}, key=lambda kd: -sum(r.requests[kd] for r in plain))
        f_kinds = [figure(f"    {kind}", [r.requests[kind] / n for r in plain], unit="req") for kind in kinds
                   if kind != RENEWAL]
        f_memory = figure("  memory per simulated host (RSS)", [r.memory for r in plain + killed + others], unit="B")
        figures = [f_stage, f_swap, ideal, f_ratio, f_total, f_most, f_bad, f_req, f_renew, *f_kinds, f_memory]
        rows = [Row(f"{n} hosts, max {k}: swap phase", f_swap, floor=ideal,
                    goals=[Goal("<= 1.2 x ideal", 1.2 * ideal_seconds)]),
                Row("  staging phase (start -> active)", f_stage),
                Row(f"  rollout total (ideal {fmt(ideal_seconds, 's')} + staging)", f_total),
                Row("  hosts swapping at once, most", f_most, goals=[Goal(f"<= {k}", k)]),
                Row("  etcd requests per host per rollout", f_req, goals=[Goal("< 30", 29.999)]),
                Row("    of which lease renewals", f_renew),
                Row("  memory per simulated host", f_memory)]
        notes = [f"  fleetsim: {n} hosts in {self.workers_wanted} processes ({plain[0].threads} threads), lease TTL "
                 f"{self.lease_ttl} s, staging {self.stage_seconds[0]:g}-{self.stage_seconds[1]:g} s, swap "
                 f"{self.swap_seconds:g} s +-5 %" + (f", {self.failure_rate:.0%} of swaps fail" if self.failure_rate else "")
                 + f"; the rollout record started {plain[0].started_as}"]
        if killed:
            kill = killed[0]
            f_kill = figure(f"{n} hosts, max {k}: total, leader killed", [kill.total])
            cost = 100 * (kill.total / f_total.median - 1)
            f_cost = figure("  cost of the leader kill", [cost], unit="%", goal=10)
            f_kill_swap = figure("  swap phase, leader killed", [kill.swap_phase])
            figures += [f_kill, f_kill_swap, f_cost,
                        figure("  requests per host, leader killed", [sum(kill.requests.values()) / n], unit="req")]
            rows.append(Row("  rollout total, leader killed mid-swap", f_kill, peer=f_total,
                            goals=[Goal("< +10 % of no kill", 1.1 * f_total.median)]))
            notes.append(f"  fleetsim: the leader was SIGKILLed {kill.kill_at:.1f} s into the rollout (half the hosts "
                         f"done); total {kill.total:.1f} s against {f_total.median:.1f} s, {cost:+.1f} %; swap phase "
                         f"{kill.swap_phase:.1f} s; the bench's watch reconnected {kill.reconnects} time(s)")
        for other in others:
            ttl = other.lease_ttl
            figures += [figure(f"  rollout total, lease TTL {ttl} s", [other.total]),
                        figure(f"  requests per host, lease TTL {ttl} s", [sum(other.requests.values()) / n],
                               unit="req", goal=29.999),
                        figure(f"    of which lease renewals, TTL {ttl} s", [other.requests[RENEWAL] / n], unit="req")]
            notes.append(f"  fleetsim: with a lease TTL of {ttl} s: total {other.total:.1f} s, "
                         f"{sum(other.requests.values()) / n:.1f} requests per host, "
                         f"{other.requests[RENEWAL] / n:.1f} of them lease renewals")
        top = plain[0].requests.most_common(4)
        notes.append("  fleetsim: requests per host by kind: " + ", ".join(
            f"{kind} {count / n:.1f}" for kind, count in top) + f"; {plain[0].revisions} etcd revisions per rollout")
        bad = [r for r in plain + killed + others if r.without_slot or r.swaps_not_once or r.max_swapping > k]
        for r in bad:
            notes.append(f"  fleetsim: {r.target}: {r.without_slot} revision(s) with a host swapping without a slot, "
                         f"{r.swaps_not_once} host(s) not swapped exactly once, at most {r.max_swapping} swapping")
        return Section(self.title, rows, [(self.title, figures)], notes)

    # -- clean-up --------------------------------------------------------------------------------
    def clean(self) -> list[str]:
        problems = self.stop_fleet()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return problems


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=10, help="processes the hosts are spread over")
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--swap-seconds", type=float, default=2.5, help="one host's swap, +-5 %%")
    parser.add_argument("--stage-seconds", default="1-3", help="one host's download, uniform in MIN-MAX")
    parser.add_argument("--lease-ttl", type=int, default=30, help="as osctl agent's default")
    parser.add_argument("--also-lease-ttl", type=int, nargs="*", default=[], metavar="TTL",
                        help="one more rollout for each of these lease TTLs (e.g. 30): the renewals' share")
    parser.add_argument("--runs", type=int, default=1, help="rollouts without a leader kill")
    parser.add_argument("--no-kill-leader", action="store_true", help="skip the rollout with the leader killed")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of swaps that roll back")
    parser.add_argument("--start-spread", type=float, help="seconds over which the hosts start (default 0.03 x hosts)")
    parser.add_argument("--check-interval", default="10m",
                        help="the agents' check interval (a waiting agent watches etcd; this is its fallback)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    try:
        low, high = (float(x) for x in args.stage_seconds.split("-"))
    except ValueError:
        parser.error("--stage-seconds is MIN-MAX, e.g. 1-3")
    if args.hosts < 1 or args.max_concurrent < 1 or args.runs < 1 or args.lease_ttl < 2 or low > high:
        parser.error("--hosts, --max-concurrent, --runs at least 1; --lease-ttl at least 2")
    run_alone(FleetSimBench(args.hosts, args.workers, args.max_concurrent, args.swap_seconds, (low, high),
                            args.lease_ttl, args.runs, not args.no_kill_leader, args.failure_rate, args.start_spread,
                            args.check_interval, tuple(args.also_lease_ttl)),
              args.json_path)


if __name__ == "__main__":
    if WORKER_FLAG in sys.argv:
        worker()
    else:
        main_alone(main)
