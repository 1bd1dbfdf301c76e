"""Which loader entry started the running system, so that ``osctl boot`` knows what the loader did.

systemd-boot tells the booted system in the EFI variable ``LoaderEntrySelected`` (the entry id;
read under ``/sys/firmware/efi/efivars``: 4 bytes of attributes, then UTF-16LE, NUL-ended).
Without it (another loader, no UEFI), the kernel command line's ``osctl.version=`` still names
the version. Both locations are settings (``boot.efivars``, ``boot.kernel_cmdline``). When
neither names an osctl version (a container, a test host), the boot is not identified and osctl
counts trial boots itself, as it did before the loader could.

Both are outside input: read bounded, and only a name that parses as an osctl entry counts.
systemd-boot 252 lowercases entry ids (``osctl-v1.5-RC.conf`` is reported as
``osctl-v1.5-rc.conf``), so a version is matched to the stored ones without regard to case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from osctl.domain.bootloader import parse_entry
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.models.version import try_parse

LOADER_VENDOR = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"  # systemd's loader interface GUID
ENTRY_SELECTED = f"LoaderEntrySelected-{LOADER_VENDOR}"
MAX_VARIABLE = 4096
MAX_CMDLINE = 65536
_CMDLINE_VERSION = re.compile(r"(?:^|\s)osctl\.version=(\S+)")


@dataclass(frozen=True)
class Booted:
    version: str
    entry: str | None  # the loader's entry id, when the loader said which
    source: str  # where osctl learnt it


def booted(efivars: Path, kernel_cmdline: Path, known: Iterable[str] = ()) -> Booted | None:
    """What booted, or None when nothing names an osctl version; the version is spelt as in
    ``known`` (the stored versions) when one matches."""
    spelling = {version.lower(): version for version in known}
    entry = _entry_selected(efivars / ENTRY_SELECTED)
    if entry is not None:
        parsed = parse_entry(entry)
        if parsed is not None and try_parse(parsed.version) is not None:
            return Booted(spelling.get(parsed.version.lower(), parsed.version), entry, "LoaderEntrySelected")
    text = _read(kernel_cmdline, MAX_CMDLINE)
    if text is not None:
        found = _CMDLINE_VERSION.findall(text.decode("utf-8", "replace"))
        if found and try_parse(found[-1]) is not None:  # the last one wins, as in the kernel
            return Booted(spelling.get(found[-1].lower(), found[-1]), None, "the kernel command line")
    return None


def what_booted(settings: Settings) -> Booted | None:
    """``booted`` at the locations the host's settings name, matched to its stored versions."""
    sources = settings.file.boot
    return booted(Path(sources.efivars), Path(sources.kernel_cmdline),
                  [record.version for record in Store(settings.root).records()])


def _entry_selected(path: Path) -> str | None:
    raw = _read(path, MAX_VARIABLE)
    if raw is None or len(raw) < 6:
        return None
    text = raw[4:].decode("utf-16-le", "replace").split("\0", 1)[0].strip()
    return text or None


def _read(path: Path, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the file; None when it is absent, unreadable or larger."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None
