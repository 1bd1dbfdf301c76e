"""The service state files under ``<root>/var/lib/osctl/``.

``services.json`` says what should run (the active version, disabled and stopped services): it
keeps its last good copy, and a damaged file with no usable copy is a clear error, because an
empty state would silently start services the operator disabled. ``supervisor.json`` only
reports what the supervisor saw: a damaged one is set aside and the supervisor starts counting
again.
"""

from __future__ import annotations

from pathlib import Path

from osctl.adapters.statefile import Damage, StateFile
from osctl.constants import STATE_DIR
from osctl.models.services import ServicesState, SupervisorStatus


def services_file(root: Path) -> StateFile[ServicesState]:
    return StateFile(root / STATE_DIR / "services.json", ServicesState, Damage.LAST_GOOD, "the services state",
                     hint="remove it (osctl then forgets which services are disabled or stopped), "
                          "then run osctl boot")


def supervisor_file(root: Path) -> StateFile[SupervisorStatus]:
    return StateFile(root / STATE_DIR / "supervisor.json", SupervisorStatus, Damage.SET_ASIDE,
                     "the supervisor's status")


def read_services(root: Path) -> ServicesState:
    return services_file(root).load()


def write_services(root: Path, state: ServicesState) -> None:
    services_file(root).write(state)


def read_supervisor(root: Path) -> SupervisorStatus:
    return supervisor_file(root).load()


def write_supervisor(root: Path, status: SupervisorStatus) -> None:
    supervisor_file(root).write(status)
