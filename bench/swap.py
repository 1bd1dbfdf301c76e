#!/usr/bin/env python3
"""Swap: the downtime of replacing a whole service set, osctl against docker-compose and the engine.

    .venv/bin/python bench/swap.py [--runs 5] [--compose-runs 3] [--services 5 10 30]
                                   [--sets plain slow start-first] [--json PATH]

Three kinds of set (``--sets``; bench/run's ``swap`` runs the plain sizes, ``swap-real`` the
other two, in a registry repository of its own):

* plain: the sizes of ``--services``, described next;
* slow (issue 16, the shape real services have): 10 services, v8.10.1 and v8.10.2: ``network``
  > ``syslog`` > a 4-deep ``service_started`` chain flush1 > flush2 > flush3 > flush4 of shell
  services that each need 0.9 s to honour SIGTERM (their trap sleeps before it exits), beside
  web (httpd, bridge), cron, log and worker (a slow shell stopped by SIGINT); health checks
  every 1 s; every slow service has ``stop_grace_period: 5s`` (worker ``stop_signal: SIGINT``)
  once the osctl measured knows those keys, and compose is given the same;
* start-first: 10 services, v7.10.1 and v7.10.2: edge > api > cache > queue and metrics declare
  ``update_order: start-first`` (once osctl knows the key; before, they run stop-first, as a
  reference); network > syslog > worker, log, cron are stop-first. For each start-first service
  the engine's events give its downtime: the old container's first kill (or die) to the new one's
  ``health_status: healthy`` (``start`` without a health check), 0 when the new one was ready
  first; beside it, the same with readiness taken from the first probe exec that passed in it.
  Goal 0 s for every one of them.

For every set, every downgrade (B -> A) runs offline: the host's ``OSCTL_IMAGE`` names a
registry at a closed port (as tests/integration/test_transactions.py does); the wall time of the
whole ``osctl downgrade --to A`` command is the figure, goal under 3 s.

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
     chain plus one probe exec per ``service_healthy`` edge (and the leaf's own probe).
   * engine whole swap (every run; the second peer): fresh containers of set A run (not
     measured), set B's are created; then ALL of A's running containers are stopped at once
     (each with its stop signal and grace period), and B is started in dependency order, each
     service as soon as what it depends on runs, completed, or passed one probe exec, until
     every service runs and, with a health check, passed one probe: the plain engine doing the
     whole swap's container work.
   Goals (issue 16, on every set): osctl at most 0.4 x compose's downtime and at most 1.3 x
   the engine's whole swap. A note per set says where osctl's downtime went, from the engine's
   events: the hand-over (start-first services), the stop phase (first kill -> last old exit),
   the start phase per dependency level (each level's last service ready), the probe execs,
   and the rest (osctl's own work before the first kill and after the last ready).
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
import socket
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

from common import (HOST_LABEL, OSCTL, REGISTRY, REPO, SERVICE_LABEL, VERSION_LABEL, Bench, BenchHost, EventLog, Figure,
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
# The sets of the shape real services have (issue 16): 1 s health intervals, slow stops.
HEALTH_FAST = {"interval": "1s", "timeout": "3s", "retries": 3, "start_period": "0s"}
FLUSH = 0.9  # seconds a slow service takes to honour its stop signal (a daemon flushing buffers)
GRACE = "5s"  # their stop_grace_period, where the manifest keys exist (compose gets the same)
KINDS = ("plain", "slow", "start-first")
START_FIRST = ("edge", "api", "cache", "queue", "metrics")  # the start-first half of that set
SET_VERSIONS = {"slow": "v8.10", "start-first": "v7.10"}  # A = <this>.1, B = <this>.2
OFFLINE_GOAL = 3.0  # seconds: the whole ``osctl downgrade --to A`` between stored versions


# -- the versions ------------------------------------------------------------------------------
def services_for(count: int, flavour: str) -> dict[str, dict[str, Any]]:
    """The manifest's services for ``count`` services; ``flavour`` "a" or "b" changes every one.
    Three chains hang under syslog."""
    return busybox_services(count, HEALTH, 3, flavour)


def manifest_keys() -> bool:
    """Whether the osctl measured knows issue 16's service keys (``update_order``,
    ``stop_grace_period``, ``stop_signal``); before it, they are refused as unknown."""
    from osctl.models.manifest import ServiceSpec

    return {"update_order", "stop_grace_period", "stop_signal"} <= set(ServiceSpec.model_fields)


def slow_shell(flavour: str, signal: str = "TERM") -> list[str]:
    """A shell service that needs FLUSH seconds to honour ``signal`` (its trap), ready once it
    has made /tmp/ready; "b" changes its loop."""
    return ["/bin/sh", "-c", f"trap 'sleep {FLUSH}; exit 0' {signal}; touch /tmp/ready; "
                             f"while :; do sleep {2 if flavour == 'b' else 1} & wait; done"]


def _common(flavour: str) -> tuple[dict[str, Any], list[str], Callable[[list[str]], dict[str, Any]]]:
    env = {"environment": {"BENCH_SET": flavour}}
    level = ["-l", "6" if flavour == "b" else "7"]

    def check(test: list[str]) -> dict[str, Any]:
        return {"healthcheck": {"test": test, **HEALTH_FAST}}

    return env, level, check


def _base(flavour: str) -> dict[str, dict[str, Any]]:
    """The one-shot ``network`` and ``syslog`` after it, as in the plain sets, 1 s health interval."""
    env, level, check = _common(flavour)
    return {
        "network": {"command": ["/usr/lib/osctl/bin/network-check"], **env, "network_mode": "none",
                    "restart": "no", "oneshot": True},
        "syslog": {"command": ["/bin/syslogd", "-n", "-O", "/var/log/messages", "-S", *level], **env,
                   "volumes": ["logs:/var/log"], "network_mode": "none",
                   "depends_on": {"network": {"condition": "service_completed_successfully"}},
                   **check(["CMD", "/bin/pidof", "syslogd"]), "restart": "always"},
    }


def _web(flavour: str, port: int, network: str, after: dict[str, Any]) -> dict[str, Any]:
    env, _level, check = _common(flavour)
    return {"command": ["/bin/httpd", "-f", "-p", str(port), "-h", "/srv/www"] + (["-v"] if flavour == "b" else []),
            **env, "network_mode": network, **after,
            **check(["CMD-SHELL", f"wget -q -O - http://127.0.0.1:{port}/health | grep -qx ok"]), "restart": "always"}


def _on(parent: str, condition: str) -> dict[str, Any]:
    return {"depends_on": {parent: {"condition": condition}}}


def slow_services(flavour: str, keys: bool) -> dict[str, dict[str, Any]]:
    """10 services of the shape the issue found: ``network`` > ``syslog`` > a 4-deep
    ``service_started`` chain flush1 > flush2 > flush3 > flush4 of shell services that each take
    FLUSH s to honour SIGTERM (flush1 and flush3 with a health check), beside web (httpd on the
    bridge, after syslog is healthy), cron, log (syslogd) and worker (a slow shell after web is
    healthy, stopped by SIGINT where the keys exist). 1 s health intervals; with ``keys``, every
    slow service has ``stop_grace_period`` GRACE."""
    env, level, check = _common(flavour)
    ready = check(["CMD", "/bin/test", "-e", "/tmp/ready"])
    grace = {"stop_grace_period": GRACE} if keys else {}
    services = _base(flavour)
    parent = "syslog"
    for i in range(1, 5):
        services[f"flush{i}"] = {"command": slow_shell(flavour), **env, "network_mode": "none",
                                 **_on(parent, "service_started"), **(ready if i % 2 else {}), **grace,
                                 "restart": "always"}
        parent = f"flush{i}"
    services["web"] = _web(flavour, 8300, "bridge", _on("syslog", "service_healthy"))
    services["cron"] = {"command": ["/bin/crond", "-f", "-l", "7" if flavour == "b" else "8", "-c", "/etc/crontabs"],
                        **env, "volumes": ["logs:/var/log"], "network_mode": "none", **_on("syslog", "service_started"),
                        **check(["CMD", "/bin/pidof", "crond"]), "restart": "always"}
    services["log"] = {"command": ["/bin/syslogd", "-n", "-O", "/var/log/log.log", "-S", *level], **env,
                       "volumes": ["logs:/var/log"], "network_mode": "none", **_on("syslog", "service_started"),
                       "restart": "always"}
    services["worker"] = {"command": slow_shell(flavour, "INT" if keys else "TERM"), **env, "network_mode": "none",
                          **_on("web", "service_healthy"), **({"stop_signal": "SIGINT"} if keys else {}), **grace,
                          "restart": "always"}
    return services


def start_first_services(flavour: str, keys: bool) -> dict[str, dict[str, Any]]:
    """10 services, half of them start-first (START_FIRST; ``update_order: start-first`` where
    the keys exist): edge (httpd on the bridge) > api (slow shell, after edge is healthy) >
    cache (crond) > queue (slow shell), and metrics (httpd, network none), which depend only on
    each other; stop-first: ``network`` > ``syslog`` > worker (slow shell), log, cron. 1 s
    health intervals; slow services have ``stop_grace_period`` GRACE where the keys exist."""
    env, level, check = _common(flavour)
    ready = check(["CMD", "/bin/test", "-e", "/tmp/ready"])
    grace = {"stop_grace_period": GRACE} if keys else {}
    first = {"update_order": "start-first"} if keys else {}
    services = _base(flavour)
    services["edge"] = {**_web(flavour, 8400, "bridge", {}), **first}
    services["api"] = {"command": slow_shell(flavour), **env, "network_mode": "none", **_on("edge", "service_healthy"),
                       **ready, **grace, **first, "restart": "always"}
    services["cache"] = {"command": ["/bin/crond", "-f", "-l", "7" if flavour == "b" else "8", "-c", "/etc/crontabs"],
                         **env, "network_mode": "none", **_on("api", "service_started"),
                         **check(["CMD", "/bin/pidof", "crond"]), **first, "restart": "always"}
    services["queue"] = {"command": slow_shell(flavour), **env, "network_mode": "none", **_on("cache", "service_started"),
                         **grace, **first, "restart": "always"}
    services["metrics"] = {**_web(flavour, 8401, "none", {}), **first}
    services["worker"] = {"command": slow_shell(flavour), **env, "network_mode": "none",
                          **_on("syslog", "service_started"), **grace, "restart": "always"}
    services["log"] = {"command": ["/bin/syslogd", "-n", "-O", "/var/log/log.log", "-S", *level], **env,
                       "volumes": ["logs:/var/log"], "network_mode": "none", **_on("syslog", "service_started"),
                       "restart": "always"}
    services["cron"] = {"command": ["/bin/crond", "-f", "-l", "7" if flavour == "b" else "8", "-c", "/etc/crontabs"],
                        **env, "volumes": ["logs:/var/log"], "network_mode": "none", **_on("syslog", "service_healthy"),
                        **check(["CMD", "/bin/pidof", "crond"]), "restart": "always"}
    return services


def seconds_of(text: str | None, default: float) -> float:
    """A compose duration ("1s", "1m30s", "500ms") in seconds."""
    if not text:
        return default
    import re

    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|us|h|m|s)", text))


def levels_of(services: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each service's dependency level (0: depends on nothing)."""
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((level(d) for d in services[name].get("depends_on", {})), default=-1)
        return depth[name]

    for name in services:
        level(name)
    return depth


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
        for key in ("stop_grace_period", "stop_signal"):  # compose's own spelling, as osctl's manifest
            if spec.get(key):
                svc[key] = spec[key]
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


