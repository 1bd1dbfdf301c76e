"""Store records made directly on disk, for unit tests of what reads them (no engine, no pull)."""

from __future__ import annotations

from osctl.domain.store import Store
from osctl.models.store import StoreRecord


def record(version: str, **extra: object) -> StoreRecord:
    return StoreRecord.model_validate({"version": version, "repository": "127.0.0.1:5000/osctl/os",
                                       "digest": "sha256:" + "a" * 64, "image_id": "sha256:" + "b" * 64,
                                       "size": 1, "stored_at": "2026-11-26T00:00:00+00:00", **extra})


def store_version(store: Store, version: str, **extra: object) -> StoreRecord:
    """``version`` stored as a pull leaves it: its boot files staged, then its record saved."""
    files = store.stage_boot_files(version, {"vmlinuz": ("/boot/vmlinuz", b"kernel " + version.encode())})
    rec = record(version, boot_files=[f.model_dump() for f in files], **extra)
    store.save(rec)
    return rec
