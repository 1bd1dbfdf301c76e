"""Making a version current: the one place where what boots and what runs are written down.

Three records say which version a host is on, and they change together, always in this order:

1. the boot pointer: the commit point, the one source of truth of what boots;
2. the services state: which version's set the supervisor keeps up, and how;
3. the boot loader's files on the ESP: rendered from the store and the pointer on disk, whole
   (``domain.bootloader``: only the versions the loader may boot are there).

A crash between two of them leaves the pointer ahead of the rest, never behind: recovery (and
the next call here) reads the pointer and rewrites what follows it. The loader files are always
rendered from what is on disk, so any call here also repairs them after the store changed (a
pull, a prune) or after an earlier crash.
"""

from __future__ import annotations

from osctl.domain import bootloader, bootpointer, esp, servicestate
from osctl.domain.journal import crash_point
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import StateError
from osctl.models.services import ServicesState
from osctl.models.store import BootPointer


def make_current(settings: Settings, *, pointer: BootPointer | None = None,
                 services: ServicesState | None = None) -> BootPointer:
    """Write the new pointer and services state (those given), then the loader files; returns
    the pointer in force.

    With neither, it only brings the loader files in line with the store and the pointer. The
    ESP's files for a new pointer are placed before the pointer is written: a full ESP refuses
    the change before it is committed (``prepare_boot``).
    """
    root = settings.root
    if pointer is not None:
        prepare_boot(settings, pointer)
        bootpointer.write(root, pointer)
        crash_point("commit:pointer-written")
    else:
        pointer = bootpointer.read(root)
        prepare_boot(settings, pointer)
    if services is not None:
        servicestate.write_services(root, services)
    bootloader.write(settings.esp, Store(root), pointer, menu_timeout=settings.file.boot.menu_timeout)
    return pointer


def prepare_boot(settings: Settings, pointer: BootPointer) -> None:
    """Place on the ESP the kernels and initrds that ``pointer`` would boot, or raise (nothing
    half-written) when they do not fit: the check a transaction makes before it swaps anything."""
    _require_esp(settings)
    store = Store(settings.root)
    esp.Esp(settings.esp).place(store, [record for record, _ in bootloader.bootable(store.records(), pointer)])


def _require_esp(settings: Settings) -> None:
    """A configured ESP must be there: osctl never creates one, since writing to the folder an
    unmounted partition leaves behind would give the loader nothing (the default, ``<root>/boot``,
    is created with the root's other folders)."""
    configured = settings.file.boot.esp
    if configured and not settings.esp.is_dir():
        raise StateError(f"the EFI system partition {configured} (boot.esp) is not a folder",
                         hint="mount it there, or correct boot.esp in the settings file")