def ready_time(events: list[Event], cid: str, spec: dict[str, Any], engine_health: bool) -> int | None:
    """When the container ``cid`` of a service (``spec``) was first ready: a one-shot exited 0;
    one with a health check: the engine's ``health_status: healthy`` (``engine_health``) or the
    first probe exec in it that exited 0 after its start (osctl's or the engine's: either
    proves it healthy then); any other once started."""
    started = first(events, "start", {cid})
    if started is None:
        return None
    if spec.get("oneshot"):
        return min((e.at for e in events if e.id == cid and e.action == "die" and e.attrs.get("exitCode") == "0"),
                   default=None)
    if "healthcheck" not in spec:
        return started
    if engine_health:
        return first(events, "health_status: healthy", {cid})
    return min((e.at for e in events if e.id == cid and e.action == "exec_die" and e.at >= started
                and e.attrs.get("exitCode") == "0"), default=None)


def names_of(events: list[Event], label: str, value: str, key: str, version: str | None = None) -> dict[str, str]:
    """service -> container id of the containers created in ``events`` with ``label=value``
    (the service name in label ``key``; osctl's: of ``version``)."""
    return {e.attrs[key]: e.id for e in events if e.action == "create" and e.attrs.get(label) == value
            and key in e.attrs and (version is None or e.attrs.get(VERSION_LABEL) == version)}


