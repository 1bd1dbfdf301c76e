"""What a real boot loader reads: Boot Loader Specification entries and ``loader.conf``.

Written for systemd-boot and its Automatic Boot Assessment (docs/boot.md), on the ESP:

* ``loader/entries/osctl-<version>.conf`` for the default, the previous and pinned versions;
* ``loader/entries/osctl-<version>+<tries>.conf`` for a trial: the loader itself renames it
  ``+<left>-<done>`` before each try, and an entry with no tries left sorts last;
* each entry's ``sort-key`` puts the trial first and the default second, whichever version is
  newer, so that the loader tries the trial and, once its tries are spent, falls back to the
  default on its own, with no help from userspace;
* ``loader/loader.conf``: ``default osctl-*`` while a trial is pending (the first osctl entry in
  that order boots), else the default's entry by name.

The order of writes keeps the ESP bootable at each step, since FAT has no atomic rename: files
first, then entries, then ``loader.conf``, then what is no longer needed goes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from osctl.adapters import fsutil
from osctl.domain.esp import Esp, file_name, loader_files, loader_path
from osctl.domain.store import Store
from osctl.errors import StateError
from osctl.models.store import BootPointer, StoreRecord

ENTRIES = "loader/entries"
LOADER_CONF = "loader/loader.conf"
# osctl-<version>[+<left>[-<done>]][.conf]; a version tag never holds "+" (OCI tag grammar).
_ENTRY = re.compile(r"osctl-(?P<version>[A-Za-z0-9_.-]+?)(?:\+(?P<left>\d{1,4})(?:-(?P<done>\d{1,4}))?)?(?:\.conf)?")


class Role(Enum):
    """Why an entry is on the ESP; the value is its sort-key (the loader sorts by it first)."""

    TRIAL = "osctl-1-trial"
    DEFAULT = "osctl-2-default"
    PREVIOUS = "osctl-3-previous"
    PINNED = "osctl-4-pinned"


@dataclass(frozen=True)
class EntryName:
    """An osctl entry's file name (or loader entry id), with its boot counter if it has one."""

    version: str
    left: int | None = None  # tries left; None: not counted
    done: int = 0  # tries the loader made

    @property
    def counted(self) -> bool:
        return self.left is not None


def parse_entry(name: str) -> EntryName | None:
    """``osctl-v1.6+1-2.conf`` -> EntryName("v1.6", 1, 2); None for what is not osctl's."""
    match = _ENTRY.fullmatch(name)
    if match is None:
        return None
    left = match.group("left")
    return EntryName(match.group("version"), int(left) if left is not None else None, int(match.group("done") or 0))


def bootable(records: list[StoreRecord], pointer: BootPointer) -> list[tuple[StoreRecord, Role]]:
    """The versions the loader may boot, each once, with why: these alone are on the ESP."""
    stored = {r.version: r for r in records}
    chosen: dict[str, Role] = {}
    if pointer.trial and pointer.trial_tries > 0 and pointer.trial != pointer.default:
        chosen[pointer.trial] = Role.TRIAL
    for version, role in ((pointer.default, Role.DEFAULT), (pointer.previous, Role.PREVIOUS)):
        if version:
            chosen.setdefault(version, role)
    for record in records:
        if record.pinned:
            chosen.setdefault(record.version, Role.PINNED)
    return [(stored[v], role) for v, role in chosen.items() if v in stored]


def render_entry(record: StoreRecord, role: Role) -> str:
    files = {f.name: f for f in loader_files(record)}
    title = f"osctl {record.version}" + {Role.TRIAL: " (trial)", Role.PREVIOUS: " (previous)",
                                          Role.PINNED: " (pinned)"}.get(role, "")
    lines = [f"title      {title}", f"version    {record.version}", f"sort-key   {role.value}",
             f"linux      {loader_path(files['vmlinuz'])}"]
    if "initrd.img" in files:
        lines.append(f"initrd     {loader_path(files['initrd.img'])}")
    lines.append(f"options    {(record.cmdline + ' ').lstrip()}osctl.version={record.version}")
    return "\n".join(lines) + "\n"


def render_conf(entries: dict[str, Role], menu_timeout: int) -> str:
    default = next((name for name, role in entries.items() if role is Role.DEFAULT), None)
    lines = ["# written by osctl (docs/boot.md): edits are replaced", f"timeout {menu_timeout}", "editor no"]
    if Role.TRIAL in entries.values():
        lines.append("default osctl-*")  # the trial sorts first while it has tries, the default next
    elif default:
        lines.append(f"default {default}")
    return "\n".join(lines) + "\n"


def entries_on(esp: Path) -> dict[str, EntryName]:
    """osctl's entries on the ESP, by file name."""
    folder = esp / ENTRIES
    try:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    except OSError as exc:
        raise StateError(f"cannot read {folder}: {exc.strerror or exc}") from exc
    return {name: parsed for name in names if name.endswith(".conf") and (parsed := parse_entry(name))}


def trial_entry(esp: Path, version: str) -> tuple[str, EntryName] | None:
    """The counted entry of ``version`` on the ESP (its name as the loader left it), if any."""
    for name, parsed in sorted(entries_on(esp).items()):
        if parsed.version == version and parsed.counted:
            return name, parsed
    return None


def write(esp: Path, store: Store, pointer: BootPointer, *, menu_timeout: int = 3) -> None:
    """Make the ESP match the pointer: entries, then loader.conf, then removals. The files the
    entries name are placed first, by the caller (``domain.current.prepare_boot``)."""
    chosen = bootable(store.records(), pointer)
    wanted: dict[str, tuple[str, Role]] = {}
    for record, role in chosen:
        if role is Role.TRIAL:
            # The loader owns the counter: a trial entry keeps the name the loader gave it.
            found = trial_entry(esp, record.version)
            name = found[0] if found else f"osctl-{record.version}+{pointer.trial_tries}.conf"
        else:
            name = f"osctl-{record.version}.conf"
        wanted[name] = (render_entry(record, role), role)
    entries = esp / ENTRIES
    for name, (text, _) in wanted.items():
        if fsutil.read_text(entries / name) != text:
            fsutil.atomic_write(entries / name, text)
    conf = render_conf({name: role for name, (_, role) in wanted.items()}, menu_timeout)
    if fsutil.read_text(esp / LOADER_CONF) != conf:
        fsutil.atomic_write(esp / LOADER_CONF, conf)
    for stale in set(entries_on(esp)) - set(wanted):
        (entries / stale).unlink(missing_ok=True)
    Esp(esp).sweep({file_name(f) for record, _ in chosen for f in loader_files(record)})


def bless(esp: Path, version: str) -> None:
    """Drop the counter from the trial entry's name, as ``systemd-bless-boot`` does: the loader
    stops counting and the entry no longer sorts last once it would have had no tries left."""
    found = trial_entry(esp, version)
    if found is None:
        return
    entries = esp / ENTRIES
    try:
        os.replace(entries / found[0], entries / f"osctl-{version}.conf")
        fsutil.fsync_dir(entries)
    except OSError as exc:
        raise StateError(f"cannot bless {entries / found[0]}: {exc.strerror or exc}") from exc


def forget_trial(esp: Path, version: str) -> None:
    """Remove the counted entries of ``version`` (a spent or earlier trial): a trial staged anew
    starts with all its tries, under a new name."""
    for name, parsed in entries_on(esp).items():
        if parsed.version == version and parsed.counted:
            (esp / ENTRIES / name).unlink(missing_ok=True)
