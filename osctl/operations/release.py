"""``osctl release``: what the people who publish OS versions do with their release keys.

Each command changes the keys folder (``osctl.adapters.tufrepo``), then publishes: the metadata
files go to the registry as OCI artifacts in ``<image>-tuf`` (one tag per file name, so a host
needs nothing but its registry), and with ``out`` also into a plain folder for a static web
server. The folder is written first and the registry second: when the registry cannot be
reached, the signed state is kept and any later command publishes it again (every command
publishes every root and the current targets, snapshot and timestamp, not only what changed).

The rules about versions live here, before anything is signed: only version tags that exist in
the registry are signed; a signed version never changes digest, and a revoked one stays revoked;
the floor (``--min-version``) only goes up and must name a signed, unrevoked version, so that
some version is always installable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from osctl.adapters import ociartifact
from osctl.adapters.fsutil import atomic_write
from osctl.adapters.registry import IMAGE_TYPES, LIST_TYPES, Registry
from osctl.adapters.tufrepo import (
    EXPIRY,
    ROLES,
    Floor,
    ReleaseRepository,
    RepositoryStatus,
    SignedTarget,
    TargetFacts,
    utcnow,
)
from osctl.errors import NotFoundError, OsctlError, TrustError, UsageError
from osctl.models.refs import Digest
from osctl.models.version import OsVersion

MAX_REASON = 200  # a reason is shown on every host that refuses the version: one short line


@dataclass(frozen=True)
class Publication:
    """Where a command's metadata went."""

    repository: str | None = None  # the <image>-tuf repository; None when nothing was pushed
    files: tuple[str, ...] = ()  # file names pushed there
    out: Path | None = None  # the plain layout (--out)
    written: tuple[str, ...] = ()  # file names written there


@dataclass(frozen=True)
class ReleaseOutcome:
    """What a release command did, for the CLI to say."""

    keys: Path
    status: RepositoryStatus  # the repository after the command
    signed_roles: tuple[str, ...]  # roles that got a new version, in order
    publication: Publication
    targets: tuple[SignedTarget, ...] = ()  # versions this command signed or revoked
    unchanged: tuple[SignedTarget, ...] = ()  # versions asked for that were already signed as they are
    floor: Floor | None = None  # the floor this command set
    new_keyids: tuple[str, ...] = ()  # keys made by rotate
    renewed: tuple[str, ...] = ()  # roles timestamp renewed because they would expire before it