def handover(events: list[Event], old: dict[str, str], new: dict[str, str], services: dict[str, dict[str, Any]],
             names: list[str], engine_health: bool) -> dict[str, float]:
    """Per service in ``names``: seconds without a running, ready container of it, from the
    engine's events: the old container's first kill (or die, if it was never killed) to the new
    container's readiness (``ready_time``); 0 when the new one was ready first."""
    out = {}
    for name in names:
        if name not in old or name not in new:
            raise SystemExit(f"hand-over of {name}: no old or no new container seen ({old.get(name)}, {new.get(name)})")
        gone = first(events, "kill", {old[name]}) or first(events, "die", {old[name]})
        ready = ready_time(events, new[name], services[name], engine_health)
        if gone is None or ready is None:
            raise SystemExit(f"hand-over of {name}: the old one never stopped or the new one never got ready")
        out[name] = max(0.0, (ready - gone) / 1e9)
    return out


@dataclass
class Breakdown:
    """Where one swap's downtime went, from the engine's events (seconds)."""

    handover: float  # first start of a new container -> first kill of an old one (0: none before)
    stop: float  # first kill of an old container -> the last old one's die
    levels: dict[int, float]  # new set's level -> its last service ready, seconds after the stop phase
    members: dict[int, list[str]]  # the services of each level (those not started in a hand-over)
    probes: int  # execs into the new set's containers until the last was ready (osctl's and the engine's)
    failed: int  # of them, exited non-zero
    span: float  # first kill -> last new service ready (osctl's downtime starts after a hand-over)


def breakdown(events: list[Event], old_ids: set[str], new: dict[str, str],
              services: dict[str, dict[str, Any]]) -> Breakdown | None:
    """The phases of one swap (``old_ids``: the old set's containers; ``new``: service -> id)."""
    killed = first(events, "kill", old_ids)
    stopped = last(events, "die", old_ids)
    if killed is None or stopped is None:
        return None
    depth = levels_of(services)
    starts = {n: first(events, "start", {cid}) for n, cid in new.items()}
    early = [at for at in starts.values() if at is not None and at < killed]
    ready = {n: ready_time(events, cid, services[n], engine_health=False) for n, cid in new.items()}
    if None in ready.values():
        return None
    levels: dict[int, float] = {}
    members: dict[int, list[str]] = {}
    for name, at in ready.items():
        if starts[name] is not None and starts[name] >= killed:  # the hand-over's are not in a level
            assert at is not None
            levels[depth[name]] = max(levels.get(depth[name], 0.0), (at - stopped) / 1e9)
            members.setdefault(depth[name], []).append(name)
    end = max(at for at in ready.values() if at is not None)
    ids = set(new.values())
    execs = [e for e in events if e.id in ids and e.action == "exec_die" and e.at <= end]
    return Breakdown(handover=(killed - min(early)) / 1e9 if early else 0.0, stop=(stopped - killed) / 1e9,
                     levels=dict(sorted(levels.items())), members=members, probes=len(execs),
                     failed=sum(e.attrs.get("exitCode") != "0" for e in execs),
                     span=(end - killed) / 1e9)


