"""A test-side release publisher: real TUF metadata for one OS image repository, by hand.

Independent of ``osctl release`` on purpose: hosts are checked against metadata built straight
with python-tuf (``tuf.api.metadata``) and securesystemslib signers, in the layout the project
fixed (docs/trust.md): top-level roles only, consistent snapshots, ECDSA P-256 keys, one OCI
artifact per metadata file name in ``<image>-tuf`` (``osctl.adapters.ociartifact.put_file``),
target name = version tag, custom ``{version, repository, digest, media_type}``, ``revoked``
in a target's custom data, the floor as the targets' signed field ``x-osctl-floor``.

Every file published is kept (``published``), so that a test can serve an older one again
(``replay``): what a compromised registry or a stale mirror would do. ``root_file`` is the
first root, the one a host is given to trust. Only the root is published until the first
``sign``, which publishes version 1 of targets, snapshot and timestamp.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp

from osctl.adapters.ociartifact import put_file
from osctl.adapters.registry import Registry

ROLES = ("root", "targets", "snapshot", "timestamp")
FLOOR_FIELD = "x-osctl-floor"
EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=90), "snapshot": timedelta(days=7),
          "timestamp": timedelta(days=1)}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class ReleaseRepo:
    """The release keys and metadata of ``image`` (``registry/name``), published beside it."""

    def __init__(self, image: str, folder: Path, *, root_keys: int = 1, root_threshold: int = 1) -> None:
        self.image = image
        self.images = Registry(image)
        self.metadata = Registry(image + "-tuf", push=True)
        self.published: dict[str, list[bytes]] = {}
        self.keys: dict[str, list[Signer]] = {
            role: [CryptoSigner.generate_ecdsa() for _ in range(root_keys if role == "root" else 1)]
            for role in ROLES}
        self._retired_root_keys: list[Signer] = []
        root = Root(expires=_now() + EXPIRY["root"], consistent_snapshot=True)
        for role, signers in self.keys.items():
            for signer in signers:
                root.add_key(signer.public_key, role)
        root.roles["root"].threshold = root_threshold
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=_now() + EXPIRY["targets"]))
        self.snapshot = Metadata(Snapshot(expires=_now() + EXPIRY["snapshot"]))
        self.timestamp_md = Metadata(Timestamp(expires=_now() + EXPIRY["timestamp"]))
        self._sign_root()
        self._put(f"{self.root.signed.version}.root.json", self.root.to_bytes())
        self.root_file = folder / "root.json"
        folder.mkdir(parents=True, exist_ok=True)
        self.root_file.write_bytes(self.root.to_bytes())

    # ------------------------------------------------------------------ what a publisher does

    def sign(self, *versions: str) -> None:
        """Make each version a target (its manifest's length and sha256 from the registry), publish."""
        for version in versions:
            body, media_type = self.images.manifest_body(version)
            digest = hashlib.sha256(body).hexdigest()
            custom = {"version": version, "repository": self.image, "digest": f"sha256:{digest}",
                      "media_type": media_type}
            self.targets.signed.targets[version] = TargetFile(len(body), {"sha256": digest}, version,
                                                              unrecognized_fields={"custom": custom})
        self._publish_targets()

    def revoke(self, version: str, reason: str) -> None:
        """The version stays listed, with ``custom.revoked = {reason, at}``."""
        target = self.targets.signed.targets[version]
        target.unrecognized_fields["custom"]["revoked"] = {"reason": reason, "at": _iso(_now())}
        self._publish_targets()

    def floor(self, version: str, reason: str) -> None:
        """Every version below ``version`` counts as revoked (the anti-rollback index)."""
        self.targets.signed.unrecognized_fields[FLOOR_FIELD] = {"version": version, "reason": reason,
                                                                "at": _iso(_now())}
        self._publish_targets()

    def timestamp(self, *, expires: datetime | None = None, snapshot_version: int | None = None,
                  signers: list[Signer] | None = None) -> bytes:
        """A new timestamp (version + 1), published; its bytes.

        ``expires`` (default: a day from now; in the past for a freeze), ``snapshot_version`` (the
        snapshot it names; default the current one), ``signers`` (default the timestamp key).
        """
        signed = self.timestamp_md.signed
        signed.version += 1 if "timestamp.json" in self.published else 0  # the first one is version 1
        signed.expires = (expires or _now() + EXPIRY["timestamp"]).replace(microsecond=0)
        signed.snapshot_meta = MetaFile(snapshot_version or self.snapshot.signed.version)
        self.timestamp_md.signatures.clear()
        for signer in signers or self.keys["timestamp"]:
            self.timestamp_md.sign(signer, append=True)
        data = self.timestamp_md.to_bytes()
        self._put("timestamp.json", data)
        return data

    def rotate(self, role: str, *, old_root_signers: int | None = None) -> int:
        """New keys for ``role``; a new root version signed by the old and the new root keys,
        published; the role's metadata re-signed and published. The new root's version.

        ``old_root_signers``: how many of the old root keys sign it (default all): fewer than
        the threshold makes a root hosts must refuse (``resign_root`` repairs it).
        """
        old_root = list(self.keys["root"])
        root = self.root.signed
        count = len(self.keys[role])
        for signer in self.keys[role]:
            root.revoke_key(signer.public_key.keyid, role)
        self.keys[role] = [CryptoSigner.generate_ecdsa() for _ in range(count)]
        for signer in self.keys[role]:
            root.add_key(signer.public_key, role)
        root.version += 1
        self._retired_root_keys = old_root
        self._sign_root(old_root[:old_root_signers] if old_root_signers is not None else old_root)
        self._put(f"{root.version}.root.json", self.root.to_bytes())
        if role != "root":
            self._publish_targets()  # signed by the role's new key (targets, snapshot, timestamp alike)
        return root.version

    def resign_root(self, *, old_root_signers: int | None = None) -> None:
        """Publish the current root again, signed by ``old_root_signers`` of the old root keys
        (default all) and the new ones."""
        old = self._retired_root_keys
        self._sign_root(old[:old_root_signers] if old_root_signers is not None else old)
        self._put(f"{self.root.signed.version}.root.json", self.root.to_bytes())

    def replay(self, name: str, index: int = -2) -> bytes:
        """Serve an earlier published version of the file ``name`` again (default: the one before last)."""
        data = self.published[name][index]
        put_file(self.metadata, name, data)
        self.published[name].append(data)
        return data

    # ------------------------------------------------------------------ reading back

    def signed_digest(self, version: str) -> str:
        return f"sha256:{self.targets.signed.targets[version].hashes['sha256']}"

    def root_bytes(self, version: int) -> bytes:
        return self.published[f"{version}.root.json"][-1]

    # ------------------------------------------------------------------ publishing

    def _sign_root(self, old: list[Signer] | None = None) -> None:
        self.root.signatures.clear()
        signers = {s.public_key.keyid: s for s in [*(old or []), *self.keys["root"]]}
        for signer in signers.values():
            self.root.sign(signer, append=True)

    def _publish_targets(self) -> None:
        """targets, then snapshot, then timestamp: each a new version, signed and published."""
        first = "timestamp.json" not in self.published  # the first of each is version 1
        self.targets.signed.version += 0 if first else 1
        self.targets.signed.expires = _now() + EXPIRY["targets"]
        self._sign(self.targets, "targets")
        self._put(f"{self.targets.signed.version}.targets.json", self.targets.to_bytes())
        snap = self.snapshot.signed
        snap.version += 0 if first else 1
        snap.expires = _now() + EXPIRY["snapshot"]
        snap.meta["targets.json"] = MetaFile(self.targets.signed.version)
        self._sign(self.snapshot, "snapshot")
        self._put(f"{snap.version}.snapshot.json", self.snapshot.to_bytes())
        self.timestamp()

    def _sign(self, metadata: Metadata, role: str) -> None:
        metadata.signatures.clear()
        for signer in self.keys[role]:
            metadata.sign(signer, append=True)

    def _put(self, name: str, data: bytes) -> None:
        put_file(self.metadata, name, data)
        self.published.setdefault(name, []).append(data)


def root_version_of(data: bytes) -> int:
    return int(json.loads(data)["signed"]["version"])
