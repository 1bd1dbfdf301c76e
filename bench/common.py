"""Shared pieces of the benchmarks: timing, summarising, the one table, hosts, child processes.

Every figure is a median over repeated runs with its spread (min..max); a spread wider than
half the median is flagged, because such a figure says more about the machine than the tool.

Each benchmark is a ``Bench``: ``prepare`` (set-up, not measured), ``measure`` (returns a
``Section``: rows for bench/run's one table, and every figure for the script's own report)
and ``clean`` (removes all it made, safe to call at any point, also after a failure or
Ctrl-C). Each script runs its bench alone with ``run_alone``; bench/run runs them all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The project's virtualenv; a git worktree of the repository has none of its own, and then the
# one running this script is used (e.g. /work/main/.venv/bin/python bench/swap.py).
VENV_BIN = Path(os.environ.get("OSCTL_VENV", REPO / ".venv" if (REPO / ".venv").exists() else sys.prefix)) / "bin"
# The osctl measured is this checkout's: the venv's editable install may point at another one
# (a worktree's bench would otherwise measure the main checkout's code). PYTHONPATH reaches every
# osctl command the benches start, since their environments are copies of this one.
if os.pathsep.join(os.environ.get("PYTHONPATH", "").split(os.pathsep)[:1]) != str(REPO):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
OSCTL = [str(VENV_BIN / "osctl")]
DOCKER = ["/usr/bin/docker"]  # Debian's client, matching the engine (not a newer one on PATH)
REGISTRY = os.environ.get("OSCTL_REGISTRY", "127.0.0.1:5000")
HOST_LABEL = "io.osctl.host"
VERSION_LABEL = "io.osctl.version"
SERVICE_LABEL = "io.osctl.service"
HOLD_REPOSITORY = "osctl-hold"  # osctl.domain.naming: osctl-hold/<host>/<version>:<image id>
sys.path.insert(0, str(REPO))
STARTED = time.monotonic()


@dataclass
class Figure:
    name: str
    unit: str
    median: float
    low: float
    high: float
    runs: int
    goal: float | None = None
    peer: str | None = None

    @property
    def wide(self) -> bool:
        return self.median > 0 and (self.high - self.low) > 0.5 * self.median

    @property
    def meets_goal(self) -> bool | None:
        return None if self.goal is None else self.median <= self.goal


def figure(name: str, samples: Sequence[float], unit: str = "s", goal: float | None = None,
           peer: str | None = None) -> Figure:
    return Figure(name, unit, statistics.median(samples), min(samples), max(samples), len(samples), goal, peer)


def time_command(argv: list[str], runs: int, env: dict[str, str] | None = None, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``argv`` per run; every run must succeed."""
    samples = []
    for index in range(warmup + runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
        if index >= warmup:
            samples.append(elapsed)
    return samples


def report(title: str, figures: list[Figure], json_path: str | None = None) -> None:
    print(f"\n{title}")
    print(f"{'figure':48} {'median':>10} {'spread':>19} {'goal':>9}  ")
    for f in figures:
        scale, unit = {"s": (1000.0, "ms"), "B": (1e-3, "KB")}.get(f.unit, (1.0, f.unit))
        goal = f"{f.goal * scale:.0f} {unit}" if f.goal is not None else ""
        verdict = {True: "ok", False: "MISSED", None: ""}[f.meets_goal]
        warn = "  (wide spread)" if f.wide else ""
        print(f"{f.name:48} {f.median * scale:7.1f} {unit:2} {f.low * scale:8.1f}..{f.high * scale:<8.1f} "
              f"{goal:>9}  {verdict}{warn}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")


def warn_wide(figures: list[Figure]) -> None:
    """One line per figure whose spread makes it untrustworthy."""
    for f in figures:
        if f.wide:
            print(f"warning: {f.name.strip()}: spread {f.low:.4g}..{f.high:.4g} {f.unit} is wider than half "
                  f"the median ({f.median:.4g}); the machine was busy, repeat before trusting it")


def say(text: str) -> None:
    """Progress on stdout, stamped with the seconds since the benchmarks started."""
    print(f"[{time.monotonic() - STARTED:4.0f} s] {text}", flush=True)


# -- the one table ------------------------------------------------------------------------------
@dataclass
class Goal:
    """A goal as the table shows it (``text``) and as a limit on osctl's median, in its unit."""

    text: str
    limit: float


@dataclass
class Row:
    """One line of bench/run's table: osctl's figure beside the peer and the floor of the same run."""

    name: str
    osctl: Figure
    peer: Figure | None = None
    floor: Figure | None = None
    goals: list[Goal] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.osctl.median / self.peer.median if self.peer and self.peer.median else None

    @property
    def over_floor(self) -> float | None:
        return self.osctl.median / self.floor.median if self.floor and self.floor.median else None

    @property
    def missed(self) -> list[Goal]:
        return [g for g in self.goals if self.osctl.median > g.limit]

    @property
    def met(self) -> bool | None:
        return None if not self.goals else not self.missed

    def figures(self) -> list[Figure]:
        return [f for f in (self.osctl, self.peer, self.floor) if f is not None]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.osctl.unit, "osctl": asdict(self.osctl),
                "peer": asdict(self.peer) if self.peer else None,
                "floor": asdict(self.floor) if self.floor else None,
                "ratio": self.ratio, "over_floor": self.over_floor,
                "goals": [{**asdict(g), "met": self.osctl.median <= g.limit} for g in self.goals],
                "met": self.met, "wide": [f.name for f in self.figures() if f.wide]}


@dataclass
class Section:
    """What one bench measured: rows for the table, its own tables of figures, and notes."""

    title: str
    rows: list[Row] = field(default_factory=list)
    tables: list[tuple[str, list[Figure]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [f for _title, figures in self.tables for f in figures]


class Bench:
    """One benchmark. ``clean`` must work whatever ``prepare`` or ``measure`` got to."""

    name = ""
    title = ""

    def prepare(self) -> None:
        """Everything not measured that must exist before ``measure`` (images, hosts)."""

    def measure(self) -> Section:
        raise NotImplementedError

    def clean(self) -> list[str]:
        """Remove everything this bench made; returns what needed more than the tools' own commands."""
        return []


def fmt(value: float, unit: str) -> str:
    """A value the way a person reads it: ms or s, %, MB, bytes in B/KB/MB."""
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "B":
        for limit, name, div in ((1e6, "MB", 1e6), (1e3, "KB", 1e3)):
            if abs(value) >= limit:
                return f"{value / div:.1f} {name}"
        return f"{value:.0f} B"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:.1f} {unit}"


def fmt_spread(f: Figure) -> str:
    return "(one run)" if f.runs == 1 else f"{fmt(f.low, f.unit)}..{fmt(f.high, f.unit)}"


# -- processes ------------------------------------------------------------------------------------
_children: set[subprocess.Popen[str]] = set()
_children_lock = threading.Lock()


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to its end. Children are tracked so that Ctrl-C, in whatever thread it
    lands, lets each of them finish its own clean-up first (an osctl rollback, say)."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    with _children_lock:
        _children.add(proc)
    try:
        out, err = proc.communicate()
    except BaseException:
        stop_children()
        raise
    finally:
        with _children_lock:
            _children.discard(proc)
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {(err or out).strip()[-800:]}")
    return result


def stop_children(grace: float = 60.0) -> None:
    """SIGINT to every command still running (once), then wait for them; kill what is left."""
    with _children_lock:
        live = [p for p in _children if p.poll() is None]
    for proc in live:
        try:
            proc.send_signal(signal.SIGINT)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parallel(calls: list[Callable[[], Any]], workers: int | None = None) -> list[Any]:
    """Run the calls in threads and return their results; on any failure or Ctrl-C the running
    commands are stopped first, so that no thread is left waiting on one."""
    pool = ThreadPoolExecutor(max_workers=workers or max(1, len(calls)))
    futures = []
    try:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        stop_children()
        raise
    finally:
        pool.shutdown(wait=True)


def _interrupted(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def interruptible() -> None:
    """Ctrl-C and SIGTERM end a bench through its clean-up, also when it was started in the
    background (where a shell leaves SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)


# -- engine events --------------------------------------------------------------------------------
class EventLog:
    """The engine's container events (``filters``), kept in arrival order as ``keep`` makes them,
    with a condition to wait on; read in a thread of its own until ``close``."""

    def __init__(self, client: Any, filters: dict[str, Any], name: str = "events") -> None:
        self.seen: list[Any] = []
        self._cond = threading.Condition()
        self._stream = client.api.events(decode=True, filters={"type": "container", **filters})
        self._thread = threading.Thread(target=self._pump, daemon=True, name=name)
        self._thread.start()

    def keep(self, raw: dict[str, Any]) -> Any:
        """What is kept of one event (the raw event here)."""
        return raw

    def _pump(self) -> None:
        try:
            for raw in self._stream:
                item = self.keep(raw)
                with self._cond:
                    self.seen.append(item)
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - closed under us
            pass

    def mark(self) -> int:
        with self._cond:
            return len(self.seen)

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception:  # noqa: BLE001
            pass


# -- hosts ----------------------------------------------------------------------------------------
class BenchHost:
    """One osctl host of a bench (id ``bench-...``, its own root under .run/), driven through
    the CLI as a user would, and removed again, whatever state it is in."""

    def __init__(self, host_id: str, root: Path, image: str) -> None:
        self.host_id = host_id
        self.root = root
        self.image = image
        base = {k: v for k, v in os.environ.items() if not k.startswith("OSCTL_")}
        self.env = {**base, "OSCTL_ROOT": str(root), "OSCTL_HOST_ID": host_id, "OSCTL_IMAGE": image}

    def fresh(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)

    def osctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*OSCTL, *args], env=self.env, check=check)

    def osctl_json(self, *args: str) -> Any:
        return json.loads(self.osctl(*args, "--json").stdout)

    def tear_down(self, client: Any) -> list[str]:
        """``service down`` and ``prune``, then what is left by label and name: containers,
        volumes, hold tags (the running and previous versions are protected from prune), root."""
        problems = []
        if self.root.exists():
            for args in (("service", "down"), ("prune", "--keep", "0")):
                proc = self.osctl(*args, check=False)
                if proc.returncode not in (0, 2):
                    problems.append(f"osctl {' '.join(args)} ({self.host_id}): {proc.stderr.strip()[-200:]}")
        problems += remove_host_objects(client, self.host_id)
        shutil.rmtree(self.root, ignore_errors=True)
        return problems


def remove_host_objects(client: Any, host_id: str, quiet: bool = False) -> list[str]:
    """Remove every container and volume labelled with ``host_id`` and its hold tags."""
    problems = []
    label = {"label": [f"{HOST_LABEL}={host_id}"]}
    for container in client.api.containers(all=True, filters=label):
        if not quiet:
            problems.append(f"container {container['Names'][0]} left by osctl; removing it")
        client.api.remove_container(container["Id"], force=True)
    for volume in client.api.volumes(filters=label).get("Volumes") or []:
        client.api.remove_volume(volume["Name"], force=True)
    hold = f"{HOLD_REPOSITORY}/{host_id.lower()}/"
    for image in client.api.images(all=True):
        for tag in image.get("RepoTags") or []:
            if tag.startswith(hold):
                client.api.remove_image(tag, noprune=True)
    return problems


def remove_images(client: Any, refs: list[str]) -> list[str]:
    """Remove images by id or name (force: every name goes); gone already is fine."""
    import docker

    problems = []
    for ref in refs:
        try:
            client.api.remove_image(ref, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            problems.append(f"removing image {ref[:40]}: {exc}")
    return problems


def clean_bench(client: Any, hosts: Sequence[Any], repository: str, images: list[str]) -> list[str]:
    """The end of every bench: each host torn down (``host.tear_down(client)``; one failing
    does not keep the others), its repository deleted from the registry, its images removed."""
    from tests.support import registry_tools

    problems = []
    for host in hosts:
        try:
            problems += host.tear_down(client)
        except Exception as exc:  # noqa: BLE001 - clean what else we can
            problems.append(f"{host.host_id}: {exc}")
    try:
        registry_tools.delete_repository(REGISTRY, repository)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"deleting {repository} from the registry: {exc}")
    return problems + remove_images(client, images)


def busybox_services(count: int, health: dict[str, Any], first_level: int,
                     flavour: str | None = None) -> dict[str, dict[str, Any]]:
    """``count`` services of busybox daemons in dependency chains, as the swap and supervisor
    benches run them: a one-shot ``network``, ``syslog`` after it, ``first_level`` services
    under syslog and each further one under the one three before it. They are web (httpd,
    every eighth on the bridge, nothing published), cron, worker (a shell loop) and log
    (syslogd) in turn; about half have a health check (``health``: interval, timeout, retries,
    start_period), and an edge is ``service_healthy`` when the parent has one and the child's
    index is odd. ``flavour`` "a" or "b" sets BENCH_SET and a log level, and "b" changes an
    argument of every service: a swap between the two replaces all of them."""
    b = flavour == "b"
    level = [] if flavour is None else ["-l", "6" if b else "7"]
    env = {} if flavour is None else {"environment": {"BENCH_SET": flavour}}

    def check(test: list[str]) -> dict[str, Any]:
        return {"healthcheck": {"test": test, **health}}

    services: dict[str, dict[str, Any]] = {
        "network": {"command": ["/usr/lib/osctl/bin/network-check"], **env, "network_mode": "none",
                    "restart": "no", "oneshot": True},
        "syslog": {"command": ["/bin/syslogd", "-n", "-O", "/var/log/messages", "-S", *level], **env,
                   "volumes": ["logs:/var/log"], "network_mode": "none",
                   "depends_on": {"network": {"condition": "service_completed_successfully"}},
                   **check(["CMD", "/bin/pidof", "syslogd"]), "restart": "always"},
    }
    rest: list[str] = []
    for i in range(count - 2):
        parent = "syslog" if i < first_level else rest[i - 3]
        healthy = "healthcheck" in services[parent]
        depends = {parent: {"condition": "service_healthy" if healthy and i % 2 else "service_started"}}
        kind = i % 4
        if kind == 0:
            port = 8100 + i
            name = f"web{i}"
            spec: dict[str, Any] = {
                "command": ["/bin/httpd", "-f", "-p", str(port), "-h", "/srv/www"] + (["-v"] if b else []),
                "network_mode": "bridge" if i % 8 == 0 else "none",
                **check(["CMD-SHELL", f"wget -q -O - http://127.0.0.1:{port}/health | grep -qx ok"]),
            }
        elif kind == 1:
            name = f"cron{i}"
            spec = {"command": ["/bin/crond", "-f", "-l", "7" if b else "8", "-c", "/etc/crontabs"],
                    "volumes": ["logs:/var/log"], "network_mode": "none", **check(["CMD", "/bin/pidof", "crond"])}
        elif kind == 2:
            name = f"worker{i}"
            spec = {"command": ["/bin/sh", "-c", f'trap "exit 0" TERM; while :; do sleep {2 if b else 1} & wait; done'],
                    "network_mode": "none"}
        else:
            name = f"log{i}"
            spec = {"command": ["/bin/syslogd", "-n", "-O", f"/var/log/{name}.log", "-S", *level],
                    "volumes": ["logs:/var/log"], "network_mode": "none"}
        services[name] = {**spec, **env, "depends_on": depends, "restart": "always"}
        rest.append(name)
    return services


def os_manifest(version: str, services: dict[str, dict[str, Any]], script: str) -> str:
    """A release.yaml with these services (one JSON object a line), and v1.5's boot section
    and min_upgrade_from as shipped."""
    source = (REPO / "system-images/versions/v1.5/release.yaml").read_text()
    tail = source[source.index("\nboot:"):]
    lines = [f"# osctl-bench: {len(services)} busybox services for {script}", f"version: {version}", "services:"]
    lines += [f"  {name}: {json.dumps(spec)}" for name, spec in services.items()]
    return "\n".join(lines) + tail


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like osctl's own."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- running one bench alone ----------------------------------------------------------------------
def run_alone(bench: Bench, json_path: str | None = None) -> None:
    """What each script does by itself: prepare, measure, print its own tables and notes,
    and clean up whatever happens (Ctrl-C included)."""
    interruptible()
    try:
        bench.prepare()
        section = bench.measure()
        for title, figures in section.tables:
            report(title, figures)
        for note in section.notes:
            print(note)
        warn_wide(section.figures())
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps([asdict(f) for f in section.figures()], indent=2) + "\n")
    finally:
        stop_children()
        for problem in bench.clean():
            print(f"clean-up: {problem}")
        print(f"(done in {time.monotonic() - STARTED:.0f} s)")


def main_alone(main: Callable[[], None]) -> None:
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (everything the bench made is removed again)")
        raise SystemExit(130) from None