# -- one size -------------------------------------------------------------------------------------
@dataclass
class Size:
    """One service set measured: a plain size (``kind`` "plain", ``count`` services) or one of
    the sets of issue 16 ("slow", "start-first"; 10 services)."""

    count: int
    repo: str
    runs: int
    compose_runs: int
    kind: str = "plain"
    keys: bool = True  # the osctl measured knows update_order, stop_grace_period, stop_signal
    versions: tuple[str, str] = ("", "")
    services: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # version -> services
    image_ids: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # version -> repo@sha256:...
    downtime: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    offline_wall: list[float] = field(default_factory=list)  # offline downgrades
    offline_split: list[tuple[float, float, float, float]] = field(default_factory=list)  # see osctl_swap
    phases: list[tuple[float, float, float, float]] = field(default_factory=list)
    breakdowns: list[tuple[float, Breakdown]] = field(default_factory=list)  # (osctl's downtime, its phases)
    sf_down: list[float] = field(default_factory=list)  # worst start-first service, engine's health events
    sf_down_probe: list[float] = field(default_factory=list)  # the same, readiness by a passing probe exec
    sf_each: list[dict[str, float]] = field(default_factory=list)
    c_sf_down: list[float] = field(default_factory=list)  # compose's, for the same services
    c_downtime: list[float] = field(default_factory=list)
    c_total: list[float] = field(default_factory=list)
    c_up_returned: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    floor_probes: list[float] = field(default_factory=list)
    engine: list[float] = field(default_factory=list)  # the plain engine's whole swap
    engine_stop: list[float] = field(default_factory=list)
    engine_start: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.count
        if self.kind == "plain":
            self.versions = (f"v9.{n}.1", f"v9.{n}.2")
            tag, self.label = str(n), f"{n} services"
        else:
            base = SET_VERSIONS[self.kind]
            self.versions = (f"{base}.1", f"{base}.2")
            tag = {"slow": "slow", "start-first": "sf"}[self.kind]
            self.label = {"slow": f"{n} slow-stop, 1 s health", "start-first": f"{n}, half start-first"}[self.kind]
        self.host_id = f"bench-swap-{tag}"
        self.host = BenchHost(self.host_id, REPO / ".run" / f"bench-swap-{tag}", self.repo)
        self.project = f"benchswap{tag}"
        self.project_dir = REPO / ".run" / f"bench-swap-compose-{tag}"
        for version, flavour in zip(self.versions, "ab"):
            self.services[version] = (services_for(n, flavour) if self.kind == "plain" else
                                      slow_services(flavour, self.keys) if self.kind == "slow" else
                                      start_first_services(flavour, self.keys))
        self.running = ""  # the version osctl runs
        self.c_running = ""  # the version the compose project runs
        self.chain = longest_chain(self.services[self.versions[1]])
        self.start_first = list(START_FIRST) if self.kind == "start-first" else []
        self.offline = True  # its downgrades run with the registry unreachable

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

    def osctl(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        if env is None:
            return self.host.osctl(*args, check=check)
        return run([*OSCTL, *args], env=env, check=check)

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
        mode, init, mount targets, stop signal)."""
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
                    "stop_signal": config.get("StopSignal") or "SIGTERM",
                    "mounts": sorted(m["Destination"] for m in attrs["Mounts"])}
        if self.running == self.c_running and found["osctl"] != found["compose"]:
            differ = sorted(n for n in set(found["osctl"]) | set(found["compose"])
                            if found["osctl"].get(n) != found["compose"].get(n))
            name = differ[0]
            raise SystemExit(f"osctl's and compose's {name} differ: {found['osctl'].get(name)} against "
                             f"{found['compose'].get(name)}")

    def offline_env(self) -> dict[str, str]:
        """The host's environment with its image's registry at a closed port, as the offline
        tests do (tests/integration/test_transactions.py, ``dead_registry``)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return {**self.host.env, "OSCTL_IMAGE": f"127.0.0.1:{port}/{self.repo.split('/', 1)[1]}"}

    # -- one osctl swap
    def osctl_swap(self, client: docker.DockerClient, events: Events) -> None:
        old, new = self.running, self.other(self.running)
        verb = "upgrade" if new == self.versions[1] else "downgrade"
        offline = self.offline and verb == "downgrade"
        old_found = client.api.containers(all=True, filters={"label": [
            f"{HOST_LABEL}={self.host_id}", f"{VERSION_LABEL}={old}"]})
        old_ids = {c["Id"] for c in old_found}
        old_names = {c["Labels"][SERVICE_LABEL]: c["Id"] for c in old_found}
        env = self.offline_env() if offline else None
        mark = events.mark()
        launched = time.time_ns()  # the engine stamps its events with the same clock
        t0 = time.perf_counter()
        proc = self.osctl(verb, "--to", new, "--yes", "--json", env=env)
        self.wall.append(time.perf_counter() - t0)
        exited = time.time_ns()
        if offline:
            self.offline_wall.append(self.wall[-1])
        result = json.loads(proc.stdout)
        if result.get("result") != "committed" or result.get("downtime") is None:
            raise SystemExit(f"osctl {verb} --to {new}: {result}")
        self.running = new
        self.downtime.append(float(result["downtime"]))
        self.seconds.append(float(result["seconds"]))
        # Where the downtime goes, from the engine's events: prepare's last create -> first old
        # kill (journal, manifests, listing the old set), first kill -> last old stop (the old set
        # stops), -> last new start (the new set starts, gated on probes), and the rest of
        # osctl's figure (the last probes and the health gate).
        seen = events.since(mark)
        new_names = names_of(seen, HOST_LABEL, self.host_id, SERVICE_LABEL, new)
        new_ids = set(new_names.values())
        created, killed = last(seen, "create", new_ids), first(seen, "kill", old_ids)
        stopped, started = last(seen, "stop", old_ids), last(seen, "start", new_ids)
        if None not in (created, killed, stopped, started):
            assert created and killed and stopped and started
            stopping, starting = (stopped - killed) / 1e9, (started - stopped) / 1e9
            self.phases.append(((killed - created) / 1e9, stopping, starting,
                                self.downtime[-1] - stopping - starting))
        services = self.services[new]
        begun = first(seen, "create", new_ids)  # (the old set's health-check execs carry the host's label too)
        if offline and begun is not None and killed is not None:
            # The whole command: launch -> its first engine event (start-up, lock, resolve, the
            # stored version's checks) -> the first stop (prepare: the new containers, and the
            # hand-over) -> osctl's downtime -> exit (commit, removing the old set, exit).
            after = (exited - killed) / 1e9 - self.downtime[-1]
            self.offline_split.append(((begun - launched) / 1e9, (killed - begun) / 1e9, self.downtime[-1], after))
        if self.start_first:  # every start-first service's new container, ready by the engine's health check
            events.wait_for(lambda evs: True if all(ready_time(evs, new_names[n], services[n], True) is not None
                                                    for n in self.start_first) else None,
                            mark, 15.0, f"the start-first services of {new} to be healthy")
            seen = events.since(mark)
            each = handover(seen, old_names, new_names, services, self.start_first, engine_health=True)
            self.sf_each.append(each)
            self.sf_down.append(max(each.values()))
            self.sf_down_probe.append(max(handover(seen, old_names, new_names, services, self.start_first,
                                                   engine_health=False).values()))
        found = breakdown(seen, old_ids, new_names, services)
        if found is not None:
            self.breakdowns.append((self.downtime[-1], found))

    # -- one compose swap
    def compose_swap(self, client: docker.DockerClient, events: Events) -> None:
        old, new = self.c_running, self.other(self.c_running)
        old_found = client.api.containers(all=True, filters={"label": [f"{PROJECT_LABEL}={self.project}"]})
        old_ids = {c["Id"] for c in old_found}
        old_names = {c["Labels"][COMPOSE_SERVICE_LABEL]: c["Id"] for c in old_found}
        mark = events.mark()
        t0 = time.time_ns()
        self.compose(old, "down")
        self.c_running = ""
        self.compose(new, "up", "-d")
        up_returned = time.time_ns()
        self.c_running = new
        ready = self.wait_compose_ready(client, events, mark, old_ids)
        seen = events.since(mark)
        killed = first(seen, "kill", old_ids)
        if killed is None:
            raise SystemExit(f"compose down of {self.project}: no kill event seen")
        self.c_downtime.append((ready - killed) / 1e9)
        self.c_total.append((ready - t0) / 1e9)
        self.c_up_returned.append((up_returned - t0) / 1e9)
        if self.start_first:
            new_names = names_of(seen, PROJECT_LABEL, self.project, COMPOSE_SERVICE_LABEL)
            self.c_sf_down.append(max(handover(seen, old_names, new_names, self.services[new], self.start_first,
                                               engine_health=True).values()))

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
    def _create(self, client: docker.DockerClient, version: str, names: list[str], tag: str) -> dict[str, str]:
        """Fresh stopped containers of ``version`` for ``names``, configured as compose and osctl
        do (health check, init, stop signal and grace period)."""
        services = self.services[version]
        volume = f"{self.project}-floor-logs"
        client.api.create_volume(volume, labels={FLOOR_LABEL: self.project})

        def create(name: str) -> str:
            spec = services[name]
            hc = spec.get("healthcheck")
            healthcheck = None if hc is None else {
                "test": hc["test"], "interval": int(seconds_of(hc.get("interval"), 30) * 1e9),
                "timeout": int(seconds_of(hc.get("timeout"), 30) * 1e9), "retries": hc.get("retries", 3)}
            host_config = client.api.create_host_config(
                binds={volume: {"bind": v.split(":", 1)[1], "mode": "rw"} for v in spec.get("volumes", [])},
                network_mode=spec["network_mode"], init=True)
            return str(client.api.create_container(
                self.image_ids[version], command=spec["command"], environment=spec["environment"],
                labels={FLOOR_LABEL: self.project}, name=f"{self.project}-floor-{tag}-{name}",
                host_config=host_config, healthcheck=healthcheck, detach=True,
                stop_signal=spec.get("stop_signal"),
                stop_timeout=int(seconds_of(spec.get("stop_grace_period"), 10)))["Id"])

        with ThreadPoolExecutor(max_workers=4) as pool:
            return dict(zip(names, pool.map(create, names)))

    def _remove(self, client: docker.DockerClient, ids: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda cid: client.api.remove_container(cid, force=True), ids))
        for volume in client.api.volumes(filters={"label": [f"{FLOOR_LABEL}={self.project}"]}).get("Volumes") or []:
            client.api.remove_volume(volume["Name"], force=True)

    def _start(self, client: docker.DockerClient, spec: dict[str, Any], name: str, cid: str) -> None:
        """Start one container and return once it runs (a one-shot: once it exited 0)."""
        client.api.start(cid)
        if spec.get("oneshot"):
            code = client.api.wait(cid, timeout=60)["StatusCode"]
            if code != 0:
                raise SystemExit(f"floor: {name} exited {code}")
        else:
            while not client.api.inspect_container(cid)["State"]["Running"]:
                time.sleep(0.002)

    @staticmethod
    def _probe(client: docker.DockerClient, spec: dict[str, Any], name: str, cid: str) -> None:
        """The service's health test run as an exec until it passes once (as osctl runs it). The
        exec is attached (its output read), so its end is known when the stream closes: three
        calls per probe and no polling, which on two busy cores would slow the engine itself."""
        test = spec["healthcheck"]["test"]
        argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 30:
            exec_id = client.api.exec_create(cid, argv, stdout=True, stderr=True)["Id"]
            client.api.exec_start(exec_id, detach=False)
            info = client.api.exec_inspect(exec_id)
            while info["Running"]:  # the stream closed before the engine recorded the exit
                time.sleep(0.005)
                info = client.api.exec_inspect(exec_id)
            if info["ExitCode"] == 0:
                return
            time.sleep(0.01)
        raise SystemExit(f"floor: the probe of {name} did not pass within 30 s")

    def floor_run(self, client: docker.DockerClient) -> None:
        """The target set's longest chain, as fresh stopped containers, started one by one."""
        services = self.services[self.versions[1]]
        ids: dict[str, str] = {}
        try:
            ids = self._create(client, self.versions[1], self.chain, "chain")
            chain, probes = 0.0, 0.0
            for index, name in enumerate(self.chain):
                t0 = time.perf_counter()
                self._start(client, services[name], name, ids[name])
                chain += time.perf_counter() - t0
                child = self.chain[index + 1] if index + 1 < len(self.chain) else None
                gate = (services[child]["depends_on"][name]["condition"] == "service_healthy" if child
                        else "healthcheck" in services[name])
                if gate:  # one passing probe, as an exec, the way osctl runs it (not in the floor)
                    t0 = time.perf_counter()
                    self._probe(client, services[name], name, ids[name])
                    probes += time.perf_counter() - t0
            self.floor.append(chain)
            self.floor_probes.append(chain + probes)
        finally:
            self._remove(client, list(ids.values()))

    def _bring_up(self, client: docker.DockerClient, version: str, ids: dict[str, str], probes: bool) -> None:
        """Start a set in dependency order, each service as soon as what it depends on qualifies:
        started (running), completed (exited 0), healthy (one probe exec passed; without
        ``probes``, running). With ``probes`` a service with a health check is done once its
        probe passed, as osctl's swap ends when every new service is healthy by its probes."""
        services = self.services[version]
        running = {name: threading.Event() for name in services}
        healthy = {name: threading.Event() for name in services}
        failed = threading.Event()

        def bring(name: str) -> None:
            try:
                for dep, rule in services[name].get("depends_on", {}).items():
                    gate = healthy[dep] if rule["condition"] != "service_started" else running[dep]
                    if not gate.wait(60) or failed.is_set():
                        raise SystemExit(f"engine: {name} waited for {dep} in vain")
                self._start(client, services[name], name, ids[name])
                running[name].set()
                if probes and "healthcheck" in services[name]:
                    self._probe(client, services[name], name, ids[name])
            except BaseException:
                failed.set()
                raise
            finally:
                running[name].set()
                healthy[name].set()

        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            list(pool.map(bring, services))

    def engine_swap(self, client: docker.DockerClient) -> None:
        """The plain engine doing the whole swap's container work: set A runs (fresh containers,
        not measured), set B is created; then, measured, ALL of A's running containers are stopped
        at once (each with its stop signal and grace period) and B is started in dependency order
        (``_bring_up`` with probes) until every service runs and is healthy by one probe."""
        a, b = self.versions
        ids: dict[str, dict[str, str]] = {}
        try:
            ids[a] = self._create(client, a, list(self.services[a]), "a")
            self._bring_up(client, a, ids[a], probes=False)
            ids[b] = self._create(client, b, list(self.services[b]), "b")
            time.sleep(0.3)  # the old set's shells have set their traps
            old = [ids[a][n] for n, spec in self.services[a].items() if not spec.get("oneshot")]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(old)) as pool:
                list(pool.map(lambda cid: client.api.stop(cid), old))  # each its own grace period
            t1 = time.perf_counter()
            self._bring_up(client, b, ids[b], probes=True)
            t2 = time.perf_counter()
            self.engine.append(t2 - t0)
            self.engine_stop.append(t1 - t0)
            self.engine_start.append(t2 - t1)
        finally:
            self._remove(client, [cid for found in ids.values() for cid in found.values()])

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
COMPOSE_GOAL = 0.4  # issue 16: osctl's downtime at most 0.4 x compose's down + up -d
ENGINE_GOAL = 1.3  # and at most 1.3 x the plain engine doing the whole swap's container work


