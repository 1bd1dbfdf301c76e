"""The store: the versions a host holds, usable without the network.

A version is stored when three things are complete: its images are in the engine, its folder
``<root>/var/lib/osctl/store/<version>/`` holds the manifest and boot artifacts, and its record
``<root>/var/lib/osctl/store/<version>.json`` names them. The record is written last, so a
pull interrupted at any point leaves no record, and a version without a record is never listed
as stored. Folders are staged under a temporary name and renamed into place whole.

The folders are kept off the EFI system partition: the ESP is small and holds only the versions
the loader may boot (``domain.esp``); the store keeps every stored version bootable offline.
Identical files of two versions (a kernel they share) are one file, hard-linked. Hosts set up
by an older osctl kept the folders in ``<root>/boot/osctl/``: they are read there until
``adopt_legacy`` moves them.
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
        self.legacy_dir = root / BOOT_DIR

    def record_path(self, version: str) -> Path:
        return self.records_dir / f"{version}.json"

    def _record_file(self, version: str) -> StateFile[StoreRecord]:
        """A damaged record is an error: the version must be pulled again, not guessed at."""
        return StateFile(self.record_path(version), StoreRecord, Damage.RAISE, "the store record",
                         hint=f"remove it and pull {version} again")

    def version_dir(self, version: str) -> Path:
        """The version's folder (the legacy one while a host set up by an older osctl has it)."""
        folder = self.records_dir / version
        legacy = self.legacy_dir / version
        return legacy if not folder.is_dir() and legacy.is_dir() else folder

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
        """Write ``name -> (source path, content)`` as the version's folder, whole or not at all.

        A file identical to one another stored version has (same name and sha256, checked on
        disk) is a hard link to it: ten versions sharing a kernel keep one copy.
        """
        self.records_dir.mkdir(parents=True, exist_ok=True)
        staging = self.records_dir / f"{PARTIAL}{version}-{os.getpid()}"
        out: list[BootFile] = []
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for name, (source, data) in files.items():
                digest = hashlib.sha256(data).hexdigest()
                if not _link(self._twin(version, name, digest, len(data)), staging / name):
                    fsutil.atomic_write(staging / name, data)
                out.append(BootFile(source=source, name=name, size=len(data), sha256=digest))
            final = self.records_dir / version
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            fsutil.fsync_dir(self.records_dir)
            shutil.rmtree(self.legacy_dir / version, ignore_errors=True)
        except OSError as exc:
            raise StateError(f"cannot write the boot files of {version} under {self.records_dir}: "
                             f"{exc.strerror or exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return out

    def _twin(self, version: str, name: str, digest: str, size: int) -> Path | None:
        """A stored file of another version with this very content, or None."""
        for record in self.records():
            for f in record.boot_files:
                if record.version != version and f.name == name and f.sha256 == digest and f.size == size:
                    path = self.version_dir(record.version) / name
                    if path.parent.parent == self.records_dir and fsutil.sha256_of(path) == digest:
                        return path
        return None

    def adopt_legacy(self) -> list[str]:
        """Move the folders an older osctl kept on the ESP (``<root>/boot/osctl/<version>/``) into
        the store; returns the versions moved. Copied whole under a staging name, renamed into
        place, and only then removed from the old place: a crash leaves one complete copy."""
        moved: list[str] = []
        if not self.legacy_dir.is_dir():
            return moved
        for old in sorted(self.legacy_dir.iterdir()):
            if not old.is_dir() or try_parse(old.name) is None or (self.records_dir / old.name).exists():
                continue
            staging = self.records_dir / f"{PARTIAL}{old.name}-{os.getpid()}"
            try:
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(old, staging)
                os.replace(staging, self.records_dir / old.name)
                fsutil.fsync_dir(self.records_dir)
                shutil.rmtree(old)
            except OSError as exc:
                raise StateError(f"cannot move {old} into {self.records_dir}: {exc.strerror or exc}") from exc
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            moved.append(old.name)
        return moved

    def save(self, record: StoreRecord) -> None:
        """Write the record: from this moment on, the version is stored."""
        self._record_file(record.version).write(record)

    def remove(self, version: str) -> None:
        """Forget a version: the record goes first, so a crash leaves it unstored, not broken."""
        try:
            self.record_path(version).unlink(missing_ok=True)
            if self.records_dir.is_dir():
                fsutil.fsync_dir(self.records_dir)
            shutil.rmtree(self.records_dir / version, ignore_errors=True)
            shutil.rmtree(self.legacy_dir / version, ignore_errors=True)
        except OSError as exc:
            raise StateError(f"cannot remove {version} from the store: {exc.strerror or exc}") from exc

    def clean_leftovers(self) -> list[str]:
        """Remove staging folders and version folders that no record claims (interrupted pulls)."""
        removed: list[str] = []
        for folder in (self.records_dir, self.legacy_dir):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                orphan = entry.is_dir() and try_parse(entry.name) is not None and not self.record_path(entry.name).exists()
                if (entry.name.startswith(PARTIAL) and entry.is_dir()) or orphan:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed


def _link(source: Path | None, target: Path) -> bool:
    """Hard-link ``source`` as ``target``; False when there is no source or links cannot be made."""
    if source is None:
        return False
    try:
        os.link(source, target)
    except OSError:
        return False
    return True
