#!/usr/bin/env python3
"""Swap: the downtime of replacing a whole service set, osctl against docker-compose and the engine.

    .venv/bin/python bench/swap.py [--runs 5] [--compose-runs 3] [--services 5 10 30] [--json PATH]

For each size n, two OS versions A = v9.<n>.1 and B = v9.<n>.2 (FROM osctl/os:v1.5, in the
repository ``osctl-bench/swap-os`` of the local registry) hold n busybox services: a one-shot
``network``, ``syslog`` after it, then three chains hanging under ``syslog`` (each service
depends on the one three before it), so the longest chain is about n/3 + 2 containers. The
services are syslogd, crond, httpd (network_mode none, or bridge for every eighth) and a
shell loop, all in the foreground; about half have a health check at the documented default
interval of 5 s (timeout 3 s, retries 3), and an edge is ``service_healthy`` when the parent
has one and the child's index is odd, else ``service_started``; ``syslog`` waits for
``network`` to complete. A and B differ in an environment variable and a command argument of
every service (and in the OS image), so every service is really replaced.

1. Swap downtime. Per size, ``--runs`` swaps (default 5; 3 from 30 services on) alternate
   A -> B (``osctl upgrade --to B``) and B -> A (``osctl downgrade --to A``) between two
   stored versions; osctl's own ``downtime`` (JSON) is the figure: first old service stopped ->
   every new service running and healthy by its own probes. Interleaved with them, in the
   same run:
   * peer: Debian's docker-compose 1.29.2 (file format 2.4, project ``benchswap<n>``) does
     ``down`` of the running set's file, then ``up -d`` of the other's: same images (by
     digest, checked to be the same image ids osctl runs), commands, environment, volumes,
     network modes, init, health checks and ``depends_on`` conditions. Its downtime is from
     the engine's first ``kill`` event of an old container (the moment the outage starts, as
     for osctl; compose's own start-up before that is left out, in its favour) to the last of
     the new set's readiness events: ``start`` for services without a health check,
     ``health_status: healthy`` for those with one, ``die`` with exit code 0 for the one-shot.
     The engine stamps the events (timeNano), so no polling interval blurs them; every
     container's state is then confirmed with ``inspect``. ``up -d`` returns before the last
     services are healthy, so this waits past it. ``--compose-runs`` of them (default 3; 2
     from 30 services on): each waits out two (30 services: four) health intervals of 5 s,
     its spread is small, and equal counts would take the bench past five minutes.
   * floor: the plain engine. The longest dependency chain of set B is created as fresh
     stopped containers (same config, own names ``benchswap<n>-floor-*``), then started one
     after the other through the API: start, the one-shot waited for (exit 0), each daemon
     confirmed running by inspect, then the next. The floor is that chain's time; it leaves
     out stopping the old set, any health probe and the set's other services. Beside it: the
     chain plus one probe exec per ``service_healthy`` edge (and the leaf's own probe), and,
     once per size, the whole of set B started by the plain engine in dependency order (each
     as soon as what it depends on runs; no probes) and then stopped all at once: what
     starting and stopping n containers costs on this machine, which the chain leaves out.
   Goals: osctl at most a quarter of compose's downtime, and at most 1.5 x the floor; a miss
   is explained in a note from the engine's events (where osctl's downtime went).
2. Upgrade end to end: osctl's ``seconds`` (the whole transaction, from its JSON; the process
   wall clock beside it) and compose's ``down`` + ``up -d`` + waiting until healthy, from the
   moment ``down`` is launched.

Ctrl-C or a failure still removes everything the bench made: the compose projects (``down
-v``), the osctl hosts (``service down``, ``prune --keep 0``, then what remains by label:
containers, named volumes, the ``osctl-hold/<host>/...`` tags), the floor containers, the
registry repository, the images built and the roots under .run/.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from common import (HOST_LABEL, REGISTRY, REPO, SERVICE_LABEL, VERSION_LABEL, Bench, BenchHost, EventLog, Figure,
                    Goal, Parser, Row, Section, busybox_services, clean_bench, figure, main_alone, os_manifest,
                    parallel, run, run_alone, say)
from tests.support import registry_tools

BENCH_REPO = "osctl-bench/swap-os"
SOURCE = f"{REGISTRY}/osctl/os:v1.5"
COMPOSE = ["/usr/bin/docker-compose"]  # Debian's docker-compose 1.29.2 (the Python v1)
PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
FLOOR_LABEL = "io.osctl-bench.swap-floor"
HEALTH = {"interval": "5s", "timeout": "3s", "retries": 3, "start_period": "0s"}  # docs/image-format.md defaults
DEFAULT_RUNS = 5
DEFAULT_RUNS_LARGE = 3  # from 30 services on
DEFAULT_COMPOSE_RUNS = 3  # each compose swap waits out 2 health intervals (~12 s) with 5 or 10 services
DEFAULT_COMPOSE_RUNS_LARGE = 2  # and 4 (~25 s) with 30
READY_TIMEOUT = 120.0


# -- the versions ------------------------------------------------------------------------------
def services_for(count: int, flavour: str) -> dict[str, dict[str, Any]]:
    """The manifest's services for ``count`` services; ``flavour`` "a" or "b" changes every one.
    Three chains hang under syslog."""
    return busybox_services(count, HEALTH, 3, flavour)


def manifest_text(version: str, services: dict[str, dict[str, Any]]) -> str:
    return os_manifest(version, services, "bench/swap.py")


def longest_chain(services: dict[str, dict[str, Any]]) -> list[str]:
    """The longest dependency path, root first (ties: the one built first)."""
    best: dict[str, list[str]] = {}

    def path(name: str) -> list[str]:
        if name not in best:
            deps = list(services[name].get("depends_on", {}))
            best[name] = (max((path(d) for d in deps), key=len) if deps else []) + [name]
        return best[name]

    return max((path(n) for n in services), key=len)


def health_waits(services: dict[str, dict[str, Any]]) -> int:
    """Engine health intervals compose must wait out, at least, along its worst path: one per
    ``service_healthy`` edge, plus the last service's own health check."""
    memo: dict[str, int] = {}

    def cost(name: str) -> int:
        if name not in memo:
            deps = services[name].get("depends_on", {})
            memo[name] = max((cost(d) + (rule["condition"] == "service_healthy") for d, rule in deps.items()),
                             default=0)
        return memo[name]

    return max(cost(n) + ("healthcheck" in services[n]) for n in services)


