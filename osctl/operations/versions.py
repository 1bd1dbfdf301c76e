"""``osctl list-versions``, ``pin`` and ``unpin``: what exists, what the host holds, what runs.

The registry is read live (tags, then every version tag's manifest, concurrently) so the list
never misses a release; when it cannot be reached the stored versions are still listed, with a
warning, because a host must be manageable offline. A tag that is not a valid OS version (see
``releases``), or whose manifest the registry serves malformed, is listed as invalid, with why.

With a trusted root, every row also says whether the release keys sign it, whether it is
revoked (and why), and until when the metadata that says so is valid; the metadata is refreshed
beside the registry listing, or, when that fails, what the host last trusted is shown, with a
warning. A version the metadata signs but the registry does not list is shown too: it can be
pulled by its digest.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

from osctl.adapters.locking import host_lock
from osctl.adapters.registry import Registry
from osctl.constants import LABEL_ROLE, LABEL_VERSION, ROLE_SERVICE
from osctl.domain import bootpointer
from osctl.domain.imagefacts import ImageFacts
from osctl.domain.naming import host_labels
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import EngineUnavailable, NotFoundError, OsctlError, UsageError
from osctl.models.store import StoreRecord
from osctl.models.trust import ReleaseIndex
from osctl.models.version import OsVersion, try_parse
from osctl.operations.releases import RemoteTag, judge_tags
from osctl.operations.trust import for_settings

if TYPE_CHECKING:  # list-versions loads neither the engine adapter (until it asks) nor the ESP's writers
    from osctl.adapters.engine import Engine


@dataclass(frozen=True)
class VersionRow:
    version: str
    digest: str | None
    registry_digest: str | None
    stored: bool
    available: bool
    running: bool
    next_boot: bool
    previous: bool
    pinned: bool
    prerelease: bool
    size: int | None  # bytes the stored images take in the engine (None when not stored)
    download_size: int | None  # bytes a pull moves, as the registry's manifest says
    date: str | None
    invalid: str | None = None  # why the registry's tag is not a valid OS version (None: it is, or unknown)
    signed: bool | None = None  # the release keys sign it; None: no trusted root (nothing is verified)
    signed_digest: str | None = None  # the digest they sign: the only content installed for it
    revoked: str | None = None  # why it must not be installed or booted (revoked, or below the floor)
    expires: str | None = None  # until when the metadata saying so is valid (its earliest role)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def running_versions(engine: Engine, host_id: str) -> set[str]:
    """Versions with a running system container on this host, as the engine sees it."""
    return {c.labels[LABEL_VERSION] for c in engine.containers(host_labels(host_id))
            if c.state == "running" and c.labels.get(LABEL_ROLE) == ROLE_SERVICE and LABEL_VERSION in c.labels}


def list_versions(
    settings: Settings,
    engine: Engine,
    *,
    include_prereleases: bool = False,
    offline: bool = False,
    warn: Callable[[str], None] = lambda _msg: None,
    registry: Registry | None = None,
) -> list[VersionRow]:
    """Every version known locally or in the registry, newest first."""
    stored = {r.version: r for r in Store(settings.root).records()}
    trust = for_settings(settings)
    # The registry round trips, the metadata refresh and the engine query (whose first use loads
    # the docker SDK) overlap: listing is what operators run most, and waiting for one then the
    # other showed.
    with ThreadPoolExecutor(max_workers=2) as pool:
        remote_future = None if offline else pool.submit(_registry_versions, settings, registry, warn)
        index_future = pool.submit(_release_index, settings, offline, warn) if trust.enforced else None
        try:
            running = running_versions(engine, settings.host_id)
        except EngineUnavailable as exc:
            warn(f"{exc.message}; running versions are not shown")
            running = set()
        remote: dict[str, RemoteTag] = remote_future.result() if remote_future else {}
        index = index_future.result() if index_future else None
    if not trust.enforced:
        trust.note_unverified()
    pointer = bootpointer.read(settings.root)
    signed = set(index.releases) if index is not None and not offline else set()

    rows = []
    for tag in set(stored) | set(remote) | running | signed:
        parsed = try_parse(tag)
        if parsed is None:
            continue
        record, judged = stored.get(tag), remote.get(tag)
        manifest = judged.manifest if judged else None
        mine = record is not None or tag in running or tag in (pointer.next_boot, pointer.previous)
        if parsed.is_prerelease and not include_prereleases and not mine:
            continue
        release = index.release(tag) if index is not None else None
        # Signed: the signed digest is what would be installed, whatever the tag points at; the
        # tag's own content is then not judged (it is shown as moved instead).
        moved = release is not None and manifest is not None and manifest.digest != release.digest
        rows.append((parsed, VersionRow(
            version=tag,
            digest=record.digest if record else (release.digest if release else (manifest.digest if manifest else None)),
            registry_digest=manifest.digest if manifest else None,
            stored=record is not None,
            available=judged is not None,
            running=tag in running,
            next_boot=tag == pointer.next_boot,
            previous=tag == pointer.previous,
            pinned=bool(record and record.pinned),
            prerelease=parsed.is_prerelease,
            size=record.size if record else None,
            download_size=manifest.size if manifest and not moved else None,
            date=(record.created or record.stored_at) if record else None,
            invalid=judged.invalid if judged and not moved else None,
            **_trust_columns(index, tag, trust.enforced),
        )))
    return [row for _, row in sorted(rows, key=lambda pair: pair[0], reverse=True)]


def _trust_columns(index: ReleaseIndex | None, tag: str, enforced: bool) -> dict[str, object]:
    if not enforced:
        return {}
    release = index.release(tag) if index is not None else None
    return {"signed": release is not None, "signed_digest": release.digest if release else None,
            "revoked": index.revocation(tag) if index is not None else None,
            "expires": index.expires.isoformat(timespec="seconds") if index is not None and release else None}


def _release_index(settings: Settings, offline: bool, warn: Callable[[str], None]) -> ReleaseIndex | None:
    """The fresh metadata; offline, or when it cannot be refreshed, what the host last trusted."""
    trust = for_settings(settings)
    if not offline:
        try:
            return trust.index()
        except OsctlError as exc:
            warn(f"{exc.message}; showing what this host last trusted" + (f" (hint: {exc.hint})" if exc.hint else ""))
    return trust.known()


def _registry_versions(settings: Settings, registry: Registry | None,
                       warn: Callable[[str], None]) -> dict[str, RemoteTag]:
    repo = settings.image
    if not repo:
        warn("no OS image repository is configured (--image / OSCTL_IMAGE); showing stored versions only")
        return {}
    try:
        registry = registry or Registry(repo)
        tags = [t for t in registry.tags() if try_parse(t) is not None]
        return judge_tags(registry, tags, ImageFacts(settings.root))
    except UsageError as exc:
        if not isinstance(exc, NotFoundError):
            raise
        warn(f"{exc.message}; showing stored versions only")
    except OsctlError as exc:  # unreachable, refused credentials: the host still has its store
        warn(f"{exc.message}; showing stored versions only" + (f" (hint: {exc.hint})" if exc.hint else ""))
    return {}


def set_pinned(settings: Settings, version: str, pinned: bool) -> StoreRecord:
    """Pin (keep through every prune) or unpin a stored version."""
    from osctl.domain.current import make_current
    from osctl.domain.esp import Esp

    tag = OsVersion.parse(version).tag
    store = Store(settings.root)
    with host_lock(settings.root, f"{'pin' if pinned else 'unpin'} {tag}"):
        record = store.get(tag)
        if record is None:
            stored = ", ".join(r.version for r in store.records()) or "none"
            raise NotFoundError(f"{tag} is not stored on this host (stored: {stored})",
                                hint=f"osctl pull {tag} first" if pinned else None)
        if record.pinned != pinned:
            record = record.model_copy(update={"pinned": pinned})
            if pinned:  # a pinned version is bootable from the loader's menu: its files must fit the ESP
                Esp(settings.esp).place(store, [record])
            store.save(record)
            make_current(settings)  # its entry comes, or goes
        return record
