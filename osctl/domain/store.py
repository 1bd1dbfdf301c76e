"""The store: the versions a host holds, usable without the network.

A version is stored when three things are complete: its images are in the engine, its boot
folder ``<root>/boot/osctl/<version>/`` holds the manifest and boot artifacts, and its record
``<root>/var/lib/osctl/store/<version>.json`` names them. The record is written last, so a
pull interrupted at any point leaves no record, and a version without a record is never listed
as stored. Boot folders are staged under a temporary name and renamed into place whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from osctl.adapters import fsutil
from osctl.adapters.statefile import Damage, StateFile
from osctl.constants import BOOT_DIR, STATE_DIR
from osctl.errors import StateError
from osctl.models.store import BootFile, StoreRecord
from osctl.models.version import OsVersion, try_parse

PARTIAL = ".partial-"


class Store:
    """Stored versions of one host, under its root."""

    def __init__(self, root: Path) -> None:
        self.records_dir = root / STATE_DIR / "store"
        self.boot_dir = root / BOOT_DIR

    def record_path(self, version: str) -> Path:
        return self.records_dir / f"{version}.json"

    def _record_file(self, version: str) -> StateFile[StoreRecord]:
        """A damaged record is an error: the version must be pulled again, not guessed at."""
        return StateFile(self.record_path(version), StoreRecord, Damage.RAISE, "the store record",
                         hint=f"remove it and pull {version} again")

    def version_dir(self, version: str) -> Path:
        return self.boot_dir / version

    # -- reading ---------------------------------------------------------------------------
    def get(self, version: str) -> StoreRecord | None:
        """The record of a completely stored version, or None."""
        record = self._record_file(version).read()
        if record is None:
            return None
        if record.version != version:
            raise StateError(f"the store record {self.record_path(version)} names version {record.version}",
                             hint=f"remove it and pull {version} again")
        return record if self._complete(record) else None

    def records(self) -> list[StoreRecord]:
        """Every completely stored version, newest first."""
        found: list[tuple[OsVersion, StoreRecord]] = []
        if self.records_dir.is_dir():
            for path in self.records_dir.glob("*.json"):
                parsed = try_parse(path.stem)
                record = self.get(path.stem) if parsed else None
                if parsed and record:
                    found.append((parsed, record))
        return [record for _, record in sorted(found, key=lambda pair: pair[0], reverse=True)]

    def _complete(self, record: StoreRecord) -> bool:
        folder = self.version_dir(record.version)
        return all((folder / f.name).is_file() and (folder / f.name).stat().st_size == f.size
                   for f in record.boot_files)

    # -- writing ---------------------------------------------------------------------------
    def stage_boot_files(self, version: str, files: dict[str, tuple[str, bytes]]) -> list[BootFile]:
        """Write ``name -> (source path, content)`` as the version's boot folder, whole or not at all."""
        self.boot_dir.mkdir(parents=True, exist_ok=True)
        staging = self.boot_dir / f"{PARTIAL}{version}-{os.getpid()}"
        out: list[BootFile] = []
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for name, (source, data) in files.items():
                fsutil.atomic_write(staging / name, data)
                out.append(BootFile(source=source, name=name, size=len(data),
                                    sha256=hashlib.sha256(data).hexdigest()))
            final = self.version_dir(version)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            fsutil.fsync_dir(self.boot_dir)
        except OSError as exc:
            raise StateError(f"cannot write the boot files of {version} under {self.boot_dir}: "
                             f"{exc.strerror or exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return out

    def save(self, record: StoreRecord) -> None:
        """Write the record: from this moment on, the version is stored."""
        self._record_file(record.version).write(record)

    def remove(self, version: str) -> None:
        """Forget a version: the record goes first, so a crash leaves it unstored, not broken."""
        try:
            self.record_path(version).unlink(missing_ok=True)
            if self.records_dir.is_dir():
                fsutil.fsync_dir(self.records_dir)
            shutil.rmtree(self.version_dir(version), ignore_errors=True)
        except OSError as exc:
            raise StateError(f"cannot remove {version} from the store: {exc.strerror or exc}") from exc

    def clean_leftovers(self) -> list[str]:
        """Remove staging folders and boot folders that no record claims (from interrupted pulls)."""
        removed: list[str] = []
        if not self.boot_dir.is_dir():
            return removed
        for entry in self.boot_dir.iterdir():
            orphan = entry.is_dir() and try_parse(entry.name) is not None and not self.record_path(entry.name).exists()
            if entry.name.startswith(PARTIAL) or orphan:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed
