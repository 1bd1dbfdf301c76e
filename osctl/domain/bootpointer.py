"""The boot pointer, ``<root>/boot/osctl/boot.json``: the one source of truth for what boots.

It keeps its last good copy (``boot.json.bak``, written after it): a pointer damaged on disk is
replaced by that copy of the same pointer (never by an older one, which would silently undo a
committed upgrade) and repaired; with no usable copy it is a clear error, never an empty pointer
that would make the host forget what it runs.
"""

from __future__ import annotations

from pathlib import Path

from osctl.adapters.statefile import Damage, StateFile
from osctl.constants import BOOT_DIR, STATE_DIR
from osctl.models.store import BootPointer


def pointer_file(root: Path) -> StateFile[BootPointer]:
    return StateFile(root / BOOT_DIR / "boot.json", BootPointer, Damage.LAST_GOOD, "the boot pointer",
                     hint="restore it from a backup, or write the version that should boot into it "
                          f'({{"default": "vX.Y"}}); the stored versions are the records in {root / STATE_DIR / "store"}')


def pointer_path(root: Path) -> Path:
    return pointer_file(root).path


def read(root: Path) -> BootPointer:
    """The current pointer (repaired from its copy if damaged); empty on a new host."""
    return pointer_file(root).load()


def write(root: Path, pointer: BootPointer) -> None:
    """Replace the pointer (the commit point of a transaction), then its copy.

    Only ``domain.current`` calls this: the pointer, the services state and the loader files
    change together, in one order.
    """
    pointer_file(root).write(pointer)
