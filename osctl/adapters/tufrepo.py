"""The release keys folder: TUF repository metadata built and signed with python-tuf.

Whoever publishes OS versions keeps one folder (``osctl release ... --keys DIR``)::

    DIR/root.json                   the current root metadata: the file hosts are given to trust
    DIR/keys/<role>/<keyid>.pem     private keys (PKCS#8 PEM, ECDSA P-256), files 0600, folders 0700
    DIR/metadata/                   the repository as published: every N.root.json, every
                                    N.targets.json and N.snapshot.json, timestamp.json, and the
                                    latest targets.json and snapshot.json under plain names

Only the four top-level roles exist (no delegations) and snapshots are consistent, so a client
fetches ``N.snapshot.json`` and ``N.targets.json`` by version: files of an older version stay
while a client may still be reading them, and nothing is ever rewritten under a published name
except ``timestamp.json``.

Changes are made in memory (``add_target``, ``revoke``, ``set_floor``, ``renew``, ``rotate``) and
then ``commit`` signs every role that changed, checks the result with python-tuf's own
verification (thresholds, the old root's signatures on a new root), and only then writes: a
missing key or a threshold not met leaves the folder as it was. Each file is replaced
atomically, the versioned files before the names that point at them, ``root.json`` and
``timestamp.json`` last. ``create`` builds a whole new folder beside the target and renames it
into place, so an interrupted ``init`` leaves no half-made keys folder.

This is the only module (with the host side's ``tufclient``) that imports tuf and
securesystemslib; callers see the typed values below.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Key
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    SPECIFICATION_VERSION,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from osctl.adapters.fsutil import atomic_write, fsync_dir, read_bytes
from osctl.adapters.locking import exclusive
from osctl.errors import HostLocked, NotFoundError, StateError, TrustError, UsageError
from osctl.models.refs import Digest

ROLES = ("root", "targets", "snapshot", "timestamp")
EXPIRY = {  # how long each role's metadata is valid after it is signed (docs/trust.md)
    "root": timedelta(days=365),  # signed with offline keys, rarely
    "targets": timedelta(days=90),  # what exists: changes with each release
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),  # how fast hosts notice a freeze; re-signed by a timer
}
FLOOR_FIELD = "x-osctl-floor"  # in targets' signed part: versions below it count as revoked
MAX_ROOT_KEYS = 16
_KEYID = re.compile(r"[0-9a-f]{64}")
_PRETTY = JSONSerializer(compact=False)


# -- typed values ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetFacts:
    """What signing a version needs to know of its OS image: the manifest as the registry serves it."""

    version: str
    repository: str
    digest: Digest  # sha256 of the manifest bytes
    length: int  # the manifest's length in bytes
    media_type: str


@dataclass(frozen=True)
class SignedTarget:
    """One version as the targets metadata lists it."""

    version: str
    digest: Digest
    length: int
    media_type: str | None = None
    repository: str | None = None
    revoked: str | None = None  # the reason given at revoke
    revoked_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest, "length": self.length,
                "media_type": self.media_type, "repository": self.repository,
                "revoked": self.revoked is not None, "revoked_reason": self.revoked, "revoked_at": self.revoked_at}


@dataclass(frozen=True)
class Floor:
    """The anti-rollback index: every version below ``version`` is revoked, for ``reason``."""

    version: str
    reason: str | None
    at: str


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: datetime
    threshold: int
    keyids: tuple[str, ...]
    keys_here: int  # how many of its private keys this folder holds (root keys may live offline)

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "version": self.version, "expires": iso(self.expires),
                "threshold": self.threshold, "keyids": list(self.keyids), "keys_here": self.keys_here}


@dataclass(frozen=True)
class RepositoryStatus:
    roles: tuple[RoleStatus, ...]
    targets: tuple[SignedTarget, ...]  # sorted by name
    floor: Floor | None


def iso(moment: datetime) -> str:
    """``2026-11-29T10:00:00Z``: the form TUF metadata uses, and the one osctl prints."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- the folder ------------------------------------------------------------------------------
