"""The kernels and initrds on the EFI system partition (ESP), where the boot loader reads them.

An ESP is small (often 100 to 500 MB) and a version's boot files take about 10 MB, so it holds
them only for the versions the loader may boot (the default, the previous version, a trial and
pinned versions), each distinct file once: files are named by their content,
``osctl/files/<name>-<first 32 hex digits of its sha256>``, so versions that share a kernel
share one file. The store keeps every stored version's files off the ESP (``domain.store``).

FAT promises no atomic rename, so safety comes from the order of writes (docs/boot.md): new
files are placed, and checked, before any entry names them (``place``); files no entry names
any more are removed only after the entries changed (``sweep``).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

from osctl.adapters import fsutil
from osctl.domain.store import Store
from osctl.errors import StateError
from osctl.models.store import BootFile, StoreRecord

FILES_DIR = "osctl/files"
LOADER_FILES = ("vmlinuz", "initrd.img")  # what an entry names; release.yaml and the rest stay in the store
CLUSTER = 4096  # each file is counted in whole 4 KiB clusters, the most a small FAT32 uses
SLACK = 64 * 1024  # room for the entries and loader.conf written after the files


def file_name(f: BootFile) -> str:
    return f"{f.name}-{f.sha256[:32]}"


def loader_path(f: BootFile) -> str:
    """How a Boot Loader Specification entry names the file (a path from the ESP's top)."""
    return f"/{FILES_DIR}/{file_name(f)}"


def loader_files(record: StoreRecord) -> list[BootFile]:
    return [f for f in record.boot_files if f.name in LOADER_FILES]


def _size_on_disk(size: int) -> int:
    return -(-size // CLUSTER) * CLUSTER


class Esp:
    """The ESP mounted at ``path`` (a setting: ``boot.esp``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files_dir = path / FILES_DIR

    def place(self, store: Store, records: Iterable[StoreRecord]) -> None:
        """Make every loader file of ``records`` present and intact on the ESP, or change nothing.

        The free space is checked first: a clear error naming what is needed and what is free.
        A file already there is kept only if its content is the one its name says.
        """
        missing: dict[str, tuple[StoreRecord, BootFile]] = {}
        for record in records:
            for f in loader_files(record):
                target = self.files_dir / file_name(f)
                if file_name(f) not in missing and fsutil.sha256_of(target) != f.sha256:
                    missing[file_name(f)] = (record, f)
        if not missing:
            return
        needed = sum(_size_on_disk(f.size) for _, f in missing.values()) + SLACK
        try:
            self.files_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.files_dir).free
        except OSError as exc:
            raise StateError(f"cannot use the EFI system partition {self.path}: {exc.strerror or exc}",
                             hint="check the boot.esp setting and that the partition is mounted") from exc
        if needed > free:
            versions = ", ".join(sorted({r.version for r, _ in missing.values()}))
            raise StateError(f"the EFI system partition {self.path} has {_mib(free)} free, and the boot files "
                             f"of {versions} need {_mib(needed)}",
                             hint="free space on it (osctl prune, unpin versions), or give it more room")
        placed: list[Path] = []
        try:
            for name, (record, f) in missing.items():
                data = fsutil.read_bytes(store.version_dir(record.version) / f.name)
                if data is None or hashlib.sha256(data).hexdigest() != f.sha256:
                    raise StateError(f"the stored {f.name} of {record.version} is missing or damaged",
                                     hint=f"remove {record.version} (osctl prune) and pull it again")
                fsutil.atomic_write(self.files_dir / name, data)
                placed.append(self.files_dir / name)
        except StateError:
            for path in placed:  # nothing half-done: what this call added goes again
                path.unlink(missing_ok=True)
            raise

    def sweep(self, keep: set[str]) -> None:
        """Remove the files of ``FILES_DIR`` whose names are not in ``keep`` (and torn temporaries)."""
        if not self.files_dir.is_dir():
            return
        for path in self.files_dir.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
