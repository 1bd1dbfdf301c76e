"""Checking that an image honours the OS image contract (docs/image-format.md).

Used by ``osctl image validate`` for people who build OS images, and by every pull: an image
that is not an OS image, whose manifest is invalid, whose version label differs from its tag
or that lacks its boot artifacts must never become a stored, bootable version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from osctl.adapters import fsutil
from osctl.adapters.engine import MAX_FILE_BYTES, Engine
from osctl.adapters.layerfiles import Found, find_files
from osctl.constants import LABEL_OS_VERSION, MANIFEST_PATH, TRUST_ROOT_PATH
from osctl.domain.manifest import parse_manifest
from osctl.domain.naming import host_labels
from osctl.errors import ImageFileError, Issue, ManifestError, NotFoundError, UsageError
from osctl.models.engine import ImageInfo, PullProgress
from osctl.models.manifest import ReleaseManifest
from osctl.models.refs import ImageRef
from osctl.models.version import try_parse


MAX_TRUST_ROOT = 512_000  # python-tuf's own limit for root metadata


@dataclass(frozen=True)
class OsImageReport:
    """An image that passed every check, and what it holds."""

    ref: ImageRef
    image: ImageInfo
    manifest: ReleaseManifest
    manifest_text: bytes
    artifacts: dict[str, bytes]  # path inside the image -> content
    trust_root: bytes | None = None  # the release keys' root.json the image ships, if any

    @property
    def version(self) -> str:
        return self.manifest.version


def validate_manifest_file(path: Path) -> ReleaseManifest:
    """Validate a release manifest on disk, as an image builder would before building.

    Read as bytes, like the manifest in an image: text that is not UTF-8 is then the same
    invalid manifest (exit 2) from a file as from an image.
    """
    text = fsutil.read_bytes(path)
    if text is None:
        raise UsageError(f"{path} does not exist")
    return parse_manifest(text, str(path))


def image_target(text: str, repository: Callable[[], str], *, pull: bool) -> ImageRef:
    """What ``osctl image validate TEXT`` checks: a version of ``repository()`` when TEXT is a
    bare word, else a reference; refused when osctl would pull it from a registry nobody named.

    The engine resolves a reference without a registry host (``latest``, ``osctl/os:v1``) to
    Docker Hub; osctl never contacts a registry the user did not name, so such a reference is
    only accepted with ``--no-pull`` (an image the engine already holds).
    """
    example = "e.g. 127.0.0.1:5000/osctl/os:v1.4"
    if not any(mark in text for mark in "/:@"):
        if try_parse(text) is None:
            raise UsageError(f"{text!r} is not a version (of --image) nor an image reference with a registry",
                             hint=f"name a version such as v1.4, or a whole reference, {example}")
        return ImageRef(repository()).with_tag(text)
    try:
        ref = ImageRef.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc), hint=f"a reference names its registry, {example}") from None
    if ref.registry is None and pull:
        raise UsageError(f"{text!r} names no registry host, and osctl never pulls from one not named "
                         "(the engine would ask Docker Hub)",
                         hint=f"give its registry, {example}; or --no-pull for an image the engine holds")
    return ref


def inspect_os_image(
    engine: Engine,
    ref: ImageRef,
    *,
    host_id: str,
    pull: bool = True,
    progress: Callable[[PullProgress], None] | None = None,
    expected_version: str | None = None,
) -> OsImageReport:
    """Check ``ref`` against the OS image contract, pulling it first when the engine lacks it.

    ``expected_version`` is the tag the image was asked for, when ``ref`` itself does not carry
    it (a pull by digest); the version label and the manifest must both agree with it.
    """
    info = engine.image(ref)
    if info is None:
        if not pull:
            raise NotFoundError(f"the engine does not hold {ref}", hint="pull it first, or drop --no-pull")
        info = engine.pull(ref, progress)

    tag = expected_version or (ref.tag if ref.digest is None else None)
    label = info.labels.get(LABEL_OS_VERSION)
    if label is None:
        raise ManifestError(str(ref), [Issue("labels", f"no {LABEL_OS_VERSION} label: this is not an osctl OS image")])
    tag_is_version = tag is not None and try_parse(tag) is not None
    if tag_is_version and label != tag:
        raise ManifestError(str(ref), [Issue(f"labels.{LABEL_OS_VERSION}", f"{label!r} differs from the tag {tag!r}")])

    text = _read_files(engine, ref, {"": MANIFEST_PATH}, host_id)[MANIFEST_PATH]
    if text is None:
        raise ManifestError(str(ref), [Issue("", f"the image has no {MANIFEST_PATH}: this is not an osctl OS image")])
    manifest = parse_manifest(text, f"{ref}:{MANIFEST_PATH}", expected_version=label)

    wanted = {"boot.kernel": manifest.boot.kernel}
    if manifest.boot.initrd:
        wanted["boot.initrd"] = manifest.boot.initrd
    found = _read_files(engine, ref, {**wanted, "trust root": TRUST_ROOT_PATH}, host_id)
    missing = [Issue(key, f"{path} is not a file in the image") for key, path in wanted.items() if found[path] is None]
    if missing:
        raise ManifestError(f"{ref}:{MANIFEST_PATH}", missing)
    artifacts = {path: found[path] or b"" for path in wanted.values()}
    if len(found.get(TRUST_ROOT_PATH) or b"") > MAX_TRUST_ROOT:
        raise ManifestError(str(ref), [Issue("", f"{TRUST_ROOT_PATH} is larger than {MAX_TRUST_ROOT} bytes: "
                                                 "not a root.json")])
    return OsImageReport(ref, info, manifest, text, artifacts, found.get(TRUST_ROOT_PATH))


MAX_MANIFEST = 1 << 20  # a release manifest read straight out of a layer: a YAML file of kilobytes


def manifest_from_layers(layers: Sequence[Callable[[], Iterator[bytes]]], where: str, version: str) -> ReleaseManifest:
    """The release manifest of an image that is not in the engine, read from its layer blobs
    (a registry's or a bundle's, base first): to know its service images before any is fetched.

    It passes the same parser as a pulled image's; the engine checks the whole contract again
    once the image is in (``inspect_os_image``).
    """
    found = _layer_files(layers, {MANIFEST_PATH: True}, where)[MANIFEST_PATH]
    if found is None or found.data is None:
        problem = "is larger than a release manifest can be" if found is not None else \
            "is not in the image: this is not an osctl OS image"
        raise ManifestError(where, [Issue("", f"{MANIFEST_PATH} {problem}")])
    return parse_manifest(found.data, f"{where}:{MANIFEST_PATH}", expected_version=version)


def boot_files_in_layers(layers: Sequence[Callable[[], Iterator[bytes]]], manifest: ReleaseManifest,
                         where: str) -> tuple[int, dict[str, tuple[int, bytes | None]]]:
    """What a version stages for booting, read from its layers before the image is in the
    engine: (the bytes it stages in the store: manifest, kernel, initrd; the kernel's and the
    initrd's size and content by their loader file name, no content when too large to hold)."""
    wanted = {"vmlinuz": manifest.boot.kernel, **({"initrd.img": manifest.boot.initrd} if manifest.boot.initrd else {})}
    found = _layer_files(layers, {MANIFEST_PATH: False, **dict.fromkeys(wanted.values(), True)}, where,
                         limit=MAX_FILE_BYTES)
    staged = sum(f.size for f in found.values() if f is not None)
    files = {name: found[path] for name, path in wanted.items()}
    return staged, {name: (f.size, f.data) for name, f in files.items() if f is not None}


def _layer_files(layers: Sequence[Callable[[], Iterator[bytes]]], paths: dict[str, bool], where: str, *,
                 limit: int = MAX_MANIFEST) -> dict[str, Found | None]:
    try:
        return find_files(layers, paths, limit=limit)
    except ImageFileError as exc:  # a broken layer, a link loop: the image is not a usable OS image
        raise ManifestError(where, [Issue("", f"{exc.path}: {exc.problem}" if exc.path else exc.problem)]) from None


def _read_files(engine: Engine, ref: str, wanted: dict[str, str], host_id: str) -> dict[str, bytes | None]:
    """The files ``wanted`` names (manifest key -> path in the image); a symlink loop or a file
    too large to hold is reported at the key that named it, as an invalid image (exit 2)."""
    try:
        return engine.read_files(ref, list(wanted.values()), labels=host_labels(host_id))
    except ImageFileError as exc:
        key = next((k for k, path in wanted.items() if path == exc.path), "")
        raise ManifestError(f"{ref}:{MANIFEST_PATH}", [Issue(key, exc.problem)]) from None
