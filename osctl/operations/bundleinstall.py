"""Taking a version from a bundle (``--from FILE``) instead of a registry: no network at all.

What is checked is what a registry pull checks, in the same order, before the engine gets a
byte: the version's OS image is in the bundle and is of this host's repository; with a trusted
root, the bundle's metadata verifies against it (the same TUF client and the same rollback
floor: an old bundle cannot take a host below what it has seen) and signs exactly this manifest;
the release manifest, read from the OS image's own layers, names service images the bundle holds,
by the digests it pins. Only then are the images the engine lacks streamed into it as one
``docker load``, every blob hashed while it is read; a blob that does not match stops the stream
before its last byte, and the engine is left as it was. The loaded OS image is then checked
against the OS image contract by the engine, exactly as a pulled one (``inspect_os_image``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from osctl.adapters.engine import Engine
from osctl.adapters.ocibundle import Bundle, BundleImage
from osctl.domain.naming import HOLD_REPOSITORY
from osctl.domain.preflight import ImageNeed
from osctl.domain.settings import Settings
from osctl.errors import BundleError, EngineError, IntegrityError, OsctlError, TrustError
from osctl.models.engine import PullProgress
from osctl.models.manifest import ReleaseManifest
from osctl.models.refs import ImageRef
from osctl.operations.bundlesource import bundle_repository, open_bundle
from osctl.operations.osimage import boot_files_in_layers, inspect_os_image, manifest_from_layers
from osctl.operations.preflight import esp_bytes, preflight
from osctl.operations.pull import Fetched, Progress, require_pinned_services
from osctl.operations.trust import for_settings



def fetch_from_bundle(settings: Settings, engine: Engine, tag: str,
                      progress: Progress | None, *, bootable: bool = False) -> Fetched:
    """Bring ``tag``'s images from the bundle into the engine, checked; the caller stores them."""
    plan = _plan(settings, engine, tag)
    bundle, os_image, services, needed = plan.bundle, plan.os_image, plan.services, plan.needed
    report = preflight(settings, engine, plan.needs, plan.boot, subject=tag, esp_bytes=plan.esp if bootable else 0)
    if progress is not None:
        progress(report)
    try:
        if needed:
            engine.load(bundle.docker_archive(needed, progress=_bytes_shown(progress, bundle, needed)))
        checked = inspect_os_image(engine, os_image.config, host_id=settings.host_id,  # type: ignore[arg-type]
                                   pull=False, expected_version=tag)
        if checked.image.id != os_image.config:
            raise IntegrityError(f"{bundle.path}: the engine holds {tag} as {checked.image.id[:19]}..., not as the "
                                 f"bundle's config {os_image.config[:19]}...")
        for ref, image in services.items():
            if engine.image(image.config) is None:
                raise EngineError(f"loading {bundle.path}: the engine reported success but does not hold {ref}")
            parsed = ImageRef.parse(ref)
            if parsed.tag is not None:  # `docker images` then shows it by name, as after a pull
                engine.tag(image.config, ImageRef(parsed.repository, parsed.tag))
    except BaseException:
        for image in needed:  # leave the engine as it was: what this load added goes again
            with contextlib.suppress(OsctlError):  # the first failure is the one to report
                engine.remove_image(image.config, unless_tagged=f"{HOLD_REPOSITORY}/")
        raise
    return Fetched(plan.repository, os_image.source, checked, {ref: image.config for ref, image in services.items()})


@dataclass(frozen=True)
class _Plan:
    """What taking a version from the bundle means, every check that needs no engine passed."""

    bundle: Bundle
    repository: str
    os_image: BundleImage
    services: dict[str, BundleImage]  # reference -> its image in the bundle
    needed: list[BundleImage]  # the images the engine lacks
    boot: int  # bytes of the boot files the version stages in the store
    esp: int  # bytes of its loader files the ESP does not hold yet

    @property
    def needs(self) -> list[ImageNeed]:
        return [ImageNeed.of(image.name, image.layers, image.diff_ids) for image in self.needed]