def compose_file(services: dict[str, dict[str, Any]], image: str, started_only: bool = False) -> str:
    """The same service set for docker-compose 1.29 (file format 2.4: conditions, init).

    ``started_only``: every dependency waits only for ``service_started`` (for setting up,
    below); the containers are the same, only compose's config-hash label differs."""
    out: dict[str, Any] = {}
    for name, spec in services.items():
        svc: dict[str, Any] = {"image": image, "command": spec["command"], "environment": spec["environment"],
                               "network_mode": spec["network_mode"], "init": True, "restart": spec["restart"]}
        if spec.get("volumes"):
            svc["volumes"] = spec["volumes"]
        if spec.get("depends_on"):
            svc["depends_on"] = list(spec["depends_on"]) if started_only else spec["depends_on"]
        if spec.get("healthcheck"):
            svc["healthcheck"] = spec["healthcheck"]
        out[name] = svc
    return json.dumps({"version": "2.4", "services": out, "volumes": {"logs": {}}}, indent=2) + "\n"


# -- engine events ------------------------------------------------------------------------------
@dataclass
class Event:
    at: int  # the engine's timeNano
    action: str
    id: str
    attrs: dict[str, str]


class Events(EventLog):
    """Every container event of the engine, kept in order (filtered by the callers)."""

    def __init__(self, client: docker.DockerClient) -> None:
        super().__init__(client, {})
        self.seen: list[Event]

    def keep(self, raw: dict[str, Any]) -> Event:
        actor = raw.get("Actor") or {}
        return Event(int(raw.get("timeNano") or 0), str(raw.get("Action") or raw.get("status") or ""),
                     str(actor.get("ID") or raw.get("id") or ""), actor.get("Attributes") or {})

    def since(self, mark: int) -> list[Event]:
        with self._cond:
            return list(self.seen[mark:])

    def wait_for(self, check: Callable[[list[Event]], Any], mark: int, timeout: float, what: str) -> Any:
        """Wait until ``check(events since mark)`` returns something other than None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = check(self.seen[mark:])
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(min(left, 0.5))


def ready_at(events: list[Event], wanted: dict[str, tuple[str, bool, bool]]) -> int | None:
    """The engine time the last of ``wanted`` (id -> (service, oneshot, has health)) was ready, or
    None while one is not: a one-shot exited 0, a checked service healthy, the others started."""
    done: dict[str, int] = {}
    for event in events:
        kind = wanted.get(event.id)
        if kind is None or event.id in done:
            continue
        _name, oneshot, health = kind
        if oneshot:
            if event.action == "die":
                if event.attrs.get("exitCode") != "0":
                    raise SystemExit(f"{_name} exited {event.attrs.get('exitCode')}")
                done[event.id] = event.at
        elif health:
            if event.action == "health_status: healthy":
                done[event.id] = event.at
        elif event.action == "start":
            done[event.id] = event.at
    return max(done.values()) if len(done) == len(wanted) else None


def first(events: list[Event], action: str, ids: set[str]) -> int | None:
    return min((e.at for e in events if e.action == action and e.id in ids), default=None)


def last(events: list[Event], action: str, ids: set[str]) -> int | None:
    return max((e.at for e in events if e.action == action and e.id in ids), default=None)


# -- one size -------------------------------------------------------------------------------------
@dataclass
class Size:
    count: int
    repo: str
    runs: int
    compose_runs: int
    versions: tuple[str, str] = ("", "")
    services: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # version -> services
    image_ids: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # version -> repo@sha256:...
    downtime: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    phases: list[tuple[float, float, float, float]] = field(default_factory=list)
    c_downtime: list[float] = field(default_factory=list)
    c_total: list[float] = field(default_factory=list)
    c_up_returned: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    floor_probes: list[float] = field(default_factory=list)
    whole_start: list[float] = field(default_factory=list)
    whole_stop: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.count
        self.versions = (f"v9.{n}.1", f"v9.{n}.2")
        self.host_id = f"bench-swap-{n}"
        self.host = BenchHost(self.host_id, REPO / ".run" / f"bench-swap-{n}", self.repo)
        self.project = f"benchswap{n}"
        self.project_dir = REPO / ".run" / f"bench-swap-compose-{n}"
        for version, flavour in zip(self.versions, "ab"):
            self.services[version] = services_for(n, flavour)
        self.running = ""  # the version osctl runs
        self.c_running = ""  # the version the compose project runs
        self.chain = longest_chain(self.services[self.versions[1]])

    # -- building and setting up
    def build(self, client: docker.DockerClient) -> None:
        for version in self.versions:
            ref = registry_tools.os_version_variant(client, SOURCE, self.repo, version,
                                                    manifest_text(version, self.services[version]))
            image = client.images.get(ref)
            self.image_ids[version] = str(image.id)
            digests = [d for d in image.attrs.get("RepoDigests") or [] if d.startswith(self.repo + "@")]
            if not digests:
                raise SystemExit(f"{ref}: pushed, but the engine names no digest in {self.repo}")
            self.digests[version] = digests[0]

    def osctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.osctl(*args, check=check)

    def compose(self, version: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*COMPOSE, "-p", self.project, "-f", str(self.project_dir / f"{version}.yml"), *args],
                   cwd=self.project_dir, check=check)

    def prepare(self) -> None:
        """The roots, both compose files, and both versions stored by osctl (no swap yet)."""
        self.host.fresh()
        shutil.rmtree(self.project_dir, ignore_errors=True)
        self.project_dir.mkdir(parents=True)
        for version in self.versions:
            (self.project_dir / f"{version}.yml").write_text(
                compose_file(self.services[version], self.digests[version]))
        a = self.versions[0]
        (self.project_dir / f"{a}.setup.yml").write_text(
            compose_file(self.services[a], self.digests[a], started_only=True))
        for version in self.versions:
            self.osctl("pull", version, "--quiet")

    def set_up(self, client: docker.DockerClient) -> None:
        """osctl installs A while compose brings A up. Compose does so from A's file with every
        condition relaxed to ``service_started``: the same containers, up in seconds instead of
        after the health intervals (which only the measured swaps need to wait out; ``down``
        takes its order from the file it is given, the real one). ``up --no-start`` cannot be
        used: 1.29 then waits forever for the one-shot it did not start to complete."""
        a = self.versions[0]
        parallel([lambda: self.compose(f"{a}.setup", "up", "-d", "--quiet-pull"),
                  lambda: self.osctl("upgrade", "--to", a, "--yes", "--json")])
        self.running = self.c_running = a
        self.check_same_images(client)

    def check_same_images(self, client: docker.DockerClient) -> None:
        """Compose runs the very images osctl runs (by id); when both run the same version, each
        service's container is configured alike (command, environment, health check, network
        mode, init, mount targets)."""
        found: dict[str, dict[str, Any]] = {}
        for label, key, version, who in (
                (f"{HOST_LABEL}={self.host_id}", SERVICE_LABEL, self.running, "osctl"),
                (f"{PROJECT_LABEL}={self.project}", COMPOSE_SERVICE_LABEL, self.c_running, "compose")):
            containers = client.api.containers(all=True, filters={"label": [label]})
            images = {c["ImageID"] for c in containers}
            if images != {self.image_ids[version]}:
                raise SystemExit(f"{who} runs {sorted(images)} for {version}, not {self.image_ids[version]}")
            found[who] = {}
            for c in containers:
                attrs = client.api.inspect_container(c["Id"])
                config, host = attrs["Config"], attrs["HostConfig"]
                found[who][config["Labels"][key]] = {
                    "cmd": config["Cmd"], "env": sorted(config["Env"] or []), "health": config.get("Healthcheck"),
                    "network": host["NetworkMode"], "init": host.get("Init"),
                    "mounts": sorted(m["Destination"] for m in attrs["Mounts"])}
        if self.running == self.c_running and found["osctl"] != found["compose"]:
            differ = sorted(n for n in set(found["osctl"]) | set(found["compose"])
                            if found["osctl"].get(n) != found["compose"].get(n))
            name = differ[0]
            raise SystemExit(f"osctl's and compose's {name} differ: {found['osctl'].get(name)} against "
                             f"{found['compose'].get(name)}")

    # -- one osctl swap
    def osctl_swap(self, client: docker.DockerClient, events: Events) -> None:
        old, new = self.running, self.other(self.running)
        verb = "upgrade" if new == self.versions[1] else "downgrade"
        old_ids = {c["Id"] for c in client.api.containers(all=True, filters={"label": [
            f"{HOST_LABEL}={self.host_id}", f"{VERSION_LABEL}={old}"]})}
        mark = events.mark()
        t0 = time.perf_counter()
        proc = self.osctl(verb, "--to", new, "--yes", "--json")
        self.wall.append(time.perf_counter() - t0)
        result = json.loads(proc.stdout)
        if result.get("result") != "committed" or result.get("downtime") is None:
            raise SystemExit(f"osctl {verb} --to {new}: {result}")
        self.running = new
        self.downtime.append(float(result["downtime"]))
        self.seconds.append(float(result["seconds"]))
        # Where the downtime goes, from the engine's events: prepare's last create -> first old
        # kill (journal, manifests, listing the old set), first kill -> last old stop (the old set
        # stops level by level), -> last new start (the new set starts, gated on probes), and the
        # rest of osctl's figure (the last probes and the health gate).
        seen = events.since(mark)
        new_ids = {e.id for e in seen if e.action == "create" and e.attrs.get(HOST_LABEL) == self.host_id
                   and e.attrs.get(VERSION_LABEL) == new}
        created, killed = last(seen, "create", new_ids), first(seen, "kill", old_ids)
        stopped, started = last(seen, "stop", old_ids), last(seen, "start", new_ids)
        if None not in (created, killed, stopped, started):
            assert created and killed and stopped and started
            stopping, starting = (stopped - killed) / 1e9, (started - stopped) / 1e9
            self.phases.append(((killed - created) / 1e9, stopping, starting,
                                self.downtime[-1] - stopping - starting))

    # -- one compose swap
    def compose_swap(self, client: docker.DockerClient, events: Events) -> None:
        old, new = self.c_running, self.other(self.c_running)
        old_ids = {c["Id"] for c in client.api.containers(all=True, filters={"label": [
            f"{PROJECT_LABEL}={self.project}"]})}
        mark = events.mark()
        t0 = time.time_ns()
        self.compose(old, "down")
        self.c_running = ""
        self.compose(new, "up", "-d")
        up_returned = time.time_ns()
        self.c_running = new
        ready = self.wait_compose_ready(client, events, mark, old_ids)
        killed = first(events.since(mark), "kill", old_ids)
        if killed is None:
            raise SystemExit(f"compose down of {self.project}: no kill event seen")
        self.c_downtime.append((ready - killed) / 1e9)
        self.c_total.append((ready - t0) / 1e9)
        self.c_up_returned.append((up_returned - t0) / 1e9)

    def wait_compose_ready(self, client: docker.DockerClient, events: Events, mark: int, old_ids: set[str]) -> int:
        services = self.services[self.c_running]
        found = client.api.containers(all=True, filters={"label": [f"{PROJECT_LABEL}={self.project}"]})
        wanted = {}
        for c in found:
            name = c["Labels"].get(COMPOSE_SERVICE_LABEL, "?")
            if c["Id"] in old_ids or name not in services:
                raise SystemExit(f"{self.project}: unexpected container {c['Names'][0]}")
            wanted[c["Id"]] = (name, bool(services[name].get("oneshot")), "healthcheck" in services[name])
        if sorted(n for n, _o, _h in wanted.values()) != sorted(services):
            raise SystemExit(f"{self.project}: containers for {sorted(n for n, _o, _h in wanted.values())}, "
                             f"expected {sorted(services)}")
        at = events.wait_for(lambda seen: ready_at(seen, wanted), mark, READY_TIMEOUT,
                             f"{self.project} ({self.c_running}) to be running and healthy")
        for cid, (name, oneshot, health) in wanted.items():  # the engine's state agrees
            state = client.api.inspect_container(cid)["State"]
            ok = (state["Status"] == "exited" and state["ExitCode"] == 0) if oneshot else (
                state["Running"] and (not health or (state.get("Health") or {}).get("Status") == "healthy"))
            if not ok:
                raise SystemExit(f"{self.project}: {name} is {state['Status']} "
                                 f"({(state.get('Health') or {}).get('Status')}) after its ready event")
        return int(at)

    # -- the plain engine
    def _create(self, client: docker.DockerClient, names: list[str]) -> dict[str, str]:
        """Fresh stopped containers of set B for ``names``, configured as compose and osctl do."""
        version = self.versions[1]
        services = self.services[version]
        volume = f"{self.project}-floor-logs"
        client.api.create_volume(volume, labels={FLOOR_LABEL: self.project})

        def create(name: str) -> str:
            spec = services[name]
            hc = spec.get("healthcheck")
            healthcheck = None if hc is None else {
                "test": hc["test"], "interval": 5_000_000_000, "timeout": 3_000_000_000, "retries": 3}
            host_config = client.api.create_host_config(
                binds={volume: {"bind": v.split(":", 1)[1], "mode": "rw"} for v in spec.get("volumes", [])},
                network_mode=spec["network_mode"], init=True)
            return str(client.api.create_container(
                self.image_ids[version], command=spec["command"], environment=spec["environment"],
                labels={FLOOR_LABEL: self.project}, name=f"{self.project}-floor-{name}",
                host_config=host_config, healthcheck=healthcheck, detach=True)["Id"])

        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(zip(names, pool.map(create, names)))

    def _remove(self, client: docker.DockerClient, ids: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda cid: client.api.remove_container(cid, force=True), ids))
        for volume in client.api.volumes(filters={"label": [f"{FLOOR_LABEL}={self.project}"]}).get("Volumes") or []:
            client.api.remove_volume(volume["Name"], force=True)

    def _start(self, client: docker.DockerClient, name: str, cid: str) -> None:
        """Start one container and return once it runs (a one-shot: once it exited 0)."""
        client.api.start(cid)
        if self.services[self.versions[1]][name].get("oneshot"):
            code = client.api.wait(cid, timeout=60)["StatusCode"]
            if code != 0:
                raise SystemExit(f"floor: {name} exited {code}")
        else:
            while not client.api.inspect_container(cid)["State"]["Running"]:
                time.sleep(0.002)

    def floor_run(self, client: docker.DockerClient) -> None:
        """The target set's longest chain, as fresh stopped containers, started one by one."""
        services = self.services[self.versions[1]]
        ids: dict[str, str] = {}
        try:
            ids = self._create(client, self.chain)
            chain, probes = 0.0, 0.0
            for index, name in enumerate(self.chain):
                t0 = time.perf_counter()
                self._start(client, name, ids[name])
                chain += time.perf_counter() - t0
                child = self.chain[index + 1] if index + 1 < len(self.chain) else None
                gate = (services[child]["depends_on"][name]["condition"] == "service_healthy" if child
                        else "healthcheck" in services[name])
                if gate:  # one passing probe, as an exec, the way osctl runs it (not in the floor)
                    test = services[name]["healthcheck"]["test"]
                    argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
                    t0 = time.perf_counter()
                    while time.perf_counter() - t0 < 30:
                        exec_id = client.api.exec_create(ids[name], argv, stdout=False, stderr=False)["Id"]
                        client.api.exec_start(exec_id, detach=True)
                        while (info := client.api.exec_inspect(exec_id))["Running"]:
                            time.sleep(0.002)
                        if info["ExitCode"] == 0:
                            break
                    else:
                        raise SystemExit(f"floor: the probe of {name} did not pass within 30 s")
                    probes += time.perf_counter() - t0
            self.floor.append(chain)
            self.floor_probes.append(chain + probes)
        finally:
            self._remove(client, list(ids.values()))

    def whole_set_run(self, client: docker.DockerClient) -> None:
        """Reference, not a floor: all of set B started in dependency order as the plain engine
        can (each as soon as what it depends on runs, or for the one-shot, exited 0; no probes),
        then all stopped at once. Shows what starting n containers costs on this machine."""
        services = self.services[self.versions[1]]
        ids: dict[str, str] = {}
        try:
            ids = self._create(client, list(services))
            done = {name: threading.Event() for name in services}

            def bring(name: str) -> None:
                try:
                    for dep in services[name].get("depends_on", {}):
                        done[dep].wait(60)
                    self._start(client, name, ids[name])
                finally:
                    done[name].set()  # a failure is raised by map below; nothing waits on it

            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(services)) as pool:
                list(pool.map(bring, services))
            self.whole_start.append(time.perf_counter() - t0)
            running = [ids[n] for n in services if not services[n].get("oneshot")]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(running)) as pool:
                list(pool.map(lambda cid: client.api.stop(cid, timeout=10), running))
            self.whole_stop.append(time.perf_counter() - t0)
        finally:
            self._remove(client, list(ids.values()))

    def other(self, version: str) -> str:
        return self.versions[1] if version == self.versions[0] else self.versions[0]

    # -- clean-up
    def tear_down(self, client: docker.DockerClient) -> list[str]:
        """Remove all of this size; returns what needed more than the tools' own commands."""
        problems = []
        if self.project_dir.exists():
            for version in self.versions:
                if (self.project_dir / f"{version}.yml").exists():
                    proc = self.compose(version, "down", "-v", "--remove-orphans", check=False)
                    if proc.returncode != 0:
                        problems.append(f"compose down {self.project}: {proc.stderr.strip()[-200:]}")
                    break
        problems += self.host.tear_down(client)
        for label, what in ((f"{PROJECT_LABEL}={self.project}", "compose"), (f"{FLOOR_LABEL}={self.project}", "floor")):
            for container in client.api.containers(all=True, filters={"label": [label]}):
                if what != "floor":
                    problems.append(f"container {container['Names'][0]} left by {what}; removing it")
                client.api.remove_container(container["Id"], force=True)
            for volume in client.api.volumes(filters={"label": [label]}).get("Volumes") or []:
                client.api.remove_volume(volume["Name"], force=True)
        shutil.rmtree(self.project_dir, ignore_errors=True)
        return problems

    def tear_down_alone(self) -> list[str]:
        """``tear_down`` on a client of its own (for a thread of its own)."""
        client = docker.from_env()
        try:
            return self.tear_down(client)
        finally:
            client.close()


