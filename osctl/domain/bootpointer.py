"""The boot pointer, ``<root>/boot/osctl/boot.json``: the one source of truth for what boots.

Written atomically with a last good copy kept beside it (``boot.json.prev``), so a torn or
corrupted file falls back to the previous pointer instead of leaving a host without one.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from osctl.adapters import fsutil
from osctl.constants import BOOT_DIR
from osctl.models.store import BootPointer


def pointer_path(root: Path) -> Path:
    return root / BOOT_DIR / "boot.json"


def read(root: Path) -> BootPointer:
    """The current pointer; the last good copy if the file is damaged; empty on a new host."""
    path = pointer_path(root)
    for candidate in (path, path.with_name(path.name + ".prev")):
        text = fsutil.read_text(candidate)
        if text is None:
            continue
        try:
            return BootPointer.model_validate_json(text)
        except ValidationError:
            continue
    return BootPointer()


def write(root: Path, pointer: BootPointer) -> None:
    """Replace the pointer, keeping the current good one as the fallback copy."""
    path = pointer_path(root)
    current = fsutil.read_text(path)
    if current is not None:
        try:
            BootPointer.model_validate_json(current)
            fsutil.atomic_write(path.with_name(path.name + ".prev"), current)
        except ValidationError:
            pass
    fsutil.atomic_write(path, json.dumps(pointer.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
