"""A host's system containers as the engine sees them (not as osctl reports them)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import docker

from tests.support.hosts import Host, listed_containers

LONG_RUNNING = {"v1.3": {"syslog", "ntp", "console"}, "v1.4": {"syslog", "ntp", "console", "status", "cron"},
                "v1.5": {"syslog", "ntp", "status", "cron", "metrics"}}

Container = docker.models.containers.Container


def containers(client: docker.DockerClient, host: Host) -> dict[str, Container]:
    """Service name -> its container (any state), for the host's service containers."""
    found = listed_containers(client, {"label": f"io.osctl.host={host.host_id}"})
    return {c.labels["io.osctl.service"]: c for c in found if c.labels.get("io.osctl.role") == "service"}


def running_sets(client: docker.DockerClient, host: Host) -> dict[str, set[str]]:
    """Version -> the services of that version running now (a version with only stopped
    containers maps to an empty set)."""
    found: dict[str, set[str]] = {}
    for c in listed_containers(client, {"label": f"io.osctl.host={host.host_id}"}):
        if c.labels.get("io.osctl.role") == "service":
            version = c.labels["io.osctl.version"]
            found.setdefault(version, set())
            if c.attrs["State"]["Running"]:
                found[version].add(c.labels["io.osctl.service"])
    return found


def running(client: docker.DockerClient, host: Host, name: str) -> bool:
    found = containers(client, host).get(name)
    return bool(found and found.attrs["State"]["Running"])


def up(host: Host, version: str = "v1.5") -> None:
    """Pull ``version`` and bring its service set up with ``osctl service up``."""
    assert host.osctl("pull", version, "--quiet").returncode == 0
    proc = host.osctl("service", "up", "--version", version)
    assert proc.returncode == 0, proc.stderr


_ENGINE_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def engine_time(text: str) -> datetime:
    """An engine timestamp (``State.StartedAt``, ``FinishedAt``: RFC 3339 with up to nine
    fraction digits, trailing zeros dropped) as an aware datetime, truncated to microseconds.

    The strings do not sort: ``...:12.5Z`` is later than ``...:12.45Z``. Truncating both sides
    to microseconds keeps every ``<=`` between them true.
    """
    found = _ENGINE_TIME.fullmatch(text)
    if found is None:
        raise ValueError(f"not an engine timestamp: {text!r}")
    stamp, fraction, zone = found.groups()
    when = datetime.fromisoformat(stamp).replace(
        microsecond=int((fraction or "").ljust(9, "0")[:6]),
        tzinfo=timezone.utc if zone == "Z" else None)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        when = when.replace(tzinfo=timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))))
    return when


def started_at(container: Container) -> datetime:
    return engine_time(container.attrs["State"]["StartedAt"])


def finished_at(container: Container) -> datetime:
    return engine_time(container.attrs["State"]["FinishedAt"])
