"""The boot pointer, ``<root>/boot/osctl/boot.json``: the one source of truth for what boots.

Written atomically, then copied to ``boot.json.bak``: a pointer damaged on disk is replaced by
that last good copy of the same pointer (never by an older one, which would silently undo a
committed upgrade), and repaired.
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
    """The current pointer; its last good copy if the file is damaged; empty on a new host."""
    path = pointer_path(root)
    backup = path.with_name(path.name + ".bak")
    text = fsutil.read_text(path)
    if text is not None:
        try:
            return BootPointer.model_validate_json(text)
        except ValidationError:
            pass
    saved = fsutil.read_text(backup)
    if saved is None:
        return BootPointer()
    try:
        pointer = BootPointer.model_validate_json(saved)
    except ValidationError:
        return BootPointer()
    if text is not None:  # repair the damaged pointer from its copy
        fsutil.atomic_write(path, saved)
    return pointer


def write(root: Path, pointer: BootPointer) -> None:
    """Replace the pointer (the commit point of a transaction), then its copy."""
    path = pointer_path(root)
    data = json.dumps(pointer.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    fsutil.atomic_write(path, data)
    fsutil.atomic_write(path.with_name(path.name + ".bak"), data)
