"""``osctl pull``: bring a version into the store, completely or not at all.

resolve (tag -> digest) -> pull by digest (so what is checked is what was resolved) -> verify
(OS image contract, digest, tag unmoved) -> pull service images -> stage boot files -> write
the record. Until the record is written the version is not stored; an interrupted pull leaves
only leftovers that the next pull or prune removes.

With a trusted root (``operations.trust``), resolving asks the verified release metadata, not
the registry's tag: the digest pulled is the signed one (TUF checks its manifest's length and
hash first), whatever the tag points at, and the record says it was verified. A version already
stored is taken again only if no revocation names it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from osctl.adapters.engine import Engine
from osctl.adapters.locking import host_lock
from osctl.adapters.registry import Registry
from osctl.constants import MANIFEST_PATH, TRUST_ROOT_FILE, TRUST_ROOT_PATH
from osctl.domain.current import make_current
from osctl.domain.imagefacts import ImageFacts
from osctl.domain.preflight import BOOT_ESTIMATE, ImageNeed, SpaceReport
from osctl.domain.naming import hold_ref
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import IntegrityError, ManifestError, NotFoundError, OsctlError, TrustError
from osctl.models.engine import PullProgress
from osctl.models.manifest import ReleaseManifest
from osctl.models.refs import Digest, ImageRef
from osctl.models.registry import TagManifest
from osctl.models.store import StoreRecord
from osctl.models.version import OsVersion, try_parse
from osctl.operations.osimage import OsImageReport, inspect_os_image
from osctl.operations.preflight import esp_bytes, measure, preflight, registry_need
from osctl.operations.trust import for_settings

Progress = Callable[[PullProgress | SpaceReport], None]  # the preflight's figures come first, then bytes


@dataclass(frozen=True)
class PullResult:
    record: StoreRecord
    already_stored: bool


def pull_version(
    settings: Settings,
    engine: Engine,
    version: str,
    *,
    progress: Progress | None = None,
    registry: Registry | None = None,
    locked: bool = False,
    bootable: bool = False,
) -> PullResult:
    """Store ``version`` of the configured OS image repository on this host.

    ``locked``: the caller (a transaction) already holds the host lock. ``bootable``: the
    version is pulled to be booted (a transaction), so the preflight counts the ESP too; a
    version only stored needs no room there until it is made bootable (``esp.Esp.place``).
    """
    tag = OsVersion.parse(version).tag
    if locked:
        return _pull(settings, engine, tag, progress, registry, bootable)
    with host_lock(settings.root, f"pull {tag}"):
        return _pull(settings, engine, tag, progress, registry, bootable)


def _pull(settings: Settings, engine: Engine, tag: str, progress: Progress | None,
          registry: Registry | None, bootable: bool) -> PullResult:
    store = Store(settings.root)
    existing = store.get(tag)
    trust = for_settings(settings)
    if existing and images_present(engine, existing):
        # Stored means usable offline, whatever repository is configured now; a revocation the
        # host has seen still refuses it.
        trust.check_stored(existing)
        hold_images(engine, settings.host_id, existing)
        return PullResult(existing, already_stored=True)
    store.clean_leftovers()
    if settings.bundle is not None:
        from osctl.operations.bundleinstall import fetch_from_bundle

        fetched = fetch_from_bundle(settings, engine, tag, progress, bootable=bootable)
    else:
        fetched = _fetch_from_registry(settings, engine, tag, progress, registry, bootable=bootable)
    return PullResult(_store(settings, engine, store, tag, fetched, existing), already_stored=False)


@dataclass(frozen=True)
class Fetched:
    """A version's images in the engine, checked against the OS image contract, not yet stored."""

    repository: str
    digest: Digest  # the OS image's manifest digest: what registries and the release keys know it by
    report: OsImageReport
    service_images: dict[str, str]  # reference -> engine image id