# -- the figures ----------------------------------------------------------------------------------
def ratio(name: str, num: list[float], den: list[float], unit: str, scale: float, goal: float | None) -> Figure:
    """The ratio of the medians; the spread is over every pair of runs (their counts may differ)."""
    pairs = [scale * a / b for a in num for b in den]
    return Figure(name, unit, scale * statistics.median(num) / statistics.median(den), min(pairs), max(pairs),
                  len(pairs), goal)


def size_figures(s: Size) -> tuple[list[Figure], list[Figure], list[str], list[Row]]:
    n = s.count
    chain = len(s.chain)
    osctl_med, compose_med, floor_med = (statistics.median(x) for x in (s.downtime, s.c_downtime, s.floor))
    goal = min(compose_med / 4, 1.5 * floor_med)  # both goals: the figure meets the stricter one
    swap = [
        figure(f"osctl swap downtime, {n} services", s.downtime, goal=goal),
        figure(f"peer: compose down + up -d, {n} services", s.c_downtime, peer="docker-compose"),
        figure(f"floor: engine starts, chain of {chain}", s.floor, peer="docker"),
        ratio(f"  osctl / compose downtime ({n})", s.downtime, s.c_downtime, "%", 100.0, 25.0),
        ratio(f"  osctl / floor ({n})", s.downtime, s.floor, "%", 100.0, 150.0),
        figure(f"  floor + one probe per healthy gate ({n})", s.floor_probes, peer="docker"),
        figure(f"  engine: all {n} started in order, no probes", s.whole_start, peer="docker"),
        figure(f"  engine: all {n} stopped at once", s.whole_stop, peer="docker"),
    ]
    e2e = [
        figure(f"osctl upgrade/downgrade seconds, {n} services", s.seconds),
        figure(f"  osctl process wall clock ({n})", s.wall),
        figure(f"peer: compose down+up -d+healthy, {n} services", s.c_total, peer="docker-compose"),
        figure(f"  compose up -d returned ({n})", s.c_up_returned, peer="docker-compose"),
    ]
    rows = [Row(f"swap downtime, {n} services", swap[0], peer=swap[1], floor=swap[2],
                goals=[Goal("<= 1/4 compose", compose_med / 4), Goal("<= 1.5x floor", 1.5 * floor_med)]),
            Row(f"upgrade, stored versions, {n} services", e2e[0], peer=e2e[2])]
    missed = []
    if osctl_med > compose_med / 4:
        missed.append(f"a quarter of compose ({compose_med / 4:.2f} s)")
    if osctl_med > 1.5 * floor_med:
        missed.append(f"1.5 x the floor ({1.5 * floor_med:.2f} s)")
    waits = health_waits(s.services[s.versions[1]])
    notes = [f"  {n} services, longest chain {chain} ({' > '.join(s.chain)}); compose waits out at least {waits} "
             f"health intervals of 5 s: osctl {osctl_med:.2f} s, compose {compose_med:.2f} s, floor {floor_med:.2f} s"
             + (f"; MISSED: {' and '.join(missed)}" if missed else "; both goals met")]
    if s.phases:
        pre, stop, start, rest = (statistics.median(p[i] for p in s.phases) for i in range(4))
        notes.append(f"    osctl's downtime, medians from engine events: the old set stopping level by level "
                     f"{stop:.2f} s, the new set starting in dependency order behind its probes {start:.2f} s, the "
                     f"rest {rest:.2f} s (listing the old set before its first stop, the last probes, the health "
                     f"gate); before it, prepare's last create -> first stop {pre:.2f} s")
        if missed:
            parts = sorted([(stop, f"stopping the old set, {levels(s)} levels one after the other ({stop:.2f} s; "
                                   f"the engine stops all {n} at once in {statistics.median(s.whole_stop):.2f} s, "
                                   f"and the floor has no stop at all)"),
                            (start, f"starting the new set ({start:.2f} s; the engine alone starts all {n} in "
                                    f"order in {statistics.median(s.whole_start):.2f} s, the chain alone in "
                                    f"{floor_med:.2f} s: on 2 cores the other {n - chain} starts compete with "
                                    f"the chain's)"),
                            (rest, f"the rest ({rest:.2f} s)")], reverse=True)
            notes.append("    what dominates: " + "; then ".join(text for _v, text in parts))
    if s.whole_start and s.whole_stop:
        whole = statistics.median(s.whole_stop) + statistics.median(s.whole_start)
        notes.append(f"    the plain engine doing the whole swap's container work (all {n} stopped at once, then all "
                     f"started in dependency order, no probes): {whole:.2f} s; osctl's downtime is "
                     f"{100 * osctl_med / whole:.0f} % of that")
    return swap, e2e, notes, rows


