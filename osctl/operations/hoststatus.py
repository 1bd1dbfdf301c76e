"""What ``osctl status`` reports about a host: who it is, what runs, what boots, how it goes.

The engine is asked what runs; osctl's own files say what should run and what the supervisor
last saw. Where the two disagree, the engine is right.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from osctl.adapters.engine import Engine
from osctl.domain import bootpointer, servicestate
from osctl.domain.journal import Journal
from osctl.domain.settings import Settings
from osctl.operations import cloudinit, serviceset


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
    trial_tries: int = 0
    transaction: dict[str, object] | None = None  # in progress, or cut short by a crash
    last_rollback: dict[str, object] | None = None
    cloud_init: dict[str, object] | None = None  # instance id, when applied, each step's result and exit code
    supervisor_pid: int | None = None
    supervisor_running: bool = False
    supervisor_updated_at: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def host_status(settings: Settings, engine: Engine) -> HostStatus:
    info = engine.info()
    state = servicestate.read_services(settings.root)
    supervisor = servicestate.read_supervisor(settings.root)
    pointer = bootpointer.read(settings.root)
    observed = serviceset.observe_host(engine, settings.host_id)
    journal = Journal(settings.root)
    txn = journal.current()
    rollbacks = [e for e in journal.history().entries if e.result == "rolled-back"]
    active = [c for key, c in observed.items() if key.version == state.version] if state.version else []
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
        running_versions=sorted({key.version for key, c in observed.items() if c.running}),
        services_running=sum(1 for c in active if c.running),
        services_total=len(active),
        failed_services=sorted(n for n, r in supervisor.services.items() if r.failed),
        stopped_services=sorted(state.stopped),
        disabled_services=sorted(state.disabled),
        trial=pointer.trial,
        trial_tries=pointer.trial_tries,
        transaction=txn.model_dump(mode="json") if txn else None,
        last_rollback=rollbacks[-1].model_dump(mode="json") if rollbacks else None,
        cloud_init=cloudinit.read_status(settings.root),
        supervisor_pid=supervisor.pid,
        supervisor_running=_alive(supervisor.pid),
        supervisor_updated_at=supervisor.updated_at,
    )


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