def _fetch_from_registry(settings: Settings, engine: Engine, tag: str, progress: Progress | None,
                         registry: Registry | None, *, bootable: bool) -> Fetched:
    """Pull by the resolved digest, with the preflight in two parts: the OS image before its
    first byte (its boot files estimated, the ESP not yet: what it already holds is not known),
    then its service images and its exact boot files before theirs."""
    repo = settings.require_image()
    trust = for_settings(settings)
    registry = registry or Registry(repo)
    wanted = wanted_manifest(settings, registry, tag)
    by_digest = ImageRef(repo).at(wanted.digest)
    was_there = engine.image(by_digest) is not None
    if not was_there:
        _shown(progress, preflight(settings, engine, [registry_need(registry, wanted.digest, tag)], BOOT_ESTIMATE,
                                   subject=tag, esp_bytes=0))
    try:
        report = verified_image(settings, engine, registry, by_digest, tag, wanted, progress,
                                tag_must_match=not trust.enforced)
        if trust.enforced:
            require_pinned_services(tag, report.manifest)
        refs = sorted({s.image for s in report.manifest.services.values() if s.image})
        missing = [ref for ref in refs if engine.image(ref) is None]
        boot = report.manifest.boot
        loader = {"vmlinuz": report.artifacts[boot.kernel],
                  **({"initrd.img": report.artifacts[boot.initrd]} if boot.initrd else {})}
        preflight(settings, engine, [_service_need(ref) for ref in missing],
                  sum(len(data) for data in report.artifacts.values()) + len(report.manifest_text), subject=tag,
                  esp_bytes=esp_bytes(settings, {n: (len(d), d) for n, d in loader.items()}) if bootable else 0)
    except OsctlError as exc:
        if isinstance(exc, ManifestError):  # this digest is no OS image: list-versions and upgrade learn it
            ImageFacts(settings.root).remember_failure(wanted.digest, exc.message)
        if not was_there:  # leave the engine as it was: drop the name this pull added
            engine.untag(by_digest)
        raise
    service_images = {ref: engine.pull(ref, progress).id for ref in refs}
    return Fetched(repo, wanted.digest, report, service_images)


def wanted_manifest(settings: Settings, registry: Registry, tag: str) -> TagManifest:
    """The manifest a pull of ``tag`` takes: the signed digest with a trusted root (refused
    unless signed, not revoked, and the metadata fresh), else what the tag points at now."""
    trust = for_settings(settings)
    if trust.enforced:
        return registry.manifest(trust.require(tag).digest)
    return resolve(registry, registry.repository, tag)


def measure_space(settings: Settings, engine: Engine, tag: str) -> SpaceReport:
    """The preflight's figures for taking ``tag`` now, without its verdict (``--dry-run``).

    From a registry, the OS image alone (its service images are named inside it) and an
    estimate of its boot files, the ESP not yet; from a bundle, everything, exactly.
    """
    if settings.bundle is not None:
        from osctl.operations.bundleinstall import bundle_needs

        images, boot, esp = bundle_needs(settings, engine, tag)
        return measure(settings, engine, images, boot, subject=tag, esp_bytes=esp)
    registry = Registry(settings.require_image())
    return measure(settings, engine, [registry_need(registry, wanted_manifest(settings, registry, tag).digest, tag)],
                   BOOT_ESTIMATE, subject=tag, esp_bytes=0)


def _service_need(ref: str) -> ImageNeed:
    """What pulling the service image ``ref`` brings: by its pinned digest, else its tag's now."""
    parsed = ImageRef.parse(ref)
    registry = Registry(parsed.repository)
    return registry_need(registry, parsed.digest or registry.manifest(parsed.pin).digest, ref)


def _shown(progress: Progress | None, report: SpaceReport) -> None:
    """Hand the preflight's figures to the progress display (its total), when there is one."""
    if progress is not None:
        progress(report)