class Release:
    """The release commands on one keys folder, publishing for one OS image repository.

    ``image`` is the OS image repository (``127.0.0.1:5000/osctl/os``): versions are looked up
    there and the metadata goes to ``<image>-tuf``. ``registry`` makes a ``Registry`` (tests give
    a fake); ``now`` is the clock for expiries and revocation times.
    """

    def __init__(self, keys: Path, image: str | None = None, *, out: Path | None = None,
                 registry: Callable[..., Registry] = Registry, now: Callable[[], datetime] = utcnow) -> None:
        self.keys = Path(keys)
        self.image = image
        self.out = Path(out) if out is not None else None
        self._registry = registry
        self._now = now

    # -- the commands ------------------------------------------------------------------------
    def init(self, root_keys: int = 1, root_threshold: int = 1) -> ReleaseOutcome:
        """New keys for the four roles and version 1 of their metadata, then published when an
        image is known: root keys may be made on a machine with no registry, and the next
        command publishes everything."""
        repo = ReleaseRepository.create(self.keys, root_keys=root_keys, root_threshold=root_threshold,
                                        now=self._now())
        publication = self._publish(repo) if self.image else Publication(out=self.out, written=self._write_out(repo))
        return ReleaseOutcome(self.keys, repo.status(), ROLES, publication)

    def sign(self, versions: list[str], min_version: str | None = None, reason: str | None = None) -> ReleaseOutcome:
        """Make each version a target (its manifest's length, sha256 and custom data), optionally
        raise the floor, then sign and publish new targets, snapshot and timestamp."""
        image = self._require_image()
        tags = list(dict.fromkeys(OsVersion.parse(v).tag for v in versions))
        if not tags and min_version is None:
            raise UsageError("nothing to sign: name at least one version, or --min-version")
        if reason is not None and min_version is None:
            raise UsageError("--reason goes with --min-version (why the versions below it are revoked)")
        floor_tag = OsVersion.parse(min_version).tag if min_version is not None else None
        reason = _reason(reason, "--reason") if reason is not None else None
        repo = ReleaseRepository.open(self.keys)
        with repo.lock():
            signed = repo.targets()
            source = self._registry(image)
            facts = [self._facts(source, image, tag) for tag in tags]  # every lookup before any change
            added, unchanged = [], []
            for fact in facts:
                known = signed.get(fact.version)
                if known is None:
                    added.append(fact)
                elif known.digest != fact.digest:
                    raise TrustError(f"{fact.version} is signed as {known.digest}, but {image}:{fact.version} now "
                                     f"names {fact.digest}: a signed version never changes",
                                     hint="the tag was moved or the registry is not what it was; publish new "
                                          "content under a new version")
                elif known.revoked is not None:
                    raise UsageError(f"{fact.version} is revoked ({known.revoked}); a revoked version stays revoked",
                                     hint="publish the fix under a new version")
                else:
                    unchanged.append(known)
            new = tuple(repo.add_target(fact) for fact in added)
            floor = None
            if floor_tag is not None and self._floor_rises(repo, floor_tag, reason):
                floor = repo.set_floor(floor_tag, reason, self._now())
            roles = repo.commit(self._now())
            return ReleaseOutcome(self.keys, repo.status(), roles, self._publish(repo), targets=new,
                                  unchanged=tuple(unchanged), floor=floor)

    def revoke(self, version: str, reason: str) -> ReleaseOutcome:
        """Mark a signed version revoked; it stays listed, with the reason hosts will show."""
        self._require_image()
        tag = OsVersion.parse(version).tag
        reason = _reason(reason, "--reason")
        repo = ReleaseRepository.open(self.keys)
        with repo.lock():
            known = repo.targets().get(tag)
            if known is None:
                raise NotFoundError(f"{tag} is not signed, so it cannot be revoked",
                                    hint="'osctl release status' lists the signed versions; hosts refuse "
                                         "unsigned ones already")
            if known.revoked is not None:
                raise UsageError(f"{tag} is already revoked ({known.revoked})")
            revoked = repo.revoke(tag, reason, self._now())
            roles = repo.commit(self._now())
            return ReleaseOutcome(self.keys, repo.status(), roles, self._publish(repo), targets=(revoked,))

    def timestamp(self, expiry: float | None = None) -> ReleaseOutcome:
        """A new timestamp (``expiry`` seconds, default a day): what a timer runs so that hosts
        can tell fresh metadata from a freeze. Targets or snapshot metadata that would expire
        before the new timestamp are signed again too, so a timer alone keeps the repository
        valid between releases."""
        self._require_image()
        if expiry is not None and not expiry > 0:
            raise UsageError("--expiry must be longer than zero")
        repo = ReleaseRepository.open(self.keys)
        with repo.lock():
            length = timedelta(seconds=expiry) if expiry is not None else None
            until = self._now() + (length or EXPIRY["timestamp"])
            renewed = tuple(role for role in ("targets", "snapshot") if repo.expires(role) <= until)
            for role in renewed:
                repo.renew(role)
            repo.renew("timestamp", length)
            roles = repo.commit(self._now())
            return ReleaseOutcome(self.keys, repo.status(), roles, self._publish(repo), renewed=renewed)

    def renew(self, role: str, expiry: float | None = None) -> ReleaseOutcome:
        """Sign ``role`` again with the same keys and a new expiry (``expiry`` seconds, default the
        role's): what keeps the root valid past its year without changing any key. A new root
        version is published; hosts follow it as they follow a rotation."""
        self._require_image()
        if expiry is not None and not expiry > 0:
            raise UsageError("--expiry must be longer than zero")
        repo = ReleaseRepository.open(self.keys)
        with repo.lock():
            repo.renew(role, timedelta(seconds=expiry) if expiry is not None else None)
            roles = repo.commit(self._now())
            return ReleaseOutcome(self.keys, repo.status(), roles, self._publish(repo))

    def rotate(self, role: str) -> ReleaseOutcome:
        """New keys for ``role``; a new root names them (signed by the old root keys too when the
        root's own keys change), and the role's metadata is signed again with them."""
        self._require_image()
        repo = ReleaseRepository.open(self.keys)
        with repo.lock():
            new_keyids = repo.rotate(role)
            roles = repo.commit(self._now())
            return ReleaseOutcome(self.keys, repo.status(), roles, self._publish(repo), new_keyids=new_keyids)

    def status(self) -> RepositoryStatus:
        """The keys folder's view: versions, revocations, the floor, each role's version, expiry and keys."""
        return ReleaseRepository.open(self.keys).status()

    # -- the steps ---------------------------------------------------------------------------
    def _require_image(self) -> str:
        if not self.image:
            raise UsageError("no OS image repository is configured",
                             hint="pass --image or set OSCTL_IMAGE: versions are looked up there and the "
                                  "metadata is published beside it")
        return self.image

    @staticmethod
    def _facts(source: Registry, image: str, tag: str) -> TargetFacts:
        """The manifest ``image:tag`` names now: length, sha256 and media type, as a host will fetch it."""
        body, media_type = source.manifest_body(tag)
        if media_type not in IMAGE_TYPES + LIST_TYPES:
            try:
                said = json.loads(body).get("mediaType")
            except (ValueError, AttributeError, RecursionError):
                said = None
            if said not in IMAGE_TYPES + LIST_TYPES:
                shown = str(media_type or said or "no media type")[:80]
                raise UsageError(f"{image}:{tag} is not an image manifest ({shown})")
            media_type = said
        digest = Digest(f"sha256:{hashlib.sha256(body).hexdigest()}")
        return TargetFacts(tag, image, digest, len(body), media_type)

    @staticmethod
    def _floor_rises(repo: ReleaseRepository, tag: str, reason: str | None) -> bool:
        """Whether setting the floor to ``tag`` changes it; refused when it would fall, or when
        ``tag`` itself is not installable (no version would be)."""
        target = repo.targets().get(tag)
        if target is None:
            raise UsageError(f"the minimum version {tag} is not signed",
                             hint=f"sign it in the same command: osctl release sign --min-version {tag} {tag}")
        if target.revoked is not None:
            raise UsageError(f"the minimum version {tag} is revoked ({target.revoked}); no version would be installable")
        current = repo.floor()
        if current is None:
            return True
        if OsVersion.parse(tag) < OsVersion.parse(current.version):
            raise UsageError(f"the minimum version is {current.version}; it only goes up, not to {tag}",
                             hint="a lower floor would let hosts go back to versions they refuse now")
        return not (current.version == tag and current.reason == reason)

    def _publish(self, repo: ReleaseRepository) -> Publication:
        """The plain layout (``out``) first, then the registry: every root and the current
        targets, snapshot and timestamp, so a publish that failed before is made good now."""
        written = self._write_out(repo)
        repository = f"{self._require_image()}-tuf"
        pushed = []
        try:
            target = self._registry(repository, push=True)
            for name, data in repo.files(every_version=False):
                ociartifact.put_file(target, name, data)
                pushed.append(name)
        except OsctlError as exc:
            kept = OsctlError(f"signed and saved in {self.keys}, but publishing to {repository} failed: {exc.message}",
                              hint="any later release command publishes it again, e.g. "
                                   f"osctl release timestamp --keys {self.keys}")
            kept.exit_code = exc.exit_code
            raise kept from exc
        return Publication(repository, tuple(pushed), self.out, written)

    def _write_out(self, repo: ReleaseRepository) -> tuple[str, ...]:
        """The plain TUF layout in ``out``: every version, ``timestamp.json`` last."""
        if self.out is None:
            return ()
        files = repo.files(every_version=True)
        for name, data in files:
            atomic_write(self.out / name, data)
        return tuple(name for name, _ in files)


def _reason(text: str, option: str) -> str:
    """A reason hosts will print in their one-line refusal: one short line of text."""
    reason = " ".join(text.split())
    if not reason:
        raise UsageError(f"{option} must say why")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise UsageError(f"{option} must be one line of at most {MAX_REASON} printable characters")
    return reason
