"""Signed TUF metadata made by hand with python-tuf, for tests and benches that must not depend
on ``osctl release``: real ECDSA P-256 keys (securesystemslib ``CryptoSigner``), real signatures,
the conventions of docs/trust.md (a target per version, named by the tag; its length and sha256
are the OS image manifest's; the floor as ``x-osctl-floor`` in the targets' signed part).

    repo = HandRepo()
    repo.sign("v1.4", manifest_bytes, repository="127.0.0.1:5000/osctl/os")
    repo.revoke("v1.2", "CVE-2026-1")
    files = repo.publish()          # {"1.root.json": b"...", "1.targets.json": ..., "timestamp.json": ...}
    repo.write_trusted(folder)      # what a host's metadata folder holds after a refresh

Each ``publish`` signs new targets, snapshot and timestamp metadata (version + 1 each).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import MetaFile, Metadata, Root, Snapshot, TargetFile, Targets, Timestamp

ROLES = ("root", "targets", "snapshot", "timestamp")
EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=90), "snapshot": timedelta(days=7),
          "timestamp": timedelta(days=1)}
FLOOR_FIELD = "x-osctl-floor"


def _in(delta: timedelta) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + delta


class HandRepo:
    """The four top-level roles, one key each, and the metadata they sign."""

    def __init__(self, *, root_extra: dict[str, Any] | None = None) -> None:
        self.signers = {role: CryptoSigner.generate_ecdsa() for role in ROLES}
        self.expiry = dict(EXPIRY)
        self.root = Metadata(Root(expires=_in(self.expiry["root"]), consistent_snapshot=True,
                                  unrecognized_fields=dict(root_extra or {})))
        for role, signer in self.signers.items():
            self.root.signed.add_key(signer.public_key, role)
        self.root.sign(self.signers["root"])
        self.targets = Metadata(Targets(expires=_in(self.expiry["targets"])))
        self.snapshot = Metadata(Snapshot(expires=_in(self.expiry["snapshot"])))
        self.timestamp = Metadata(Timestamp(expires=_in(self.expiry["timestamp"])))
        self.published = 0  # how many times publish() ran

    @property
    def root_bytes(self) -> bytes:
        return self.root.to_bytes()

    def sign(self, version: str, manifest: bytes, *, repository: str = "127.0.0.1:5000/osctl/os",
             media_type: str = "application/vnd.oci.image.manifest.v1+json") -> None:
        """``version`` becomes a target: the manifest's length and sha256, and the custom data."""
        digest = hashlib.sha256(manifest).hexdigest()
        custom = {"version": version, "repository": repository, "digest": f"sha256:{digest}",
                  "media_type": media_type}
        self.targets.signed.targets[version] = TargetFile(len(manifest), {"sha256": digest}, version,
                                                          unrecognized_fields={"custom": custom})

    def revoke(self, version: str, reason: str) -> None:
        custom = self.targets.signed.targets[version].custom
        custom["revoked"] = {"reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}

    def floor(self, version: str, reason: str) -> None:
        self.targets.signed.unrecognized_fields[FLOOR_FIELD] = {
            "version": version, "reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}

    def publish(self) -> dict[str, bytes]:
        """New targets, snapshot and timestamp, signed; every file a repository serves, by name."""
        targets, snapshot, timestamp = self.targets.signed, self.snapshot.signed, self.timestamp.signed
        step = 1 if self.published else 0  # the first publish is version 1 of each
        self.published += 1
        targets.version += step
        targets.expires = _in(self.expiry["targets"])
        snapshot.version += step
        snapshot.expires = _in(self.expiry["snapshot"])
        snapshot.meta["targets.json"] = MetaFile(targets.version)
        timestamp.version += step
        timestamp.expires = _in(self.expiry["timestamp"])
        timestamp.snapshot_meta = MetaFile(snapshot.version)
        for role, metadata in (("targets", self.targets), ("snapshot", self.snapshot), ("timestamp", self.timestamp)):
            metadata.signatures.clear()
            metadata.sign(self.signers[role])
        return {f"{self.root.signed.version}.root.json": self.root_bytes,
                f"{targets.version}.targets.json": self.targets.to_bytes(),
                f"{snapshot.version}.snapshot.json": self.snapshot.to_bytes(),
                "timestamp.json": self.timestamp.to_bytes()}

    def write_trusted(self, folder: Path) -> None:
        """The files a host's metadata folder holds after a refresh (``<root>/var/lib/osctl/tuf``)."""
        folder.mkdir(parents=True, exist_ok=True)
        for role, metadata in (("root", self.root), ("targets", self.targets), ("snapshot", self.snapshot),
                               ("timestamp", self.timestamp)):
            (folder / f"{role}.json").write_bytes(metadata.to_bytes())