def ratio(name: str, num: list[float], den: list[float], unit: str, scale: float, goal: float | None) -> Figure:
    """The ratio of the medians; the spread is over every pair of runs (their counts may differ)."""
    pairs = [scale * a / b for a in num for b in den]
    return Figure(name, unit, scale * statistics.median(num) / statistics.median(den), min(pairs), max(pairs),
                  len(pairs), goal)


def size_figures(s: Size) -> tuple[list[Figure], list[Figure], list[str], list[Row]]:
    label = s.label
    chain = len(s.chain)
    osctl_med, compose_med, floor_med, engine_med = (statistics.median(x) for x in
                                                     (s.downtime, s.c_downtime, s.floor, s.engine))
    goal = min(COMPOSE_GOAL * compose_med, ENGINE_GOAL * engine_med)  # both goals: the stricter one
    swap = [
        figure(f"osctl swap downtime, {label}", s.downtime, goal=goal),
        figure(f"peer: compose down + up -d, {label}", s.c_downtime, peer="docker-compose"),
        figure(f"engine: whole swap, {label}", s.engine, peer="docker"),
        ratio(f"  osctl / compose downtime ({label})", s.downtime, s.c_downtime, "%", 100.0, 100 * COMPOSE_GOAL),
        ratio(f"  osctl / engine whole swap ({label})", s.downtime, s.engine, "%", 100.0, 100 * ENGINE_GOAL),
        figure(f"  engine: old set stopped at once ({label})", s.engine_stop, peer="docker"),
        figure(f"  engine: new set started in order + probes ({label})", s.engine_start, peer="docker"),
        figure(f"  floor: engine starts, chain of {chain} ({label})", s.floor, peer="docker"),
        figure(f"  floor + one probe per healthy gate ({label})", s.floor_probes, peer="docker"),
        ratio(f"  osctl / chain floor ({label})", s.downtime, s.floor, "%", 100.0, None),
    ]
    e2e = [
        figure(f"osctl upgrade/downgrade seconds, {label}", s.seconds),
        figure(f"  osctl process wall clock ({label})", s.wall),
        figure(f"peer: compose down+up -d+healthy, {label}", s.c_total, peer="docker-compose"),
        figure(f"  compose up -d returned ({label})", s.c_up_returned, peer="docker-compose"),
    ]
    rows = [Row(f"swap downtime, {label}", swap[0], peer=swap[1], floor=swap[2],
                goals=[Goal(f"<= {COMPOSE_GOAL}x compose", COMPOSE_GOAL * compose_med),
                       Goal(f"<= {ENGINE_GOAL}x engine swap", ENGINE_GOAL * engine_med)])]
    if s.sf_down:
        worst = figure(f"start-first services' worst downtime, {label}", s.sf_down, goal=0.0)
        swap += [worst,
                 figure(f"  the same, readiness by a passing probe exec ({label})", s.sf_down_probe, goal=0.0),
                 figure(f"  compose, the same services ({label})", s.c_sf_down, peer="docker-compose")]
        rows.append(Row(f"start-first services' worst downtime, {label}", worst,
                        peer=swap[-1], goals=[Goal("0 s", 0.0)]))
    if s.offline_wall:
        offline = figure(f"offline downgrade, whole command, {label}", s.offline_wall, goal=OFFLINE_GOAL)
        e2e.append(offline)
        rows.append(Row(f"offline downgrade wall time, {label}", offline, goals=[Goal(f"< {OFFLINE_GOAL:.0f} s",
                                                                                   OFFLINE_GOAL)]))
    rows.append(Row(f"upgrade, stored versions, {label}", e2e[0], peer=e2e[2]))
    missed = []
    if osctl_med > COMPOSE_GOAL * compose_med:
        missed.append(f"{COMPOSE_GOAL} x compose ({COMPOSE_GOAL * compose_med:.2f} s)")
    if osctl_med > ENGINE_GOAL * engine_med:
        missed.append(f"{ENGINE_GOAL} x the engine's whole swap ({ENGINE_GOAL * engine_med:.2f} s)")
    services = s.services[s.versions[1]]
    waits = health_waits(services)
    interval = (HEALTH if s.kind == "plain" else HEALTH_FAST)["interval"]
    engine_stop, engine_start = statistics.median(s.engine_stop), statistics.median(s.engine_start)
    notes = [f"  {label}: longest chain {chain} ({' > '.join(s.chain)}); compose waits out at least {waits} "
             f"health intervals of {interval}: osctl {osctl_med:.2f} s, compose {compose_med:.2f} s, engine's whole "
             f"swap {engine_med:.2f} s (all old stopped at once {engine_stop:.2f} s, then the new set in order "
             f"behind one probe each {engine_start:.2f} s), chain floor {floor_med:.2f} s"
             + (f"; MISSED: {' and '.join(missed)}" if missed else "; both goals met")]
    if s.breakdowns:
        notes.append("    " + where_it_goes(s))
    elif s.phases:
        pre, stop, start, rest = (statistics.median(p[i] for p in s.phases) for i in range(4))
        notes.append(f"    osctl's downtime, medians from engine events: the old set stopping {stop:.2f} s, the new "
                     f"set starting {start:.2f} s, the rest {rest:.2f} s; before it, prepare's last create -> first "
                     f"stop {pre:.2f} s")
    if s.sf_each:
        names = s.start_first
        each = {name: statistics.median(run[name] for run in s.sf_each) for name in names}
        notes.append("    start-first services, downtime per service (median; the old container's kill -> the new "
                     "one's health_status healthy, or start without a check): "
                     + ", ".join(f"{name} {value:.2f} s" for name, value in each.items())
                     + f"; by a passing probe exec instead: worst {statistics.median(s.sf_down_probe):.2f} s"
                     + (f"; compose: worst {statistics.median(s.c_sf_down):.2f} s" if s.c_sf_down else ""))
        if not s.keys:
            notes.append("    (the osctl measured refuses update_order: this set ran stop-first, as a reference)")
    if s.offline_wall:
        notes.append(f"    offline downgrade (registry unreachable: a closed port): the whole `osctl downgrade --to "
                     f"{s.versions[0]}` took {statistics.median(s.offline_wall):.2f} s "
                     f"({min(s.offline_wall):.2f}..{max(s.offline_wall):.2f}, {len(s.offline_wall)} runs); goal "
                     f"under {OFFLINE_GOAL:.0f} s"
                     + (": launch -> its first new container created (start-up, lock, resolve, checks of the "
                        "stored version) {:.2f} s, -> the first stop (creating the new set{}) {:.2f} s, downtime {:.2f} s, "
                        "-> exit (commit, removing the old set) {:.2f} s".format(
                            statistics.median(x[0] for x in s.offline_split),
                            ", the hand-over" if s.start_first else "",
                            *(statistics.median(x[i] for x in s.offline_split) for i in (1, 2, 3)))
                        if s.offline_split else ""))
    return swap, e2e, notes, rows


