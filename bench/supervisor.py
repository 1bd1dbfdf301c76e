#!/usr/bin/env python3
"""Supervisor: restart latency after ``docker kill``, and the idle cost of ``osctl supervise``.

    .venv/bin/python bench/supervisor.py [--runs 20] [--idle 60] [--services 10 30] [--concurrent-idle]
                                         [--json PATH]

1. Restart latency: a supervised host runs a version of 10 services; one long-running service
   container is killed (rotating over the services, ~1 s apart, ``--stable-after 0.5`` so that
   every kill is a fresh first failure, restarted at once). The figure is the time from the
   kill call returning to the engine's ``start`` event of that container (the moment it runs
   again; confirmed by ``inspect``: Running, and StartedAt changed). Goal: under 1 s. Split
   into the engine's ``die`` event -> the supervisor's "restarting in" line (stamped as it
   arrives on its stderr) -> running. Peer: the plain engine's
   ``start`` of the same killed container, with the supervisor stopped (the floor).
2. Idle cost: CPU (% of one core, /proc/<pid>/stat utime+stime over ``--idle`` seconds, as
   5-second slices) and VmRSS (peak and end) of ``osctl supervise`` with its defaults, for a
   host of 10 and one of 30 services, one after the other (``--concurrent-idle``: at the same
   time, each its own host and supervisor, as bench/run does to stay within its 10 minutes);
   dockerd's CPU over the same window is the peer (with --concurrent-idle, one window for
   both). Goals with 10 services: under 1 % of a core and under 60 MB.

The versions (v9.<n>.0, FROM osctl/os:v1.5: busybox daemons in dependency chains, about half
with health checks every ``--health-interval`` seconds, default 5 as in docs/image-format.md)
are built into the repository ``osctl-bench/supervisor-os`` of the local registry; the hosts
are bench-sup-<n> under .run/bench-supervisor-<n>. Everything is removed again at the end,
also after a failure or Ctrl-C. The split of a restart is stamped from the supervisor's stderr
as it arrives; when the periodic reconcile starts the container before the ``die`` event is
handled, that run's split goes negative (its total stays right).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from common import (HOST_LABEL, OSCTL, REGISTRY, REPO, SERVICE_LABEL, Bench, BenchHost, EventLog, Figure, Goal, Parser,
                    Row, Section, busybox_services, clean_bench, figure, main_alone, os_manifest, parallel, run_alone,
                    say)
from tests.support import registry_tools

BENCH_REPO = "osctl-bench/supervisor-os"
SOURCE = f"{REGISTRY}/osctl/os:v1.5"
SLICE = 5.0  # seconds per CPU sample: the CLI's default reconcile interval, one reconcile each
TICKS = os.sysconf("SC_CLK_TCK")


# -- the versions ------------------------------------------------------------------------------
def manifest_text(version: str, count: int, health_interval: float) -> tuple[str, list[str]]:
    """A release.yaml with ``count`` services: a one-shot ``network``, then ``syslog``, then
    chains of busybox daemons (four under syslog); and the names of the long-running services."""
    health = {"interval": f"{health_interval:g}s", "timeout": "2s", "retries": 3, "start_period": "0s"}
    services = busybox_services(count, health, 4)
    names = [name for name, spec in services.items() if not spec.get("oneshot")]
    return os_manifest(version, services, "bench/supervisor.py"), names


# -- engine events and processes -------------------------------------------------------------
class Events(EventLog):
    """The engine's container events of one host, stamped on arrival (time.time_ns())."""

    def __init__(self, client: docker.DockerClient, host_id: str) -> None:
        super().__init__(client, {"label": [f"{HOST_LABEL}={host_id}"]}, name=f"events-{host_id}")
        self.seen: list[tuple[int, dict[str, Any]]]

    def keep(self, raw: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return time.time_ns(), raw

    def wait(self, since: int, service: str, action: str, timeout: float = 15.0) -> tuple[int, dict[str, Any]]:
        """The first ``action`` event of ``service`` from index ``since`` on: (arrival ns, event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrived, event in self.seen[since:]:
                    attrs = (event.get("Actor") or {}).get("Attributes") or {}
                    if event.get("Action") == action and attrs.get(SERVICE_LABEL) == service:
                        return arrived, event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no {action!r} event for {service} within {timeout:.0f}s")
                self._cond.wait(left)

    def actions(self, since: int, until: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _arrived, event in self.seen[since:until]:
            action = str(event.get("Action", "?")).split(":", 1)[0]
            counts[action] = counts.get(action, 0) + 1
        return counts


class Supervise:
    """``osctl supervise`` as a child process; its stderr lines are stamped on arrival."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[tuple[int, str]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([*OSCTL, "supervise", *args], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_line(lambda line: line.startswith("supervising host"), 20.0)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append((time.time_ns(), line.rstrip("\n")))
                self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_line(self, match: Callable[[str], bool], timeout: float, since: int = 0) -> int | None:
        """Arrival (ns) of the first matching line from index ``since`` on, None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrived, line in self.lines[since:]:
                    if match(line):
                        return arrived
                if self.proc.poll() is not None:
                    raise SystemExit("osctl supervise ended early:\n" + self.output())
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def output(self) -> str:
        return "\n".join(line for _t, line in self.lines)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def dockerd_pid() -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    return int(entry.name)
            except OSError:
                continue
    raise SystemExit("no dockerd process found in /proc")


# -- one host ---------------------------------------------------------------------------------
class SupervisedHost(BenchHost):
    """A host running one version of ``count`` services, with the supervisors started on it."""

    def __init__(self, count: int, repo: str) -> None:
        super().__init__(f"bench-sup-{count}", REPO / ".run" / f"bench-supervisor-{count}", repo)
        self.count = count
        self.version = f"v9.{count}.0"
        self.text = ""
        self.daemons: list[str] = []
        self.image_id: str | None = None
        self.ref = f"{repo}:{self.version}"
        self.supervisors: list[Supervise] = []

    def build(self, client: docker.DockerClient, health_interval: float) -> None:
        self.text, self.daemons = manifest_text(self.version, self.count, health_interval)
        registry_tools.os_version_variant(client, SOURCE, self.ref.rsplit(":", 1)[0], self.version, self.text)
        self.image_id = client.images.get(self.ref).id

    def up(self) -> None:
        self.fresh()
        self.osctl("pull", self.version, "--quiet")
        self.osctl("service", "up", "--version", self.version, "--json")

    def supervise(self, *args: str) -> Supervise:
        self.supervisors.append(Supervise(self.env, *args))
        return self.supervisors[-1]

    def container_ids(self, client: docker.DockerClient) -> dict[str, str]:
        found = client.api.containers(all=True, filters={"label": [f"{HOST_LABEL}={self.host_id}"]})
        return {c["Labels"].get(SERVICE_LABEL, "?"): c["Id"] for c in found}

    def tear_down(self, client: docker.DockerClient) -> list[str]:
        for sup in self.supervisors:
            sup.terminate()
        return super().tear_down(client)


# -- the measurements ---------------------------------------------------------------------------
def restart_latency(client: docker.DockerClient, host: SupervisedHost, runs: int) -> tuple[list[Figure], Row]:
    ids = host.container_ids(client)
    rotation = [name for name in host.daemons if name in ids]
    events = Events(client, host.host_id)
    sup = host.supervise("--stable-after", "0.5")
    try:
        time.sleep(1.5)  # its first reconcile is done; every service runs
        total, died, decided, started = [], [], [], []
        for run in range(runs):
            name = rotation[run % len(rotation)]
            before = client.api.inspect_container(ids[name])["State"]["StartedAt"]
            mark, line_mark = events.mark(), sup.mark()
            client.api.kill(ids[name])
            t_kill = time.time_ns()
            _arrived, die = events.wait(mark, name, "die")
            _arrived, start = events.wait(mark, name, "start")
            t_die, t_start = int(die["timeNano"]), int(start["timeNano"])
            t_line = sup.wait_line(lambda line, n=name: line.startswith(f"{n}: ") and "restarting in" in line,
                                   5.0, line_mark)
            state = client.api.inspect_container(ids[name])["State"]
            if not state["Running"] or state["StartedAt"] == before:
                raise SystemExit(f"{name}: start event, but inspect says Running={state['Running']} "
                                 f"StartedAt={state['StartedAt']} (before {before})")
            total.append((t_start - t_kill) / 1e9)
            died.append((t_kill - t_die) / 1e9)
            if t_line is not None:
                decided.append((t_line - t_die) / 1e9)
                started.append((t_start - t_line) / 1e9)
            time.sleep(max(0.0, 1.0 - (time.time_ns() - t_start) / 1e9))  # ~1 s up: the backoff resets
        sup.terminate()

        floor, calls = [], []
        for run in range(runs):
            name = rotation[run % len(rotation)]
            mark = events.mark()
            client.api.kill(ids[name])
            events.wait(mark, name, "die")
            mark = events.mark()
            t0 = time.time_ns()
            client.api.start(ids[name])
            calls.append((time.time_ns() - t0) / 1e9)
            _arrived, start = events.wait(mark, name, "start")
            floor.append((int(start["timeNano"]) - t0) / 1e9)
            time.sleep(0.2)
    finally:
        events.close()
    figures = [
        figure(f"restart after docker kill ({host.count} services)", total, goal=1.0),
        figure("  (die event -> kill call returned)", died),
        figure("  die event -> supervisor's restart line", decided) if decided else None,
        figure("  restart line -> running (start event)", started) if started else None,
        figure("peer: docker start of the killed container", floor, peer="docker"),
        figure("peer: docker start call returning", calls, peer="docker"),
    ]
    shown = [f for f in figures if f is not None]
    return shown, Row(f"restart after docker kill, {host.count} services", shown[0], floor=figures[4],
                      goals=[Goal("< 1 s", 1.0)])


def idle_cost(host: SupervisedHost, seconds: float, goals: bool) -> tuple[list[Figure], list[Row], str]:
    """CPU and memory of ``osctl supervise`` left alone with a running set (a client of its
    own: idle windows of several hosts may run at once, in threads)."""
    client = docker.from_env()
    events = Events(client, host.host_id)
    sup = host.supervise()
    try:
        pid, dpid = sup.proc.pid, dockerd_pid()
        time.sleep(3.0)  # imports done, first reconcile done, health checks settled
        length = min(SLICE, seconds)
        mark = events.mark()
        t0 = t_slice = time.monotonic()
        c0 = c_slice = cpu_ticks(pid)
        d0 = d_slice = cpu_ticks(dpid)
        cpu, dcpu, rss = [], [], [rss_mb(pid)]
        while (now := time.monotonic()) < t0 + seconds - 1e-3:
            time.sleep(min(0.25, t0 + seconds - now))
            rss.append(rss_mb(pid))
            now = time.monotonic()
            if now - t_slice >= length - 1e-3:
                c, d = cpu_ticks(pid), cpu_ticks(dpid)
                cpu.append(100.0 * (c - c_slice) / TICKS / (now - t_slice))
                dcpu.append(100.0 * (d - d_slice) / TICKS / (now - t_slice))
                t_slice, c_slice, d_slice = now, c, d
        now = time.monotonic()
        if now - t_slice >= length / 2:  # the last, shorter slice, when it is long enough to tell
            cpu.append(100.0 * (cpu_ticks(pid) - c_slice) / TICKS / (now - t_slice))
            dcpu.append(100.0 * (cpu_ticks(dpid) - d_slice) / TICKS / (now - t_slice))
        elapsed = now - t0
        mean = 100.0 * (cpu_ticks(pid) - c0) / TICKS / elapsed
        dmean = 100.0 * (cpu_ticks(dpid) - d0) / TICKS / elapsed
        seen = events.actions(mark, events.mark())
        if sup.proc.poll() is not None:
            raise SystemExit("osctl supervise ended during the idle window:\n" + sup.output())
    finally:
        sup.terminate()
        events.close()
        client.close()
    n = host.count
    figures = [
        figure(f"osctl supervise CPU, {n} services", cpu, unit="%", goal=1.0 if goals else None),
        figure(f"osctl supervise RSS peak, {n} services", [max(rss)], unit="MB", goal=60.0 if goals else None),
        figure(f"osctl supervise RSS end, {n} services", [rss[-1]], unit="MB"),
        figure(f"peer: dockerd CPU, same window ({n} services)", dcpu, unit="%", peer="dockerd"),
    ]
    kinds = ", ".join(f"{action} {count}" for action, count in sorted(seen.items())) or "none"
    note = (f"  {n} services, {elapsed:.0f} s: supervise {mean:.2f} % of a core on average, dockerd {dmean:.2f} %; "
            f"engine events for the host: {sum(seen.values())} ({kinds})")
    rows = [Row(f"supervise idle CPU (% of a core), {n} services", figures[0], peer=figures[3],
                goals=[Goal("< 1 %", 1.0)] if goals else []),
            Row(f"supervise idle RSS peak, {n} services", figures[1], goals=[Goal("< 60 MB", 60.0)] if goals else [])]
    return figures, rows, note


class SupervisorBench(Bench):
    """Restart latency on the first host; the idle cost of every host, one after the other, or
    all at once (``concurrent``: separate hosts, each its own supervisor; dockerd is shared,
    so its CPU beside each is the same window)."""

    name = "supervisor"
    title = "osctl supervise: restart latency after docker kill, idle cost"

    def __init__(self, counts: list[int], runs: int = 20, idle: float = 60.0, health_interval: float = 5.0,
                 concurrent: bool = False) -> None:
        self.repo = f"{REGISTRY}/{BENCH_REPO}"
        self.hosts = [SupervisedHost(n, self.repo) for n in counts]
        self.runs, self.idle, self.health_interval, self.concurrent = runs, idle, health_interval, concurrent
        self.client: docker.DockerClient | None = None

    def prepare(self) -> None:
        self.client = client = docker.from_env()
        client.images.pull(SOURCE)
        say(f"supervisor: building {', '.join(h.version for h in self.hosts)} "
            f"({', '.join(str(h.count) for h in self.hosts)} services) in {self.repo} ...")
        for host in self.hosts:
            host.build(client, self.health_interval)
        self.hosts[0].up()

    def measure(self) -> Section:
        assert self.client is not None
        first = self.hosts[0]
        say(f"supervisor: {first.host_id}: {self.runs} kills, then {self.runs} plain engine starts ...")
        restart, restart_row = restart_latency(self.client, first, self.runs)
        idle: list[tuple[list[Figure], list[Row], str]] = []
        if self.concurrent:
            for host in self.hosts[1:]:
                host.up()
            say(f"supervisor: {', '.join(h.host_id for h in self.hosts)}: idle {self.idle:g} s, all at once ...")
            idle = parallel([lambda h=h: idle_cost(h, self.idle, goals=h.count == 10) for h in self.hosts])
        else:
            for index, host in enumerate(self.hosts):
                if index:
                    host.up()
                say(f"supervisor: {host.host_id}: idle {self.idle:g} s ...")
                idle.append(idle_cost(host, self.idle, goals=host.count == 10))
                host.osctl("service", "down")  # the next host is measured alone
        notes = [note for _f, _r, note in idle]
        if self.concurrent:
            notes.append("  the idle windows ran at the same time, one host each; dockerd's CPU is the engine's "
                         "for all of them")
        figures = restart + [f for group, _r, _n in idle for f in group]
        rows = [restart_row] + [row for _f, group, _n in idle for row in group]
        return Section(self.title, rows, [(self.title, figures)], notes)

    def clean(self) -> list[str]:
        return clean_bench(self.client or docker.from_env(), self.hosts, BENCH_REPO,
                           [ref for h in self.hosts for ref in (h.ref, h.image_id) if ref])


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="kills (and plain engine starts) to time")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of each idle window")
    parser.add_argument("--services", type=int, nargs="+", default=[10, 30],
                        help="service counts of the hosts; the first is also the one whose services are killed")
    parser.add_argument("--health-interval", type=float, default=5.0,
                        help="the engine's health-check interval of the services that have one (seconds)")
    parser.add_argument("--concurrent-idle", action="store_true",
                        help="measure the idle windows of all hosts at the same time (each its own host)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if any(n < 3 for n in args.services) or args.runs < 1 or args.idle <= 0:
        parser.error("--services needs counts of at least 3, --runs at least 1, --idle above 0")
    run_alone(SupervisorBench(args.services, args.runs, args.idle, args.health_interval, args.concurrent_idle),
              args.json_path)


if __name__ == "__main__":
    main_alone(main)
