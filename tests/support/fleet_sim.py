"""Many simulated hosts on one engine, each with its own root and its own ``osctl agent`` process.

Used by the fleet tests and the fleet benchmark. A host here is a folder (its root), a host id
and an environment; the caller makes them (and removes their containers afterwards). What the
fleet did is read back from etcd's own history (``replay``), not from what the agents printed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from osctl.adapters.etcd import Etcd
from osctl.domain import fleetkeys
from tests.support.waiting import wait_for


class SimHost(Protocol):
    """A test ``Host`` (``env()`` a method) or a bench host (``env`` a dict)."""

    host_id: str
    root: Path


def host_env(host: SimHost) -> dict[str, str]:
    env = host.env  # type: ignore[attr-defined]
    return dict(env() if callable(env) else env)


def write_config(host: SimHost, endpoints: Iterable[str], group: str, *, policy: str = "auto",
                 check_interval: str = "60s", health_timeout: str = "20s") -> None:
    """The host's ``config.yaml``: the fleet and an update policy. The agents wait on etcd
    watches; the check interval is only their safety net, and a minute of it means that a
    fleet test passing only thanks to the interval would take many minutes, not pass quietly."""
    config = host.root / "etc/osctl/config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"update: {{policy: {policy}, check_interval: {check_interval}}}\n"
        f"boot: {{health_timeout: {health_timeout}}}\n"
        f"fleet: {{etcd: [{', '.join(endpoints)}], group: {group}}}\n")


def quiet_probes(manifest: str, interval: str = "60s") -> str:
    """A release.yaml whose services the engine probes once per ``interval`` instead of every few seconds.

    osctl's health gate runs a service's probe itself, several times a second, whatever the
    interval (``serviceset.wait_until_healthy``); the engine's own background probes only feed
    ``service list`` and the supervisor. Each probe is a ``docker exec``: with many simulated
    hosts on two cores, probing every second is most of the machine's work.
    """
    quiet = re.sub(r"\binterval: [0-9.]+m?s\b", f"interval: {interval}", manifest)
    assert quiet != manifest or "healthcheck" not in manifest, "no probe interval found to quiet"
    return quiet


def osctl(host: SimHost, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osctl", *args], capture_output=True, text=True, env=host_env(host),
                          timeout=timeout, stdin=subprocess.DEVNULL)


def install_all(hosts: list[SimHost], version: str, workers: int = 4) -> None:
    """Install ``version`` on every host, a few at a time."""
    def install(host: SimHost) -> None:
        proc = osctl(host, "upgrade", "--to", version)
        assert proc.returncode == 0, f"{host.host_id}: {proc.stderr}"

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(install, hosts))


@dataclass
class Agents:
    """One ``osctl agent`` process per host; logs under ``logdir``."""

    logdir: Path
    lease_ttl: int = 3
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, host: SimHost) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"agent-{host.host_id}.log", "ab")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen([sys.executable, "-m", "osctl", "agent", "--lease-ttl", str(self.lease_ttl)],
                                env=host_env(host), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[host.host_id] = proc
        return proc

    def kill(self, host_id: str) -> None:
        proc = self.procs.pop(host_id)
        proc.kill()
        proc.wait(timeout=10)

    def log(self, host_id: str) -> str:
        return (self.logdir / f"agent-{host_id}.log").read_text(errors="replace")

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every agent (each finishes its step) and wait; their exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for host_id, proc in self.procs.items():
            try:
                codes[host_id] = proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[host_id] = proc.wait()
        self.procs.clear()
        return codes


def fleet_cli(endpoints: Iterable[str], group: str, *args: str, env: Mapping[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    base = [sys.executable, "-m", "osctl", "--etcd", ",".join(endpoints), "--group", group, "fleet"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=dict(env) if env is not None else None)


def fleet_status(endpoints: Iterable[str], group: str) -> dict[str, Any]:
    proc = fleet_cli(endpoints, group, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def wait_until(check: Callable[[], bool], timeout: float, what: Callable[[], str] | str, every: float = 0.5) -> None:
    """``waiting.wait_for``, polling every half second by default (each look is an osctl run)."""
    wait_for(check, timeout, what, every=every)


@dataclass
class Replay:
    """What etcd recorded for a group between two revisions."""

    max_swapping: int = 0
    swapping_without_slot: list[tuple[int, str]] = field(default_factory=list)
    max_slots: int = 0
    swaps: dict[str, int] = field(default_factory=dict)  # host -> times it entered "swapping"


def replay(etcd: Etcd, group: str, since: int) -> Replay:
    """Replay every change under the group from ``since`` (a revision when nobody swapped): at
    each revision, count the hosts whose published phase is ``swapping`` and the slots taken, and
    note a host swapping without a slot."""
    return replay_events(group, etcd.history(fleetkeys.group_prefix(group), since))


def replay_events(group: str, events: Iterable[Any]) -> Replay:
    """``replay`` over events already read, in revision order (``Etcd.history``'s, or a watch's:
    the fleet simulator records a thousand hosts' changes with one watch instead of one read per
    revision). Each event needs ``revision``, ``kind``, ``key`` and, for a put, ``value``."""
    phases: dict[str, str] = {}
    holders: dict[str, str] = {}  # slot key -> host id
    swapping: set[str] = set()  # kept as it changes: a thousand hosts over ten thousand revisions
    result = Replay()
    by_revision: dict[int, list[Any]] = {}
    for event in events:
        by_revision.setdefault(event.revision, []).append(event)
    for revision in sorted(by_revision):
        for event in by_revision[revision]:
            host = fleetkeys.host_of(group, event.key)
            slot = fleetkeys.slot_index(group, event.key)
            if host is not None:
                if event.kind == "delete":
                    phases.pop(host, None)
                    swapping.discard(host)
                else:
                    phase = event.value.get("phase", "")
                    if phase == "swapping" and phases.get(host) != "swapping":
                        result.swaps[host] = result.swaps.get(host, 0) + 1
                    phases[host] = phase
                    (swapping.add if phase == "swapping" else swapping.discard)(host)
            elif slot is not None:
                if event.kind == "delete":
                    holders.pop(event.key, None)
                else:
                    holders[event.key] = event.value.get("host_id", "")
        result.max_swapping = max(result.max_swapping, len(swapping))
        result.max_slots = max(result.max_slots, len(holders))
        if swapping:
            for host in sorted(swapping - set(holders.values())):
                result.swapping_without_slot.append((revision, host))
    return result