def where_it_goes(s: Size) -> str:
    """Where osctl's downtime went, medians over its swaps, from the engine's events."""
    downs = [d for d, _b in s.breakdowns]
    runs = [b for _d, b in s.breakdowns]
    med = statistics.median
    parts = []
    handover = med(b.handover for b in runs)
    if handover > 0:
        parts.append(f"hand-over (start-first services up and healthy before the first stop) {handover:.2f} s")
    stop = med(b.stop for b in runs)
    parts.append(f"stop phase (first kill -> last old container exited) {stop:.2f} s [engine, all at once: "
                 f"{med(s.engine_stop):.2f} s]")
    levels = sorted({lv for b in runs for lv in b.levels})
    ready = {lv: med(b.levels[lv] for b in runs if lv in b.levels) for lv in levels}
    steps, before = [], 0.0
    for lv in levels:
        names = sorted({n for b in runs for n in b.members.get(lv, [])})
        steps.append(f"L{lv} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) +{ready[lv] - before:.2f}")
        before = max(before, ready[lv])
    parts.append(f"start phase by level, each level's last service ready (the increments add up to "
                 f"{before:.2f} s): " + "; ".join(steps) + f" [engine: {med(s.engine_start):.2f} s]")
    parts.append(f"probes: {med(b.probes for b in runs):.0f} execs into the new set "
                 f"({med(b.failed for b in runs):.0f} failed)")
    rest = med(d - b.span for d, b in s.breakdowns)
    parts.append(f"the rest of osctl's {med(downs):.2f} s, outside first kill -> last ready (listing the old set, "
                 f"journal steps, the final check): {rest:.2f} s")
    return "where osctl's downtime goes (medians, engine events): " + "; ".join(parts)