class ReleaseRepository:
    """One release keys folder, loaded; changed in memory; ``commit`` signs and writes."""

    def __init__(self, path: Path, root: Metadata[Root], targets: Metadata[Targets],
                 snapshot: Metadata[Snapshot], timestamp: Metadata[Timestamp]) -> None:
        self.path = path
        self._md: dict[str, Metadata[Any]] = {"root": root, "targets": targets, "snapshot": snapshot,
                                              "timestamp": timestamp}
        self._dirty: set[str] = set()
        self._expiry: dict[str, timedelta] = {}
        self._signers: dict[str, list[CryptoSigner]] = {}  # loaded or made, by role
        self._new_keys: dict[str, list[CryptoSigner]] = {}  # made by rotate, written at commit
        self._old_root: Metadata[Root] | None = None  # the root a rotated root must also satisfy
        self._old_root_signers: list[CryptoSigner] = []
        self._retired: list[Path] = []  # private keys no root names any more, removed after commit

    # -- making and opening --------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, root_keys: int = 1, root_threshold: int = 1,
               now: datetime | None = None) -> ReleaseRepository:
        """A new keys folder at ``path`` (absent or empty): keys for the four roles, version 1 of
        each role's metadata (no targets yet), ``root.json``.

        Everything is made in a hidden sibling folder and renamed into place, so the folder
        appears whole or not at all; an existing keys folder is never overwritten.
        """
        if not 1 <= root_keys <= MAX_ROOT_KEYS:
            raise UsageError(f"--root-keys must be between 1 and {MAX_ROOT_KEYS}, not {root_keys}")
        if not 1 <= root_threshold <= root_keys:
            raise UsageError(f"--root-threshold must be between 1 and the number of root keys ({root_keys}), "
                             f"not {root_threshold}")
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"{path} already exists and is not an empty folder",
                             hint="init makes a new keys folder; the other release commands use an existing one")
        now = now or utcnow()
        signers = {role: [CryptoSigner.generate_ecdsa() for _ in range(root_keys if role == "root" else 1)]
                   for role in ROLES}
        root = Root(expires=now + EXPIRY["root"], consistent_snapshot=True)
        for role, role_signers in signers.items():
            for signer in role_signers:
                root.add_key(signer.public_key, role)
        root.roles["root"].threshold = root_threshold
        repo = cls(path, Metadata(root), Metadata(Targets(expires=now + EXPIRY["targets"])),
                   Metadata(Snapshot(expires=now + EXPIRY["snapshot"])),
                   Metadata(Timestamp(expires=now + EXPIRY["timestamp"])))
        repo._signers = signers
        for role in ROLES:
            repo._sign(role)
        repo._check()

        parent = path.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.init-", dir=parent))  # mode 0700
        except OSError as exc:
            raise StateError(f"cannot create {path}: {exc.strerror or exc}") from exc
        try:
            made = cls(staging, *(repo._md[role] for role in ROLES))
            for role, role_signers in signers.items():
                for signer in role_signers:
                    made._write_key(role, signer)
            made._write_metadata(ROLES)
            try:
                os.rename(staging, path)  # replaces an empty folder, refuses a non-empty one
            except OSError as exc:
                reason = "it is not empty" if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) else exc.strerror
                raise StateError(f"cannot create {path}: {reason}") from exc
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> ReleaseRepository:
        """The keys folder at ``path``; ``NotFoundError`` when it is not one."""
        path = Path(path)
        if not (path / "root.json").is_file():
            raise NotFoundError(f"{path} is not a release keys folder (no root.json)",
                                hint="make one with 'osctl release init --keys DIR', or pass the right --keys")
        root = _load(path / "root.json", Root)
        metadata = path / "metadata"
        return cls(path, root, _load(metadata / "targets.json", Targets),
                   _load(metadata / "snapshot.json", Snapshot), _load(metadata / "timestamp.json", Timestamp))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One release command per keys folder at a time: two would sign the same version twice.

        An ``flock`` on ``DIR/.lock``; the kernel drops it when the holder dies.
        """
        def busy(_fd: int) -> HostLocked:
            return HostLocked(f"another osctl release is using {self.path}", hint="wait for it to finish")

        with exclusive(self.path / ".lock", busy):
            yield

    # -- reading -------------------------------------------------------------------------------
    def targets(self) -> dict[str, SignedTarget]:
        """Every listed version (revoked ones included), by name."""
        return {name: _signed_target(name, info) for name, info in self._md["targets"].signed.targets.items()}

    def floor(self) -> Floor | None:
        value = self._md["targets"].signed.unrecognized_fields.get(FLOOR_FIELD)
        if not isinstance(value, dict) or not isinstance(value.get("version"), str):
            return None
        reason = value.get("reason")
        return Floor(value["version"], reason if isinstance(reason, str) else None, str(value.get("at") or ""))

    def role_version(self, role: str) -> int:
        return int(self._md[_role(role)].signed.version)

    def status(self) -> RepositoryStatus:
        root: Root = self._md["root"].signed
        roles = []
        for role in ROLES:
            keyids = tuple(root.roles[role].keyids)
            here = sum((self.path / "keys" / role / f"{keyid}.pem").is_file() for keyid in keyids)
            roles.append(RoleStatus(role, self._md[role].signed.version, self._md[role].signed.expires,
                                    root.roles[role].threshold, keyids, here))
        targets = tuple(target for _, target in sorted(self.targets().items()))
        return RepositoryStatus(tuple(roles), targets, self.floor())

    def files(self, *, every_version: bool) -> list[tuple[str, bytes]]:
        """What a repository serves, in the order to publish it: roots first (oldest first), then
        targets and snapshot, ``timestamp.json`` last, so a client reading meanwhile finds every
        file the timestamp it sees names. ``every_version``: also the older targets and snapshots
        (a static folder keeps them); otherwise only the current ones.
        """
        metadata = self.path / "metadata"
        found: dict[str, list[tuple[int, str]]] = {"root": [], "targets": [], "snapshot": []}
        for entry in metadata.iterdir():
            number, _, role = entry.name.removesuffix(".json").partition(".")
            if entry.name.endswith(".json") and number.isdigit() and role in found:
                found[role].append((int(number), entry.name))
        # A root newer than root.json is one a commit did not finish: never published.
        names = [name for number, name in sorted(found["root"]) if number <= self.role_version("root")]
        for role in ("targets", "snapshot"):
            current = f"{self.role_version(role)}.{role}.json"
            names += [name for _, name in sorted(found[role])] if every_version else [current]
        names.append("timestamp.json")
        out = []
        for name in names:
            data = read_bytes(metadata / name)
            if data is None:
                raise StateError(f"{metadata / name} is missing", hint="the keys folder was changed by hand")
            out.append((name, data))
        return out

    # -- changing (in memory until commit) ----------------------------------------------------
    def add_target(self, facts: TargetFacts) -> SignedTarget:
        """List ``facts.version`` as a target: length and sha256 of its manifest, and custom data
        that says which image it is (hosts resolve the version to this digest)."""
        custom = {"version": facts.version, "repository": facts.repository, "digest": str(facts.digest),
                  "media_type": facts.media_type}
        self._md["targets"].signed.targets[facts.version] = TargetFile(
            length=facts.length, hashes={"sha256": Digest(facts.digest).hex}, path=facts.version,
            unrecognized_fields={"custom": custom})
        self._dirty.add("targets")
        return self.targets()[facts.version]

    def revoke(self, version: str, reason: str, at: datetime) -> SignedTarget:
        """Mark a listed version revoked; it stays listed, so a host that sees the new metadata
        learns why it must not install or boot it (a removed target would only look unknown)."""
        info = self._md["targets"].signed.targets.get(version)
        if info is None:
            raise NotFoundError(f"{version} is not signed in {self.path}")
        custom = dict(info.custom) if isinstance(info.custom, dict) else {}
        custom["revoked"] = {"reason": reason, "at": iso(at)}
        info.unrecognized_fields["custom"] = custom
        self._dirty.add("targets")
        return self.targets()[version]

    def set_floor(self, version: str, reason: str | None, at: datetime) -> Floor:
        value: dict[str, str] = {"version": version, "at": iso(at)}
        if reason:
            value["reason"] = reason
        self._md["targets"].signed.unrecognized_fields[FLOOR_FIELD] = value
        self._dirty.add("targets")
        return Floor(version, reason or None, value["at"])

    def renew(self, role: str, expiry: timedelta | None = None) -> None:
        """Sign ``role`` again at commit with a new version and expiry (``expiry`` or its default)."""
        self._dirty.add(_role(role))
        if expiry is not None:
            self._expiry[role] = expiry

    def expires(self, role: str) -> datetime:
        return self._md[_role(role)].signed.expires

    def rotate(self, role: str) -> tuple[str, ...]:
        """New keys for ``role`` (as many as it has, same threshold); the new key ids.

        The root changes either way, so the current root keys must be here. A new root key set
        must also be accepted by the old one: the new root is signed by the old root keys and
        the new ones, which is how a host on the old root follows. For another role, the new
        root names its new key, and that role's metadata (and what depends on it) is signed
        again with it.
        """
        role = _role(role)
        root: Root = self._md["root"].signed
        if self._old_root is None:
            self._old_root = Metadata.from_bytes(self._md["root"].to_bytes())
        self._old_root_signers = self._signers_of("root") if role == "root" else []
        old = list(root.roles[role].keyids)
        count = len(old) if role == "root" else 1
        fresh = [CryptoSigner.generate_ecdsa() for _ in range(count)]
        for keyid in old:
            root.revoke_key(keyid, role)
            self._retired.append(self.path / "keys" / role / f"{keyid}.pem")
        for signer in fresh:
            root.add_key(signer.public_key, role)
        self._new_keys[role] = fresh
        self._signers[role] = fresh
        self._dirty.update({"root", role})
        return tuple(signer.public_key.keyid for signer in fresh)

    # -- signing and writing --------------------------------------------------------------------
    def commit(self, now: datetime | None = None) -> tuple[str, ...]:
        """Sign what changed (and what depends on it), check it, write it; the roles signed.

        targets changed -> a new snapshot; snapshot changed -> a new timestamp: each names the
        version of the one below it. Nothing is written unless every signature is made and
        python-tuf accepts the result.
        """
        now = now or utcnow()
        dirty = set(self._dirty)
        if not dirty:
            return ()
        if "targets" in dirty:
            dirty.add("snapshot")
        if "snapshot" in dirty:
            dirty.add("timestamp")
        order = tuple(role for role in ROLES if role in dirty)
        for role in order:
            signed = self._md[role].signed
            signed.version += 1
            signed.expires = now + self._expiry.get(role, EXPIRY[role])
            if role == "snapshot":
                signed.meta["targets.json"] = MetaFile(version=self._md["targets"].signed.version)
            elif role == "timestamp":
                signed.snapshot_meta = MetaFile(version=self._md["snapshot"].signed.version)
            self._sign(role)
        self._check()
        for role, signers in self._new_keys.items():
            for signer in signers:
                self._write_key(role, signer)
        self._write_metadata(order)
        for retired in self._retired:
            with contextlib.suppress(FileNotFoundError):
                retired.unlink()
        self._dirty.clear()
        self._expiry.clear()
        self._new_keys.clear()
        self._retired.clear()
        self._old_root, self._old_root_signers = None, []
        return order

    def _sign(self, role: str) -> None:
        """Sign with every key of ``role`` at hand (threshold signing: as many as there are);
        whether that is enough is ``_check``'s question, answered by python-tuf."""
        md = self._md[role]
        signers = self._signers_of(role) + (self._old_root_signers if role == "root" else [])
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def _check(self) -> None:
        """python-tuf's verification of what was signed: every role meets its threshold under the
        new root, and a new root also under the root it replaces."""
        root: Root = self._md["root"].signed
        checks = [(root, role) for role in ROLES]
        if self._old_root is not None and self._old_root.signed.version < root.version:
            checks.append((self._old_root.signed, "root"))
        for delegator, role in checks:
            try:
                delegator.verify_delegate(role, self._md[role].signed_bytes, self._md[role].signatures)
            except UnsignedMetadataError:
                role_def: Role = delegator.roles[role]
                here = len([k for k in role_def.keyids if k in self._md[role].signatures])
                which = "the root it replaces" if delegator is not root else f"the {role} role"
                raise TrustError(
                    f"cannot sign {role} metadata: {which} needs {role_def.threshold} of its "
                    f"{len(role_def.keyids)} keys and {here} {'is' if here == 1 else 'are'} in "
                    f"{self.path / 'keys' / role}", hint="bring the missing private keys (PEM files named by key id) "
                                                         "into that folder; nothing was changed") from None

    def _signers_of(self, role: str) -> list[CryptoSigner]:
        """The private keys of ``role`` that this folder holds and the current root names."""
        if role not in self._signers:
            root: Root = self._md["root"].signed
            found = []
            for keyid in root.roles[role].keyids:
                if not _KEYID.fullmatch(keyid):
                    raise UsageError(f"{self.path / 'root.json'} names a key id that is not one: {keyid[:70]!r}")
                signer = self._load_key(role, root.get_key(keyid))
                if signer is not None:
                    found.append(signer)
            self._signers[role] = found
        return self._signers[role]

    def _load_key(self, role: str, public: Key) -> CryptoSigner | None:
        """The signer for ``public`` from ``keys/<role>/<keyid>.pem``; None when the file is absent.

        A key file others may read is refused, as ssh refuses one: a release key that leaked
        vouches for whatever its holder wants.
        """
        path = self.path / "keys" / role / f"{public.keyid}.pem"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read the key {path}: {exc.strerror or exc}") from exc
        try:
            mode = os.fstat(fd).st_mode & 0o777
            if mode & 0o077:
                raise UsageError(f"the private key {path} is readable by others (mode {mode:04o}); refused",
                                 hint=f"chmod 600 {path}, and consider rotating it: osctl release rotate {role}")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                pem = handle.read(1 << 16)
        finally:
            os.close(fd)
        try:
            return CryptoSigner(load_pem_private_key(pem, None), public)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path} does not hold the {role} key {public.keyid[:12]}... that root.json names "
                             f"({str(exc)[:80]})") from None

    def _write_key(self, role: str, signer: CryptoSigner) -> None:
        folder = self.path / "keys" / role
        for level in (self.path / "keys", folder):
            try:
                level.mkdir(mode=0o700, exist_ok=True)
                os.chmod(level, 0o700)
            except OSError as exc:
                raise StateError(f"cannot create {level}: {exc.strerror or exc}") from exc
        atomic_write(folder / f"{signer.public_key.keyid}.pem", signer.private_bytes, mode=0o600)

    def _write_metadata(self, roles: tuple[str, ...]) -> None:
        """Write the signed ``roles``: versioned names first, then the plain names that point at
        them, ``root.json`` and ``timestamp.json`` last (the folder is read through those)."""
        metadata = self.path / "metadata"
        data = {role: self._md[role].to_bytes(_PRETTY) for role in roles}
        later: list[tuple[Path, bytes]] = []
        for role in roles:
            if role != "timestamp":
                atomic_write(metadata / f"{self._md[role].signed.version}.{role}.json", data[role])
            if role in ("targets", "snapshot"):
                later.append((metadata / f"{role}.json", data[role]))
        if "root" in data:
            later.append((self.path / "root.json", data["root"]))
        if "timestamp" in data:
            later.append((metadata / "timestamp.json", data["timestamp"]))
        for path, body in later:
            atomic_write(path, body)


