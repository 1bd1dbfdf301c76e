"""Reading and writing the service state files under ``<root>/var/lib/osctl/``.

Both are small JSON documents written whole (``fsutil.atomic_write``). A damaged file is read
as the empty state rather than stopping a host from booting; the damage is reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from osctl.adapters import fsutil
from osctl.constants import STATE_DIR
from osctl.models.services import ServicesState, SupervisorStatus

M = TypeVar("M", bound=BaseModel)


def services_path(root: Path) -> Path:
    return root / STATE_DIR / "services.json"


def supervisor_path(root: Path) -> Path:
    return root / STATE_DIR / "supervisor.json"


def _read(path: Path, model: type[M]) -> M:
    text = fsutil.read_text(path)
    if text is None:
        return model()
    try:
        return model.model_validate_json(text)
    except ValidationError:
        return model()


def _write(path: Path, value: BaseModel) -> None:
    fsutil.atomic_write(path, json.dumps(value.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")


def read_services(root: Path) -> ServicesState:
    return _read(services_path(root), ServicesState)


def write_services(root: Path, state: ServicesState) -> None:
    _write(services_path(root), state)


def read_supervisor(root: Path) -> SupervisorStatus:
    return _read(supervisor_path(root), SupervisorStatus)


def write_supervisor(root: Path, status: SupervisorStatus) -> None:
    _write(supervisor_path(root), status)