def levels(s: Size) -> int:
    """Dependency levels of a set: osctl stops one level after the other."""
    services = s.services[s.versions[1]]
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((level(d) for d in services[name].get("depends_on", {})), default=-1)
        return depth[name]

    return 1 + max(level(name) for name in services)


class SwapBench(Bench):
    """Per size: osctl swaps, compose swaps and engine floors, interleaved; one size at a time."""

    name = "swap"
    title = "swap downtime and whole upgrades between stored versions, beside docker-compose and the engine"

    def __init__(self, counts: list[int], runs: int | None = None, compose_runs: int | None = None) -> None:
        self.repo = f"{REGISTRY}/{BENCH_REPO}"
        self.sizes = [Size(n, self.repo, runs or (DEFAULT_RUNS if n < 30 else DEFAULT_RUNS_LARGE),
                           compose_runs or (DEFAULT_COMPOSE_RUNS if n < 30 else DEFAULT_COMPOSE_RUNS_LARGE))
                      for n in counts]
        self.client: docker.DockerClient | None = None
        self.events: Events | None = None
        self.problems: list[str] = []

    def prepare(self) -> None:
        if not Path(COMPOSE[0]).exists():
            raise SystemExit(f"{COMPOSE[0]} is missing: apt-get install docker-compose (scripts/setup installs it)")
        self.client = client = docker.from_env()
        self.events = Events(client)
        client.images.pull(SOURCE)
        say(f"swap: building {', '.join('/'.join(s.versions) for s in self.sizes)} in {self.repo} ...")
        for s in self.sizes:
            s.build(client)
        say("swap: osctl pull of both versions, every host at once ...")
        parallel([s.prepare for s in self.sizes])
        first = self.sizes[0]
        say(f"swap: {first.host_id}: install {first.versions[0]}; compose {first.project} brings it up too ...")
        first.set_up(client)

    def measure(self) -> Section:
        assert self.client is not None and self.events is not None
        client, events = self.client, self.events
        swap: list[Figure] = []
        e2e: list[Figure] = []
        notes = ["notes (floor: the longest chain of fresh containers started one after the other, each confirmed "
                 "running; no stop, no probe. Ratios: of the medians, spread over all pairs of runs):"]
        rows: list[Row] = []
        for index, s in enumerate(self.sizes):
            say(f"swap: {s.host_id}: {s.compose_runs} compose swaps, {s.runs} osctl swaps and engine floors "
                f"(chain of {len(s.chain)}), interleaved; the whole set on the engine once ...")
            for run_index in range(max(s.runs, s.compose_runs)):
                if run_index < s.compose_runs:
                    s.compose_swap(client, events)
                if run_index < s.runs:
                    s.osctl_swap(client, events)
                    s.floor_run(client)
            s.whole_set_run(client)
            s.check_same_images(client)
            a, b, c, d = size_figures(s)
            swap += a
            e2e += b
            notes += c
            rows += d
            # This size goes while the next one is set up (neither is measured); the next is
            # then measured alone.
            following = self.sizes[index + 1] if index + 1 < len(self.sizes) else None
            say(f"swap: {s.host_id}: tear down" + (f"; {following.host_id}: install {following.versions[0]}, "
                                                   f"compose {following.project} up ..." if following else ""))
            calls: list[Callable[[], Any]] = [lambda s=s: s.tear_down_alone()]
            if following is not None:
                calls.append(lambda f=following: f.set_up(client))
            self.problems += parallel(calls)[0]
        return Section(self.title, rows, [
            ("osctl swap downtime: upgrade/downgrade between stored versions, compose and the engine floor "
             "alongside", swap),
            ("upgrade end to end: osctl's transaction against compose down + up -d + healthy", e2e)], notes)

    def clean(self) -> list[str]:
        problems, self.problems = self.problems, []
        if self.events is not None:
            self.events.close()
        return problems + clean_bench(self.client or docker.from_env(), self.sizes, BENCH_REPO,
                                      [i for s in self.sizes for i in s.image_ids.values()])


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None,
                        help=f"osctl swaps (and engine floors) per size, alternating A->B and B->A (default "
                             f"{DEFAULT_RUNS}; {DEFAULT_RUNS_LARGE} from 30 services on)")
    parser.add_argument("--compose-runs", type=int, default=None,
                        help=f"compose swaps per size, interleaved with osctl's (default {DEFAULT_COMPOSE_RUNS}; "
                             f"{DEFAULT_COMPOSE_RUNS_LARGE} from 30 services on): each waits out the engine's "
                             "5 s health intervals")
    parser.add_argument("--services", type=int, nargs="+", default=[5, 10, 30], help="service counts")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if any(n < 3 for n in args.services) or len(set(args.services)) != len(args.services) \
            or min(args.runs or 1, args.compose_runs or 1) < 1:
        parser.error("--services needs distinct counts of at least 3, --runs and --compose-runs at least 1")
    run_alone(SwapBench(args.services, args.runs, args.compose_runs), args.json_path)


if __name__ == "__main__":
    main_alone(main)