def _role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"{role!r} is not a role; the roles are {', '.join(ROLES)}")
    return role


def _load(path: Path, kind: type[Any]) -> Metadata[Any]:
    data = read_bytes(path)
    if data is None:
        raise StateError(f"{path} is missing", hint="the keys folder is incomplete; restore it from a backup")
    try:
        md = Metadata.from_bytes(data)
    except (DeserializationError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{path} is not TUF metadata: {str(exc)[:120]}") from None
    if not isinstance(md.signed, kind):
        raise UsageError(f"{path} holds {md.signed.type} metadata, not {kind.type}")
    if md.signed.spec_version.split(".")[0] != SPECIFICATION_VERSION[0]:
        raise UsageError(f"{path} is TUF {md.signed.spec_version} metadata; osctl writes {'.'.join(SPECIFICATION_VERSION)}")
    return md


def _signed_target(name: str, info: TargetFile) -> SignedTarget:
    custom = info.custom if isinstance(info.custom, dict) else {}
    revoked = custom.get("revoked") if isinstance(custom.get("revoked"), dict) else None
    digest = custom.get("digest")
    try:
        digest = Digest(digest) if digest else Digest(f"sha256:{info.hashes.get('sha256', '')}")
    except ValueError:
        digest = Digest("sha256:" + "0" * 64)  # not osctl's metadata: shown, never installed from here

    def text(key: str) -> str | None:
        value = custom.get(key)
        return value if isinstance(value, str) else None

    return SignedTarget(name, digest, info.length, text("media_type"), text("repository"),
                        str(revoked.get("reason") or "") if revoked else None,
                        str(revoked.get("at") or "") if revoked else None)
