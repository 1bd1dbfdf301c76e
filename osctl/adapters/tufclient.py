"""The host side of TUF: python-tuf's ``Updater`` over the registry, and what it verified, typed.

All metadata verification is python-tuf's (``tuf.ngclient``): signatures and thresholds against
the trusted root, the chain of roots, version numbers that never go back (rollback), expiry
(freeze), lengths and hashes. This module only

- carries its requests: metadata files from the registry's ``<image>-tuf`` repository (OCI
  artifacts, ``ociartifact``) or from a plain folder over http(s); the image manifest a target
  names, by digest, from the image repository, so that TUF checks it against the signed length
  and hash before the engine pulls anything;
- keeps what was trusted under the host root (the Updater's metadata folder), so that rollback
  protection and revocations survive reboots, re-installs of osctl and the registry going away;
- turns what python-tuf raises into one line each that says what it means for the host
  ("rollback attack", "expired ... ago: a possible freeze"), as ``TrustError``;
- reads the trusted targets metadata into ``models.trust.ReleaseIndex``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, Targets
from tuf.ngclient import FetcherInterface, Updater
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from osctl.adapters.fsutil import read_bytes
from osctl.adapters.ociartifact import get_file
from osctl.adapters.registry import MAX_BODY, Registry
from osctl.errors import (NotFoundError, OsctlError, RegistryError, RegistryUnavailable, StateError, TrustError,
                          UsageError)
from osctl.models.refs import Digest
from osctl.models.trust import ReleaseIndex, SignedRelease
from osctl.models.version import try_parse

log = logging.getLogger(__name__)

FLOOR_FIELD = "x-osctl-floor"  # in the targets metadata's signed part: the anti-rollback index
META_BASE = "osctl-metadata://registry/"  # metadata file names under it are tags of <image>-tuf
TARGET_BASE = "osctl-image://registry/"  # a target under it is the OS image manifest, by digest
ROLES = ("root", "timestamp", "snapshot", "targets")
_HASH_PREFIXED = re.compile(r"([0-9a-f]{64})\.(.+)")
_ROLE_IN = re.compile(r"\b(root|timestamp|snapshot|targets)\b")
HINT_EXPIRED = ("versions already stored still boot; the publisher renews it with `osctl release timestamp` "
                "(and sign, for targets)")


class LocalMetadata(Protocol):
    """Release metadata and the manifests it signs, from a file instead of a server (a bundle).

    ``name`` says where, in messages; a file or manifest that is not there is None. What the
    bytes are is TUF's to judge, exactly as for a registry.
    """

    name: str

    def metadata_file(self, name: str) -> bytes | None: ...

    def manifest(self, digest: Digest) -> bytes | None: ...


Source = Registry | str | LocalMetadata  # the -tuf repository, a plain folder URL, or a local copy


class TufClient:
    """One host's view of one release repository.

    ``cache`` is the Updater's metadata folder (``<root>/var/lib/osctl/tuf``); ``root`` the
    trusted root's bytes (the bootstrap: a newer root in the cache, reached through the chain
    from it, still counts); ``metadata`` where the metadata is (a ``Registry`` of the ``-tuf``
    repository, an http(s) folder URL, or a bundle's copy); ``images`` the OS image repository
    (for a bundle, the bundle itself serves the manifests).
    """

    def __init__(self, cache: Path, root: bytes, *, metadata: Source, images: Registry | None) -> None:
        self._cache, self._root = cache, root
        self._fetcher = _Fetcher(metadata, images)
        self._source = (metadata.repository if isinstance(metadata, Registry) else
                        metadata if isinstance(metadata, str) else metadata.name)
        self._updater: Updater | None = None

    def refresh(self) -> ReleaseIndex:
        """Bring the trusted metadata up to date (TUF's client workflow) and read it.

        Raises ``TrustError`` for anything the metadata fails, ``RegistryUnavailable`` when the
        metadata cannot be fetched at all (the caller may go on with what is known offline).
        """
        root_version(self._root)  # a bad trusted root is the configuration's fault, not the repository's
        _private_folder(self._cache)
        with _locked(self._cache), self._translated():
            updater = Updater(str(self._cache), _base(self._source, META_BASE), str(self._cache / "targets"),
                              TARGET_BASE, self._fetcher, bootstrap=self._root)
            updater.refresh()
            self._updater = updater
        index = read_index(self._cache, fresh=True)
        if index is None:  # refresh() persisted a targets.json, or raised
            raise StateError(f"the trusted metadata in {self._cache} could not be read back after a refresh")
        return index

    def check_manifest(self, version: str) -> SignedRelease:
        """Fetch ``version``'s image manifest by its signed digest and let TUF check its length and hash.

        Only after ``refresh``. What the engine then pulls by that digest is content-addressed, so
        this is the moment a registry serving other content for the signed version is caught.
        """
        assert self._updater is not None, "check_manifest() before refresh()"
        with self._translated():
            info = self._updater.get_targetinfo(version)
            if info is None:
                raise TrustError(f"{version} is not signed by the release keys", hint="osctl list-versions shows "
                                 "what is signed; the publisher signs a version with `osctl release sign`")
            folder = self._cache / "targets"
            folder.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                self._updater.download_target(info, str(Path(scratch) / "manifest"))
        return _release(version, info)

    def files_for_offline(self) -> dict[str, bytes]:
        """The metadata files a host that trusts any earlier root needs to verify offline, by
        the names its Updater asks for: every root from version 1 up (the chain), and the
        timestamp, snapshot and targets this client has just trusted. Only after ``refresh``.

        Roots are taken as the source serves them (the host's TUF checks the chain); the other
        three are this host's verified copies.
        """
        assert self._updater is not None, "files_for_offline() before refresh()"
        root = Metadata[Root].from_bytes(read_bytes(self._cache / "root.json") or b"")
        files: dict[str, bytes] = {}
        base = _base(self._source, META_BASE).rstrip("/") + "/"
        with self._translated():
            for version in range(1, root.signed.version + 1):
                try:
                    files[f"{version}.root.json"] = b"".join(self._fetcher.fetch(f"{base}{version}.root.json"))
                except exceptions.DownloadHTTPError as exc:
                    if exc.status_code != 404:
                        raise
                    # an early root the source no longer keeps: hosts that start from it cannot use the copy
        consistent = root.signed.consistent_snapshot
        for role in ("timestamp", "snapshot", "targets"):
            data = read_bytes(self._cache / f"{role}.json")
            if data is None:
                raise StateError(f"the trusted metadata in {self._cache} has no {role}.json after a refresh")
            name = f"{role}.json" if role == "timestamp" or not consistent else f"{_version(data)}.{role}.json"
            files[name] = data
        return files

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """python-tuf's exceptions, said as what they mean for a host, in one line each."""
        source = self._source
        try:
            yield
        except OsctlError:
            raise
        except exceptions.DownloadError as exc:
            cause = exc.__cause__
            if isinstance(cause, OsctlError):
                if isinstance(cause, NotFoundError):
                    raise _no_metadata(source) from None
                raise cause from None
            if isinstance(exc, exceptions.DownloadHTTPError) and exc.status_code == 404:
                raise _no_metadata(source) from None
            if isinstance(exc, exceptions.DownloadLengthMismatchError):
                raise TrustError(f"release metadata from {source} is longer than its signed or allowed length; "
                                 f"refused ({exc})") from None
            if isinstance(exc, exceptions.DownloadHTTPError) and exc.status_code < 500:
                raise RegistryError(f"cannot fetch the release metadata from {source}: {exc}") from None
            # No answer (refused, timed out) or a server error: unreachable, as a registry that is
            # down; a stored, verified version may still be switched to (HostTrust.check_stored).
            reason = str(getattr(cause, "reason", None) or cause or exc or type(exc).__name__)
            raise RegistryUnavailable(f"cannot reach the release metadata at {source}: {reason[-160:]}") from None
        except exceptions.ExpiredMetadataError as exc:
            raise self._expired(str(exc)) from None
        except exceptions.BadVersionNumberError as exc:
            raise TrustError(f"rollback attack: {source} served older release metadata than this host already "
                             f"trusts ({exc}); refused",
                             hint="the repository (or someone between) replays old metadata; nothing was changed") from None
        except exceptions.UnsignedMetadataError as exc:
            raise TrustError(f"release metadata from {source} is not signed by the keys the trusted root names "
                             f"({exc}); refused", hint="forged, or signed with keys the root does not name") from None
        except exceptions.LengthOrHashMismatchError as exc:
            raise TrustError(f"{source} served content that does not match its signed length and hash ({exc}); "
                             "refused", hint="the registry's content was changed after signing") from None
        except exceptions.RepositoryError as exc:
            raise TrustError(f"release metadata from {source} is invalid: {exc}; refused") from None
        except (ValueError, TypeError, KeyError) as exc:  # the bootstrap root itself (DeserializationError)
            raise UsageError(f"the trusted root is not valid TUF root metadata: {str(exc)[:200]}",
                             hint="give the root.json that `osctl release init` wrote") from None
        except OSError as exc:
            raise StateError(f"cannot keep the trusted metadata in {self._cache}: {exc}") from None

    def _expired(self, message: str) -> TrustError:
        match = _ROLE_IN.search(message)
        role = match.group(1) if match else "timestamp"
        expires = _expiry(self._fetcher.fetched.get(role)) or _expiry(read_bytes(self._cache / f"{role}.json"))
        when = ""
        if expires is not None:
            ago = datetime.now(UTC) - expires
            when = f" {_duration(ago.total_seconds())} ago (at {expires.isoformat(timespec='seconds')})"
        return TrustError(f"the release metadata has expired: {role}.json expired{when}; a possible freeze attack "
                          "(someone withholding newer metadata), or the publisher stopped renewing it; refused",
                          hint=HINT_EXPIRED)


def read_index(cache: Path, *, fresh: bool = False) -> ReleaseIndex | None:
    """What the last trusted metadata in ``cache`` says, without the network; None when there is none.

    Expiry is not checked here: offline, what was trusted is still what the host knows, and a
    revocation it has seen must win even when the metadata that said it has expired.
    """
    raw = read_bytes(cache / "targets.json")
    if raw is None:
        return None
    try:
        targets = Metadata[Targets].from_bytes(raw).signed
    except Exception as exc:  # noqa: BLE001 - python-tuf raises several kinds for a damaged file
        raise StateError(f"the trusted metadata {cache / 'targets.json'} is damaged: {str(exc)[:120]}",
                         hint=f"remove {cache} to trust the configured root again") from None
    releases = {}
    for name, info in targets.targets.items():
        if try_parse(name) is not None and try_parse(name).tag == name:  # type: ignore[union-attr]
            with contextlib.suppress(ValueError, KeyError):
                releases[name] = _release(name, info)
    floor = targets.unrecognized_fields.get(FLOOR_FIELD)
    floor = floor if isinstance(floor, dict) else {}
    floor_version = floor.get("version") if isinstance(floor.get("version"), str) else None
    expiries = {role: _expiry(read_bytes(cache / f"{role}.json")) for role in ROLES}
    known = {role: when for role, when in expiries.items() if when is not None}
    role = min(known, key=known.__getitem__) if known else "timestamp"
    root = read_bytes(cache / "root.json")
    return ReleaseIndex(
        releases=releases,
        floor=floor_version if floor_version and try_parse(floor_version) else None,
        floor_reason=str(floor.get("reason"))[:500] if floor.get("reason") else None,
        expires=known.get(role, datetime.max.replace(tzinfo=UTC)), expiring_role=role,
        root_version=_version(root), targets_version=targets.version, fresh=fresh)


def root_version(data: bytes) -> int:
    """The version of a root metadata document; ``UsageError`` when it is not one."""
    try:
        return Metadata[Root].from_bytes(data).signed.version
    except Exception as exc:  # noqa: BLE001 - DeserializationError, or a document of another role
        raise UsageError(f"not valid TUF root metadata: {str(exc)[:200]}",
                         hint="give the root.json that `osctl release init` wrote") from None


def _release(name: str, info: Any) -> SignedRelease:
    custom = info.custom if isinstance(info.custom, dict) else {}
    revoked = custom.get("revoked") if isinstance(custom.get("revoked"), dict) else None
    repository = custom.get("repository")
    return SignedRelease(
        version=name, digest=Digest(f"sha256:{info.hashes['sha256']}"), length=int(info.length),
        repository=repository if isinstance(repository, str) else None,
        revoked=str(revoked.get("reason") or "no reason given")[:500] if revoked is not None else None,
        revoked_at=str(revoked.get("at"))[:40] if revoked is not None and revoked.get("at") else None)


class _Fetcher(FetcherInterface):
    """Fetches for the Updater: metadata from the registry (or a folder URL, or a bundle),
    targets by digest."""

    def __init__(self, metadata: Source, images: Registry | None) -> None:
        self._metadata, self._images = metadata, images
        self._http = Urllib3Fetcher() if isinstance(metadata, str) else None
        self.fetched: dict[str, bytes] = {}  # role -> the last bytes fetched for it (to say when it expired)

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        if url.startswith(TARGET_BASE):
            return iter([self._manifest(name)])
        if not isinstance(self._metadata, Registry | str):
            found = self._metadata.metadata_file(name)
            if found is None:
                raise exceptions.DownloadHTTPError(f"{name} is not in {self._metadata.name}", 404)
            data = found
        elif isinstance(self._metadata, Registry):
            try:
                data = get_file(self._metadata, name, MAX_BODY)
            except NotFoundError:
                raise exceptions.DownloadHTTPError(f"{name} is not in {self._metadata.repository}", 404) from None
        else:
            assert self._http is not None
            data = b"".join(self._http._fetch(url))  # bounded by the Updater's own maximum lengths
        self._remember(name, data)
        return iter([data])

    def _remember(self, name: str, data: bytes) -> None:
        role = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
        if role in ROLES:
            self.fetched[role] = data

    def _manifest(self, name: str) -> bytes:
        match = _HASH_PREFIXED.fullmatch(name)
        ref, version = (f"sha256:{match.group(1)}", match.group(2)) if match else (name, name)
        if not isinstance(self._metadata, Registry | str):
            found = self._metadata.manifest(Digest(ref)) if match else None
            if found is None:
                raise TrustError(f"{self._metadata.name} holds no image with the digest the release keys sign for "
                                 f"{version} ({ref[:19]}...); refused", hint="the bundle was made from other content "
                                 "than the release keys sign; make it again from the signed registry")
            return found
        if self._images is None:
            raise exceptions.DownloadHTTPError("no image repository is configured", 404)
        try:
            return self._images.manifest_body(ref)[0]
        except NotFoundError:
            raise TrustError(f"{self._images.repository} holds no image with the digest the release keys sign for "
                             f"{version} ({ref[:19]}...); refused",
                             hint="its tag may point at other content now; only the signed digest is installed") from None
        except RegistryError as exc:  # another manifest under the signed digest: what TUF would refuse too
            raise TrustError(f"{version}: {exc.message}; refused", hint="the registry's content was changed "
                             "after signing") from None


def _no_metadata(source: str) -> TrustError:
    return TrustError(f"{source} holds no release metadata (no timestamp.json): nothing there is signed",
                      hint="the publisher runs `osctl release init` and `osctl release sign`; or set trust.mode: off")


def _base(source: str, registry_base: str) -> str:
    return registry_base if "://" not in source else source


def _private_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc}") from None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One refresh at a time per metadata folder: the Updater is single-instance by design."""
    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _expiry(data: bytes | None) -> datetime | None:
    if not data:
        return None
    try:
        text = json.loads(data)["signed"]["expires"]
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def _version(data: bytes | None) -> int:
    try:
        return int(json.loads(data or b"")["signed"]["version"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return 0


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}" + (f"{(seconds % size) // 3600}h" if unit == "d" and seconds % size >= 3600
                                                 else "")
    return f"{seconds}s"