def _store(settings: Settings, engine: Engine, store: Store, tag: str, fetched: Fetched,
           existing: StoreRecord | None) -> StoreRecord:
    """Name the OS image by its version, stage its boot files and write the record: from here
    on the version is stored, and bootable without the source it came from."""
    report, trust = fetched.report, for_settings(settings)
    engine.tag(report.image.id, ImageRef(fetched.repository).with_tag(tag))
    boot = report.manifest.boot
    files = {"release.yaml": (MANIFEST_PATH, report.manifest_text),
             "vmlinuz": (boot.kernel, report.artifacts[boot.kernel])}
    if boot.initrd:
        files["initrd.img"] = (boot.initrd, report.artifacts[boot.initrd])
    if report.trust_root is not None:  # rotation travels with versions (docs/trust.md)
        files[TRUST_ROOT_FILE] = (TRUST_ROOT_PATH, report.trust_root)
    record = StoreRecord(
        version=tag, repository=fetched.repository, digest=fetched.digest, image_id=report.image.id,
        size=report.image.size, created=report.image.created,
        stored_at=datetime.now(UTC).isoformat(timespec="seconds"),
        pinned=existing.pinned if existing else False,
        service_images=fetched.service_images, boot_files=store.stage_boot_files(tag, files), cmdline=boot.cmdline,
        verified=trust.enforced,
    )
    hold_images(engine, settings.host_id, record)
    store.save(record)
    if not trust.enforced:  # said once new content is stored, so that an error stays one line
        trust.note_unverified()
    ImageFacts(settings.root).forget_failure(fetched.digest)
    make_current(settings)  # the ESP follows the store (a pinned version pulled again, a repair)
    return record


def verified_image(settings: Settings, engine: Engine, registry: Registry, by_digest: ImageRef, tag: str,
                   wanted: TagManifest, progress: Progress | None, *,
                   tag_must_match: bool = True) -> OsImageReport:
    """Pull by digest and check the image contract, the digest, and that the tag did not move.

    ``tag_must_match`` is off for a signed digest: the tag does not choose what is installed then.
    """
    repo = registry.repository
    report = inspect_os_image(engine, by_digest, host_id=settings.host_id, progress=progress, expected_version=tag)
    if report.image.digest_in(repo) != wanted.digest:
        raise IntegrityError(f"{repo}:{tag}: the engine holds {report.image.digest_in(repo)}, "
                             f"not the resolved {wanted.digest}")
    if tag_must_match and (now := registry.digest(tag)) != wanted.digest:
        raise IntegrityError(f"{repo}:{tag} moved from {wanted.digest[:19]} to {now[:19]} during the pull; "
                             "nothing was stored", hint="pull again to take the new content")
    return report


def require_pinned_services(tag: str, manifest: ReleaseManifest) -> None:
    """The signature covers the OS image, and through its manifest the service images it names
    by digest; one named by tag alone could be swapped in the registry unseen, so it is refused."""
    loose = sorted({f"{name} ({spec.image})" for name, spec in manifest.services.items()
                    if spec.image and ImageRef.parse(spec.image).digest is None})
    if loose:
        raise TrustError(f"{tag} names service images by tag alone, which its signature does not cover: "
                         f"{', '.join(loose[:3])}; refused",
                         hint="a signed release pins them by digest (image: REPO:TAG@sha256:...); see docs/trust.md")


def images_present(engine: Engine, record: StoreRecord) -> bool:
    """Whether the engine still holds every image the version needs (someone may have rmi'd one)."""
    return all(engine.image(image_id) is not None for image_id in record.image_ids)


def hold_images(engine: Engine, host_id: str, record: StoreRecord) -> None:
    """Tag every image of the version as held by this host (see ``naming.hold_ref``)."""
    for image_id in sorted(record.image_ids):
        engine.tag(image_id, hold_ref(host_id, record.version, image_id))


def resolve(registry: Registry, repo: str, tag: str) -> TagManifest:
    """The tag's manifest now; an unknown tag names the nearest versions that exist."""
    try:
        return registry.manifest(tag)
    except NotFoundError:
        raise NotFoundError(f"{tag} does not exist in {repo}", hint=nearest_hint(registry, tag)) from None


def nearest_hint(registry: Registry, tag: str) -> str:
    try:
        versions = sorted(v for v in map(try_parse, registry.tags()) if v is not None)
    except NotFoundError:
        return f"the repository {registry.name} does not exist in {registry.host}"
    if not versions:
        return "the repository holds no versions"
    asked = OsVersion.parse(tag)
    below = [v for v in versions if v < asked][-1:]
    above = [v for v in versions if v > asked][:1]
    similar = set(difflib.get_close_matches(tag, [str(v) for v in versions], n=2))
    near = sorted({*below, *above, *(v for v in versions if str(v) in similar)})
    return "nearest available: " + ", ".join(str(v) for v in near)
