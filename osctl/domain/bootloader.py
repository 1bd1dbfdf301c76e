"""What a real boot loader reads: Boot Loader Specification entries and loader.conf.

``<root>/boot/loader/entries/osctl-<version>.conf`` for every stored version, and
``<root>/boot/loader/loader.conf`` naming the entry that boots next. Rendered from the store
and the boot pointer whenever either changes; each file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from osctl.adapters import fsutil
from osctl.models.store import BootPointer, StoreRecord


def entry_name(version: str) -> str:
    return f"osctl-{version}.conf"


def render_entry(record: StoreRecord) -> str:
    names = {f.name for f in record.boot_files}
    lines = [f"title      osctl {record.version}", f"version    {record.version}",
             f"linux      /osctl/{record.version}/vmlinuz"]
    if "initrd.img" in names:
        lines.append(f"initrd     /osctl/{record.version}/initrd.img")
    lines.append(f"options    {(record.cmdline + ' ').lstrip()}osctl.version={record.version}")
    return "\n".join(lines) + "\n"


def write(root: Path, records: list[StoreRecord], pointer: BootPointer) -> None:
    """Make the loader files match the store and the pointer (stale entries removed)."""
    entries = root / "boot" / "loader" / "entries"
    wanted = {entry_name(r.version): render_entry(r) for r in records}
    for name, text in wanted.items():
        if fsutil.read_text(entries / name) != text:
            fsutil.atomic_write(entries / name, text)
    if entries.is_dir():
        for stale in entries.glob("osctl-*.conf"):
            if stale.name not in wanted:
                stale.unlink(missing_ok=True)
    default = pointer.next_boot
    conf = f"default {entry_name(default)}\ntimeout 3\n" if default else "timeout 3\n"
    if fsutil.read_text(root / "boot" / "loader" / "loader.conf") != conf:
        fsutil.atomic_write(root / "boot" / "loader" / "loader.conf", conf)