def _plan(settings: Settings, engine: Engine, tag: str) -> _Plan:
    bundle = open_bundle(settings)
    os_image = bundle.image(tag)
    if os_image.role != "os":
        raise BundleError(f"{bundle.path}: {tag} is not an OS version in it", hint="osctl bundle inspect lists them")
    repository = bundle_host_repository(settings, bundle)
    trust = for_settings(settings)
    if trust.enforced:
        signed = trust.require(tag)  # the bundle's metadata, verified against this host's root
        if signed.digest != os_image.source:
            raise TrustError(f"{bundle.path} holds {tag} as {os_image.source[:19]}..., but the release keys sign "
                             f"{signed.digest[:19]}... for it; refused", hint="make the bundle again from the signed registry")
    manifest = release_manifest(bundle, os_image, tag)
    if trust.enforced:
        require_pinned_services(tag, manifest)
    services = service_images(bundle, manifest, tag)
    needed = [image for image in (os_image, *services.values()) if engine.image(image.config) is None]
    boot, loader = boot_files_in_layers(_layer_readers(bundle, os_image), manifest, f"{bundle.path}:{tag}")
    return _Plan(bundle, repository, os_image, services, needed, boot, esp_bytes(settings, loader))


def bundle_needs(settings: Settings, engine: Engine, tag: str) -> tuple[list[ImageNeed], int, int]:
    """The preflight's input for taking ``tag`` from the bundle to boot it: the images the engine
    lacks, the bytes of the boot files in the store and on the ESP (``--dry-run`` shows them)."""
    plan = _plan(settings, engine, tag)
    return plan.needs, plan.boot, plan.esp


def bundle_host_repository(settings: Settings, bundle: Bundle) -> str:
    """The repository the bundle's versions are stored under: this host's, which they must be of.

    A host that names no repository (it may never have seen a registry) takes the bundle's.
    """
    found = bundle_repository(bundle)
    configured = settings.image
    if found is None:
        raise BundleError(f"{bundle.path} holds no OS version", hint="osctl bundle inspect shows what it holds")
    if configured is not None and configured != found:
        raise BundleError(f"{bundle.path} holds versions of {found}, not of this host's {configured}; refused",
                          hint=f"use a bundle made from {configured}, or set image: {found}")
    return configured or found


def release_manifest(bundle: Bundle, image: BundleImage, tag: str) -> ReleaseManifest:
    """The release manifest, read from the OS image's layers in the bundle (hashed as they are read)."""
    return manifest_from_layers(_layer_readers(bundle, image), f"{bundle.path}:{tag}", tag)


def service_images(bundle: Bundle, manifest: ReleaseManifest, tag: str) -> dict[str, BundleImage]:
    """Each service image the release manifest names, from the bundle, by the digest it pins."""
    found: dict[str, BundleImage] = {}
    for ref in sorted({spec.image for spec in manifest.services.values() if spec.image}):
        try:
            image = bundle.image(ref)
        except BundleError:
            raise BundleError(f"{bundle.path} lacks {ref}, a service image {tag} needs; nothing was stored",
                              hint="make the bundle again with osctl bundle create") from None
        pinned = ImageRef.parse(ref).digest
        if pinned is not None and image.source != pinned:
            raise IntegrityError(f"{bundle.path}: {ref} is pinned to {pinned[:19]}..., but the bundle holds "
                                 f"{image.source[:19]}... under that name; refused")
        found[ref] = image
    return found


def _layer_readers(bundle: Bundle, image: BundleImage) -> list[Callable[[], Iterator[bytes]]]:
    return [lambda layer=layer: bundle.read_blob(layer.digest, layer.size) for layer in image.layers]


def _bytes_shown(progress: Progress | None, bundle: Bundle,
                 images: list[BundleImage]) -> Callable[[int], None] | None:
    """Progress of the whole load in bytes of its total, as one bar named after the bundle."""
    if progress is None:
        return None
    total = sum(image.size for image in images)
    done = 0

    def moved(count: int) -> None:
        nonlocal done
        done += count
        progress(PullProgress(bundle.path.name, "bundle", "Downloading", min(done, total), total))

    return moved
