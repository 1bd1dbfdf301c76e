"""Making a version current: the one place where what boots and what runs are written down.

Three records say which version a host is on, and they change together, always in this order:

1. the boot pointer: the commit point, the one source of truth of what boots;
2. the services state: which version's set the supervisor keeps up, and how;
3. the boot loader's files: rendered from the store and the pointer on disk, whole.

A crash between two of them leaves the pointer ahead of the rest, never behind: recovery (and
the next call here) reads the pointer and rewrites what follows it. The loader files are always
rendered from what is on disk, so any call here also repairs them after the store changed (a
pull, a prune) or after an earlier crash.
"""

from __future__ import annotations

from pathlib import Path

from osctl.domain import bootloader, bootpointer, servicestate
from osctl.domain.journal import crash_point
from osctl.domain.store import Store
from osctl.models.services import ServicesState
from osctl.models.store import BootPointer


def make_current(root: Path, *, pointer: BootPointer | None = None,
                 services: ServicesState | None = None) -> BootPointer:
    """Write the new pointer and services state (those given), then the loader files; returns
    the pointer in force.

    With neither, it only brings the loader files in line with the store and the pointer.
    """
    if pointer is not None:
        bootpointer.write(root, pointer)
        crash_point("commit:pointer-written")
    else:
        pointer = bootpointer.read(root)
    if services is not None:
        servicestate.write_services(root, services)
    bootloader.write(root, Store(root).records(), pointer)
    return pointer
