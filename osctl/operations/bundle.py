"""``osctl bundle create / inspect / push``: OS versions in one file, for hosts with no registry.

A bundle is an OCI image layout and a docker-archive in one tar (docs/bundles.md), so that
skopeo, ``docker load`` and osctl all read it. ``create`` copies from the registry the very
bytes hosts would pull (each version's manifest as served, its config and layers, the same for
every service image its release manifest names), and, when the host trusts release keys, only
the digests those keys sign plus the metadata a host needs to verify them offline. Nothing is
re-encoded: a version taken from a bundle has the digest it has in the registry, so the store,
``list-versions`` and the release keys agree on it whichever way it came.

``push`` puts a bundle's images into a registry inside the air gap (a mirror), byte for byte,
so hosts that pull from the mirror verify the same signed digests.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from osctl.adapters.ocibundle import Bundle, BundleImage, BundleWriter
from osctl.adapters.registry import Registry
from osctl.constants import LABEL_OS_VERSION
from osctl.domain.settings import Settings
from osctl.errors import BundleError, IntegrityError, Issue, ManifestError, OsctlError, TrustError
from osctl.models.engine import PullProgress
from osctl.models.manifest import ReleaseManifest
from osctl.models.refs import Digest, ImageRef
from osctl.models.registry import ImageManifest
from osctl.models.version import OsVersion, try_parse
from osctl.operations.bundlesource import BundleMetadata, bundle_repository, open_bundle
from osctl.operations.osimage import manifest_from_layers
from osctl.operations.pull import require_pinned_services, resolve
from osctl.operations.trust import for_settings, metadata_repository

Progress = Callable[[PullProgress], None]


@dataclass
class Created:
    path: Path
    versions: dict[str, str] = field(default_factory=dict)  # version -> manifest digest
    images: int = 0
    bytes: int = 0
    signed: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "versions": self.versions, "images": self.images, "bytes": self.bytes,
                "signed": self.signed, "seconds": round(self.seconds, 3)}


def create(settings: Settings, versions: list[str], dest: Path, *, progress: Progress | None = None) -> Created:
    """Write the bundle of ``versions`` to ``dest`` (replaced only once complete)."""
    started = time.monotonic()
    repo = settings.require_image()
    tags = list(dict.fromkeys(OsVersion.parse(v).tag for v in versions))
    trust = for_settings(settings)
    registry = Registry(repo)
    created = Created(dest.absolute(), signed=trust.enforced)
    copied: set[str] = set()
    with BundleWriter(dest) as writer:
        for tag in tags:
            digest = trust.require(tag).digest if trust.enforced else resolve(registry, repo, tag).digest
            image = _manifest(registry, digest, f"{repo}:{tag}")
            _copy_blobs(writer, registry, image, f"{repo}:{tag}", progress)
            manifest = _release_manifest(registry, writer, image, tag)
            if trust.enforced:
                require_pinned_services(tag, manifest)
            for ref in sorted({spec.image for spec in manifest.services.values() if spec.image}):
                if ref not in copied:
                    _copy_service(writer, ref, progress)
                    copied.add(ref)
            writer.add_image(ref_name=tag, name=f"{repo}:{tag}", role="os", manifest=image.body,
                             media_type=image.media_type, repo_tags=[f"{repo}:{tag}"])
            created.versions[tag] = image.digest
        if trust.enforced:
            for name, data in sorted(trust.offline_files().items()):
                writer.add_metadata(repository=repo, name=name, data=data)
        else:
            trust.note_unverified()
        writer.commit()
    created.images = len(tags) + len(copied)
    created.bytes = created.path.stat().st_size
    created.seconds = time.monotonic() - started
    return created


def _manifest(registry: Registry, digest: Digest, what: str) -> ImageManifest:
    image = registry.image_manifest(digest)
    if image.digest != digest:
        raise IntegrityError(f"{what}: the registry served {image.digest[:19]}... for {digest[:19]}...; refused")
    return image


def _copy_blobs(writer: BundleWriter, registry: Registry, image: ImageManifest, what: str,
                progress: Progress | None) -> None:
    for blob in (image.config, *image.layers):
        if writer.has_blob(blob.digest):
            continue
        chunks = registry.blob_chunks(blob.digest, blob.size, f"{what} blob {blob.digest[:19]}")
        writer.add_blob(blob.digest, blob.size, _shown(chunks, progress, what, blob.digest, blob.size))


def _copy_service(writer: BundleWriter, ref: str, progress: Progress | None) -> None:
    parsed = ImageRef.parse(ref)
    registry = Registry(parsed.repository)
    digest = parsed.digest or registry.manifest(parsed.pin).digest
    image = _manifest(registry, digest, ref)
    _copy_blobs(writer, registry, image, ref, progress)
    writer.add_image(ref_name=ref, name=ref, role="service", manifest=image.body, media_type=image.media_type,
                     repo_tags=[f"{parsed.repository}:{parsed.tag}"] if parsed.tag else [])


def _release_manifest(registry: Registry, writer: BundleWriter, image: ImageManifest, tag: str) -> ReleaseManifest:
    """The release manifest of the OS image, read from its layers as the bundle now holds them
    (its service images are named in it), after the config's version label: a bundle holds OS
    images only, as a store does."""
    labels = registry.image_labels(image.config.digest, tag)
    where = f"{registry.repository}:{tag}"
    if labels.get(LABEL_OS_VERSION) != tag:
        label = labels.get(LABEL_OS_VERSION)
        raise ManifestError(where, [Issue(f"labels.{LABEL_OS_VERSION}", "missing: this is not an osctl OS image"
                                          if label is None else f"{label[:40]!r} differs from the tag {tag!r}")])
    return manifest_from_layers([lambda layer=layer: writer.read_blob(layer.digest) for layer in image.layers],
                                where, tag)


def _shown(chunks: Iterator[bytes], progress: Progress | None, what: str, digest: Digest,
           size: int) -> Iterator[bytes]:
    done = 0
    for chunk in chunks:
        done += len(chunk)
        if progress is not None:
            progress(PullProgress(what, digest[7:19], "Copying", done, size))
        yield chunk


# -- inspect ---------------------------------------------------------------------------------
@dataclass
class Inspected:
    path: Path
    repository: str | None
    versions: list[dict[str, object]]
    services: list[dict[str, object]]
    bytes: int
    signed: bool
    verified: str | None  # against this host's root: "yes", the refusal, or None when no root is configured
    metadata_expires: str | None

    def as_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "repository": self.repository, "versions": self.versions,
                "services": self.services, "bytes": self.bytes, "signed": self.signed, "verified": self.verified,
                "metadata_expires": self.metadata_expires}


def inspect(settings: Settings, path: Path) -> Inspected:
    """What the bundle holds, and whether its metadata verifies against this host's trusted root.

    The verification runs on a scratch copy of what the host trusts, so inspecting changes
    nothing (not even the host's rollback floor).
    """
    settings.bundle_option = str(path)
    bundle = open_bundle(settings)
    versions = sorted((image for image in bundle.images("os")), key=lambda i: OsVersion.parse(i.ref_name))
    services = sorted(bundle.images("service"), key=lambda i: i.ref_name)
    timestamp = bundle.metadata_file("timestamp.json")
    return Inspected(
        path=bundle.path, repository=bundle_repository(bundle),
        versions=[{"version": i.ref_name, "digest": i.source, "bytes": i.size} for i in versions],
        services=[{"image": i.ref_name, "digest": i.source, "bytes": i.size} for i in services],
        bytes=bundle.path.stat().st_size, signed=timestamp is not None,
        verified=_verified(settings, bundle) if timestamp is not None else None,
        metadata_expires=_expires(timestamp))


def _verified(settings: Settings, bundle: Bundle) -> str | None:
    root = settings.trust.root
    if root is None:
        return None
    from osctl.adapters.tufclient import TufClient

    trust = for_settings(settings)
    with tempfile.TemporaryDirectory(prefix="osctl-bundle-tuf-") as scratch:
        cache = Path(scratch) / "tuf"
        _copy_tree(trust.cache, cache)
        try:
            index = TufClient(cache, root, metadata=BundleMetadata(bundle), images=None).refresh()
        except OsctlError as exc:
            return exc.message
    held = {image.ref_name: image.source for image in bundle.images("os")}
    wrong = [v for v, digest in held.items() if (signed := index.release(v)) is None or signed.digest != digest]
    if wrong:
        return f"the release keys do not sign {', '.join(sorted(wrong)[:5])} as the bundle holds them"
    return "yes"


def _copy_tree(source: Path, dest: Path) -> None:
    dest.mkdir(mode=0o700)
    for name in ("root.json", "timestamp.json", "snapshot.json", "targets.json"):
        data = (source / name).read_bytes() if (source / name).is_file() else None
        if data is not None:
            (dest / name).write_bytes(data)


def _expires(timestamp: bytes | None) -> str | None:
    try:
        return str(json.loads(timestamp or b"")["signed"]["expires"])[:40]
    except (ValueError, KeyError, TypeError):
        return None


def newest_in_bundle(settings: Settings) -> str:
    """The newest release the bundle holds (and, with a trusted root, the release keys sign)."""
    bundle = open_bundle(settings)
    held = {image.ref_name for image in bundle.images("os") if try_parse(image.ref_name) is not None}
    trust = for_settings(settings)
    if trust.enforced:
        held &= set(trust.index().installable())
    released = sorted((OsVersion.parse(v) for v in held if not OsVersion.parse(v).is_prerelease), reverse=True)
    if not released:
        raise (TrustError if trust.enforced else BundleError)(
            f"{bundle.path} holds no released version" + (" the release keys sign" if trust.enforced else ""),
            hint="osctl bundle inspect shows what it holds")
    return released[0].tag


# -- push ------------------------------------------------------------------------------------
@dataclass
class Pushed:
    repository: str
    images: list[str] = field(default_factory=list)
    blobs_sent: int = 0
    blobs_present: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"repository": self.repository, "images": self.images, "blobs_sent": self.blobs_sent,
                "blobs_present": self.blobs_present, "seconds": round(self.seconds, 3)}


def push(settings: Settings, path: Path, image: str | None, *, progress: Progress | None = None) -> Pushed:
    """Seed a registry (a mirror inside the air gap) with everything the bundle holds.

    OS versions go to ``image`` (default: the repository they were made from), the release
    metadata beside it (``<image>-tuf``), each service image to its own path on the same
    registry host. Manifests go byte for byte, so digests, and signatures, stay what they were.
    """
    started = time.monotonic()
    settings.bundle_option = str(path)
    bundle = open_bundle(settings)
    source = bundle_repository(bundle)
    target = image or source
    if target is None:
        raise BundleError(f"{bundle.path} holds no OS version", hint="osctl bundle inspect shows what it holds")
    host = Registry(target).host
    pushed = Pushed(target)
    for entry in (*bundle.images("service"), *bundle.images("metadata"), *bundle.images("os")):  # the OS last:
        repository, reference = _destination(entry, target, host)   # a mirror never names a version it lacks
        registry = Registry(repository, push=True)
        for blob in (entry.config, *(layer.digest for layer in entry.layers)):
            sent = registry.push_blob_chunks(blob, lambda digest=blob: bundle.read_blob(digest))
            pushed.blobs_sent += sent
            pushed.blobs_present += not sent
        registry.push_manifest(reference, entry.source_bytes, entry.source_media_type)
        shown = f"{repository}{'@' if reference.startswith('sha256:') else ':'}{reference}"
        pushed.images.append(shown)
        if progress is not None:
            progress(PullProgress(shown, "manifest", "Pushed", entry.size, entry.size))
    pushed.seconds = time.monotonic() - started
    return pushed


def _destination(entry: BundleImage, target: str, host: str) -> tuple[str, str]:
    """(repository, tag or digest) an image of the bundle goes to in the registry at ``host``."""
    if entry.role == "os":
        return target, entry.ref_name
    if entry.role == "metadata":
        return metadata_repository(target), entry.name.rsplit(":", 1)[-1]
    parsed = ImageRef.parse(entry.ref_name)
    path = parsed.repository.split("/", 1)[1] if parsed.registry else parsed.repository
    return f"{host}/{path}", parsed.tag or entry.source
