"""``osctl service ...``: the operator's view of, and hands on, the running service set."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from osctl.adapters.engine import Engine
from osctl.adapters.locking import host_lock
from osctl.domain import bootpointer, servicegraph, servicestate
from osctl.domain.settings import Settings
from osctl.errors import NotFoundError, UsageError
from osctl.models.events import Events, ServiceOutcome, SkipReason, ignore
from osctl.models.services import ServicesState
from osctl.operations import serviceset
from osctl.operations.serviceset import ServiceSet, Skip


@dataclass(frozen=True)
class ServiceRow:
    name: str
    state: str  # running, exited, created, missing, stopped, disabled, failed, completed
    health: str | None
    restarts: int
    uptime: float | None  # seconds since it started, while it runs
    image: str
    version: str
    oneshot: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def active_version(settings: Settings, explicit: str | None = None) -> str:
    """The version whose services the command is about."""
    version = explicit or servicestate.read_services(settings.root).version or bootpointer.read(settings.root).default
    if not version:
        raise UsageError("no version is active on this host",
                         hint="osctl service up --version V (a stored version), or osctl upgrade --to V")
    return version


def skipped(state: ServicesState) -> Skip:
    """The services the operator keeps down, and why (disabled wins over stopped)."""
    reasons = {name: SkipReason.STOPPED for name in state.stopped}
    reasons.update({name: SkipReason.DISABLED for name in state.disabled})
    return reasons


def up(settings: Settings, engine: Engine, version: str | None, *, events: Events = ignore,
       timeout: float = serviceset.HEALTH_TIMEOUT) -> list[ServiceOutcome]:
    with host_lock(settings.root, "service up"):
        state = servicestate.read_services(settings.root)
        target = active_version(settings, version)
        others = sorted({key.version for key, c in serviceset.observe_host(engine, settings.host_id).items()
                         if c.running and key.version != target})
        if others:
            raise UsageError(f"the services of {', '.join(others)} are running on this host",
                             hint="switch versions with osctl upgrade/downgrade, or osctl service down first")
        sset = serviceset.load_service_set(settings.host_id, settings.root, target)
        servicestate.write_services(settings.root, state.model_copy(update={"version": target, "desired": "up"}))
        return serviceset.up(engine, sset, skip=skipped(state), events=events, timeout=timeout)


def down(settings: Settings, engine: Engine, *, events: Events = ignore) -> list[str]:
    with host_lock(settings.root, "service down"):
        state = servicestate.read_services(settings.root)
        # Desired state first: a supervisor that sees the containers stop must not restart them.
        servicestate.write_services(settings.root, state.model_copy(update={"desired": "down"}))
        manifest = serviceset.stored_manifest(settings.host_id, settings.root, state.version)
        return serviceset.down(engine, settings.host_id, state.version, manifest=manifest, events=events)


def _service_set(settings: Settings) -> ServiceSet:
    return serviceset.load_service_set(settings.host_id, settings.root, active_version(settings))


def known(sset: ServiceSet, name: str) -> None:
    if name not in sset.manifest.services:
        names = sorted(sset.manifest.services)
        close = difflib.get_close_matches(name, names, n=1)
        raise NotFoundError(f"{sset.version} has no service {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                            hint=f"known services: {', '.join(names)}")


def set_flag(settings: Settings, engine: Engine, name: str, action: str, *, events: Events = ignore) -> str:
    """start, stop, restart, enable or disable one service; returns what was done, in words."""
    with host_lock(settings.root, f"service {action} {name}"):
        sset = _service_set(settings)
        known(sset, name)
        state = servicestate.read_services(settings.root)
        stopped, disabled = set(state.stopped), set(state.disabled)
        current = serviceset.observe(engine, settings.host_id, sset.version).get(name)
        if action == "enable":
            disabled.discard(name)
            said = f"{name} is enabled: it starts at the next boot, swap or service up"
        elif action == "disable":
            disabled.add(name)
            said = f"{name} is disabled: it will not start at the next boot or swap"
            if current is not None and current.running:
                said += " (it keeps running now; osctl service stop stops it)"
        elif action == "stop":
            stopped.add(name)  # written before the container stops, so no supervisor restarts it
            servicestate.write_services(settings.root, state.model_copy(update={"stopped": sorted(stopped)}))
            if current is not None:
                engine.stop(current.id, current.stop_timeout)
            return f"{name} is stopped; the supervisor leaves it alone until osctl service start {name}"
        else:  # start, restart
            if name in disabled:
                raise UsageError(f"{name} is disabled", hint=f"osctl service enable {name} first")
            stopped.discard(name)
            servicestate.write_services(settings.root, state.model_copy(update={"stopped": sorted(stopped)}))
            if action == "restart" and current is not None and current.running:
                engine.stop(current.id, current.stop_timeout)
            state = servicestate.read_services(settings.root)
            # Starting one service must not start others the operator left down: only what it
            # depends on may come along (it must run for this one to start).
            needed = servicegraph.dependencies(sset.manifest.services, name)
            others = {other: SkipReason.NOT_ASKED_FOR for other in sset.manifest.services
                      if other != name and other not in needed}
            serviceset.up(engine, sset, skip={**skipped(state), **others}, events=events, wait_healthy=False)
            return f"{name} is {'restarted' if action == 'restart' else 'started'}"
        servicestate.write_services(settings.root, state.model_copy(update={"stopped": sorted(stopped),
                                                                            "disabled": sorted(disabled)}))
        return said


def service_rows(settings: Settings, engine: Engine) -> list[ServiceRow]:
    sset = _service_set(settings)
    state = servicestate.read_services(settings.root)
    supervised = servicestate.read_supervisor(settings.root).services
    observed = serviceset.observe(engine, settings.host_id, sset.version)
    now = datetime.now(UTC)
    rows = []
    for name in servicegraph.start_order(sset.manifest.services):
        container = observed.get(name)
        record = supervised.get(name)
        service = sset.manifest.services[name]
        if container is None:
            status = "missing"
        elif container.running:
            status = "running"
        elif service.oneshot and container.exited_ok:
            status = "completed"
        else:
            status = container.status
        if name in state.disabled and status != "running":
            status = "disabled"
        elif name in state.stopped and status != "running":
            status = "stopped"
        elif record is not None and record.failed and status != "running":
            status = "failed"
        uptime = None
        if container is not None and container.running and container.started is not None:
            uptime = max(0.0, (now - container.started).total_seconds())
        rows.append(ServiceRow(name, status, container.health if container and container.running else None,
                               record.restarts if record else 0, uptime,
                               service.image or f"{sset.version} (OS image)", sset.version, service.oneshot))
    return rows


def logs(settings: Settings, engine: Engine, name: str, *, tail: int | None, follow: bool) -> Iterator[bytes]:
    sset = _service_set(settings)
    known(sset, name)
    container = serviceset.observe(engine, settings.host_id, sset.version).get(name)
    if container is None:
        raise NotFoundError(f"{name} has not run on this host yet (no container for {sset.version})",
                            hint="osctl service up starts the service set")
    return engine.logs(container.id, tail=tail, follow=follow)
