"""What ``osctl status`` reports about a host: who it is, where its state is, what runs.

Grows with the transaction work (running version, next boot, rollbacks); for now it proves
the settings resolve and the engine answers, and counts the host's system containers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from osctl.adapters.engine import Engine
from osctl.constants import LABEL_ROLE, ROLE_SERVICE
from osctl.domain.naming import host_labels
from osctl.domain.settings import Settings


@dataclass(frozen=True)
class HostStatus:
    host_id: str
    host_id_source: str
    root: str
    image: str | None
    image_source: str
    engine_address: str
    engine_version: str
    containers: int
    running: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def host_status(settings: Settings, engine: Engine) -> HostStatus:
    info = engine.info()
    mine = [c for c in engine.containers(host_labels(settings.host_id)) if c.labels.get(LABEL_ROLE) == ROLE_SERVICE]
    return HostStatus(
        host_id=settings.host_id,
        host_id_source=settings.source_of("host_id"),
        root=str(settings.root),
        image=settings.image,
        image_source=settings.source_of("image"),
        engine_address=info.address,
        engine_version=info.version,
        containers=len(mine),
        running=sum(1 for c in mine if c.state == "running"),
    )
