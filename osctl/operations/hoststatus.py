"""What ``osctl status`` reports about a host: who it is, what runs, what boots, how it goes.

The engine is asked what runs; osctl's own files say what should run and what the supervisor
last saw. Where the two disagree, the engine is right.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from osctl.constants import LABEL_SERVICE, LABEL_VERSION, TUF_DIR
from osctl.domain import bootedentry, bootpointer, cloudinitstatus, servicestate
from osctl.domain.journal import Journal
from osctl.domain.naming import system_labels
from osctl.domain.settings import ENV_TRUST_ROOT, Settings
from osctl.errors import OsctlError
from osctl.models.version import try_parse

if TYPE_CHECKING:
    from osctl.adapters.engine import Engine

# What the engine's listing says of a container whose inspect says ``Running`` (paused and
# restarting containers are still running, as ``docker inspect`` has it).
_RUNNING = frozenset({"running", "paused", "restarting"})


@dataclass(frozen=True)
class TrustStatus:
    """The trusted root and what the host last trusted of the release metadata, read offline:
    status never asks the network (docs/trust.md)."""

    origin: str  # where the root came from: option, environment, settings file, unset
    mode: str  # enforce or off
    enforced: bool
    metadata_source: str | None  # the registry's <image>-tuf repository, or trust.metadata_url
    configured_root_version: int | None = None  # the root given; the host may have followed newer ones
    trusted: bool = False  # the host holds verified metadata (it refreshed at least once)
    root_version: int | None = None  # of the root it trusts now (after following the chain)
    targets_version: int | None = None
    expires: str | None = None  # the earliest expiry of the four roles (ISO 8601, UTC)
    expiring_role: str | None = None
    expired: bool = False  # as of now; stored verified versions still boot, nothing new installs
    signed: int = 0  # versions the targets metadata signs (revoked ones included)
    revoked: list[str] = field(default_factory=list)  # revoked at revoke, or below the floor; oldest first
    floor: str | None = None
    floor_reason: str | None = None
    problem: str | None = None  # the root or the stored metadata could not be read


@dataclass(frozen=True)
class HostStatus:
    host_id: str
    host_id_source: str
    root: str
    image: str | None
    image_source: str
    engine_address: str
    engine_version: str
    active_version: str | None
    desired: str
    next_boot: str | None
    previous: str | None
    running_versions: list[str]
    services_running: int
    services_total: int
    failed_services: list[str] = field(default_factory=list)
    stopped_services: list[str] = field(default_factory=list)
    disabled_services: list[str] = field(default_factory=list)
    trial: str | None = None
    trial_tries: int = 0  # left: the loader's count when it counts them, else osctl's
    trial_counted_by_loader: bool = False
    esp: str = ""  # where the loader's files are
    booted: str | None = None  # what the loader or the kernel command line says booted
    transaction: dict[str, object] | None = None  # in progress, or cut short by a crash
    last_rollback: dict[str, object] | None = None
    cloud_init: dict[str, object] | None = None  # instance id, when applied, each step's result and exit code
    supervisor_pid: int | None = None
    supervisor_running: bool = False
    supervisor_updated_at: str | None = None
    trust: TrustStatus | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def host_status(settings: Settings, engine: Engine) -> HostStatus:
    info = engine.info()
    state = servicestate.read_services(settings.root)
    supervisor = servicestate.read_supervisor(settings.root)
    pointer = bootpointer.read(settings.root)
    observed = _system_containers(engine, settings.host_id)
    journal = Journal(settings.root)
    txn = journal.current()
    rollbacks = [e for e in journal.history().entries if e.result == "rolled-back"]
    counted = None
    if pointer.trial:
        from osctl.domain import bootloader

        counted = bootloader.trial_entry(settings.esp, pointer.trial)
    booted = bootedentry.what_booted(settings)
    active = [running for version, running in observed if version == state.version] if state.version else []
    return HostStatus(
        host_id=settings.host_id,
        host_id_source=settings.source_of("host_id"),
        root=str(settings.root),
        image=settings.image,
        image_source=settings.source_of("image"),
        engine_address=info.address,
        engine_version=info.version,
        active_version=state.version,
        desired=state.desired,
        next_boot=pointer.next_boot,
        previous=pointer.previous,
        running_versions=sorted({version for version, running in observed if running}),
        services_running=sum(1 for running in active if running),
        services_total=len(active),
        failed_services=sorted(n for n, r in supervisor.services.items() if r.failed),
        stopped_services=sorted(state.stopped),
        disabled_services=sorted(state.disabled),
        trial=pointer.trial,
        trial_tries=(counted[1].left or 0) if counted else pointer.trial_tries,
        trial_counted_by_loader=counted is not None,
        esp=str(settings.esp),
        booted=(f"{booted.version} ({booted.entry or booted.source})" if booted else None),
        transaction=txn.model_dump(mode="json") if txn else None,
        last_rollback=rollbacks[-1].model_dump(mode="json") if rollbacks else None,
        cloud_init=cloudinitstatus.read_status(settings.root),
        supervisor_pid=supervisor.pid,
        supervisor_running=_alive(supervisor.pid),
        supervisor_updated_at=supervisor.updated_at,
        trust=trust_status(settings),
    )


def _system_containers(engine: Engine, host_id: str) -> list[tuple[str, bool]]:
    """(version, running) of each of the host's system containers, from one listing of the
    engine (status needs no more than that: no inspect per container)."""
    labels = system_labels(host_id)
    found = {(c.labels.get(LABEL_SERVICE, "?"), c.labels.get(LABEL_VERSION, "?")): c.state in _RUNNING
             for c in engine.containers(labels)}  # one per service and version, as serviceset sees them
    return [(version, running) for (_service, version), running in found.items()]


def trust_status(settings: Settings, now: datetime | None = None) -> TrustStatus:
    """Which root the host trusts and what its last verified metadata says; no network."""
    try:
        config = settings.trust
    except OsctlError as exc:  # the root's file cannot be read: every command that verifies says so too
        in_file = settings.config_path.exists() and settings.file.trust.root is not None
        origin = ("option" if settings.trust_root_option else "environment" if settings.env.get(ENV_TRUST_ROOT)
                  else "settings file" if in_file else "OS image")
        return TrustStatus(origin, "enforce", True, None, problem=exc.message)
    cache = settings.root / TUF_DIR
    if config.root is None and not (cache / "targets.json").exists():  # nothing to read: python-tuf stays unloaded
        return TrustStatus(config.origin, config.mode, config.enforced, None)
    from osctl.adapters.tufclient import read_index, root_version
    from osctl.operations.trust import metadata_repository

    source = config.metadata_url or (metadata_repository(settings.image) if settings.image else None)
    base = {"origin": config.origin, "mode": config.mode, "enforced": config.enforced, "metadata_source": source}

    problems = []
    configured = None
    if config.root is not None:
        try:
            configured = root_version(config.root)
        except OsctlError as exc:
            problems.append(f"the configured root: {exc.message}")
    try:
        index = read_index(cache)
    except OsctlError as exc:
        index = None
        problems.append(exc.message)
    problem = "; ".join(problems) or None
    if index is None:
        return TrustStatus(**base, configured_root_version=configured, problem=problem)
    known = index.expires.year < 9999
    revoked = sorted((v for v in index.releases if index.revocation(v) is not None), key=try_parse)  # type: ignore[arg-type]
    return TrustStatus(
        **base, configured_root_version=configured, trusted=True, root_version=index.root_version or None,
        targets_version=index.targets_version,
        expires=index.expires.isoformat(timespec="seconds") if known else None,
        expiring_role=index.expiring_role if known else None,
        expired=known and index.expired(now), signed=len(index.releases), revoked=revoked,
        floor=index.floor, floor_reason=index.floor_reason, problem=problem)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