class SwapBench(Bench):
    """Per set: osctl swaps, compose swaps, engine floors and whole swaps, interleaved; one set
    at a time."""

    name = "swap"
    title = "swap downtime and whole upgrades between stored versions, beside docker-compose and the engine"

    def __init__(self, counts: list[int], runs: int | None = None, compose_runs: int | None = None,
                 kinds: list[str] | None = None, repository: str = BENCH_REPO) -> None:
        self.repository = repository
        self.repo = f"{REGISTRY}/{repository}"
        kinds = kinds or ["plain"]
        keys = manifest_keys()
        self.sizes = [Size(n, self.repo, runs or (DEFAULT_RUNS if n < 30 else DEFAULT_RUNS_LARGE),
                           compose_runs or (DEFAULT_COMPOSE_RUNS if n < 30 else DEFAULT_COMPOSE_RUNS_LARGE))
                      for n in (counts if "plain" in kinds else [])]
        self.sizes += [Size(10, self.repo, runs or DEFAULT_RUNS, compose_runs or DEFAULT_COMPOSE_RUNS, kind, keys)
                       for kind in KINDS[1:] if kind in kinds]
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
        notes = ["notes (engine whole swap: fresh containers of set A running, then all stopped at once and set B "
                 "started in dependency order, each as soon as what it depends on runs or passed one probe exec; "
                 "chain floor: the longest chain of fresh containers started one after the other, no stop, no "
                 "probe. Ratios: of the medians, spread over all pairs of runs):"]
        rows: list[Row] = []
        for index, s in enumerate(self.sizes):
            say(f"swap: {s.host_id}: {s.compose_runs} compose swaps, {s.runs} osctl swaps, engine floors (chain of "
                f"{len(s.chain)}) and engine whole swaps, interleaved ...")
            for run_index in range(max(s.runs, s.compose_runs)):
                if run_index < s.compose_runs:
                    s.compose_swap(client, events)
                if run_index < s.runs:
                    s.osctl_swap(client, events)
                    s.floor_run(client)
                    s.engine_swap(client)
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
            ("osctl swap downtime: upgrade/downgrade between stored versions, compose and the plain engine "
             "alongside", swap),
            ("upgrade end to end: osctl's transaction against compose down + up -d + healthy", e2e)], notes)

    def clean(self) -> list[str]:
        problems, self.problems = self.problems, []
        if self.events is not None:
            self.events.close()
        return problems + clean_bench(self.client or docker.from_env(), self.sizes, self.repository,
                                      [i for s in self.sizes for i in s.image_ids.values()])


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None,
                        help=f"osctl swaps (and engine floors and whole swaps) per set, alternating A->B and B->A "
                             f"(default {DEFAULT_RUNS}; {DEFAULT_RUNS_LARGE} from 30 services on)")
    parser.add_argument("--compose-runs", type=int, default=None,
                        help=f"compose swaps per set, interleaved with osctl's (default {DEFAULT_COMPOSE_RUNS}; "
                             f"{DEFAULT_COMPOSE_RUNS_LARGE} from 30 services on): each waits out the engine's "
                             "health intervals")
    parser.add_argument("--services", type=int, nargs="+", default=[5, 10, 30], help="service counts (plain sets)")
    parser.add_argument("--sets", nargs="+", choices=KINDS, default=list(KINDS),
                        help="which sets: plain (the --services sizes, 5 s health intervals), slow (10 slow-to-stop "
                             "services in a 4-deep started chain, 1 s intervals), start-first (10, half start-first)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if any(n < 3 for n in args.services) or len(set(args.services)) != len(args.services) \
            or min(args.runs or 1, args.compose_runs or 1) < 1:
        parser.error("--services needs distinct counts of at least 3, --runs and --compose-runs at least 1")
    run_alone(SwapBench(args.services, args.runs, args.compose_runs, args.sets), args.json_path)


if __name__ == "__main__":
    main_alone(main)
