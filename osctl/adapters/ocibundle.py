"""Bundle files: OS versions, their service images and their signed metadata in one tar.

A host without a registry is given one file. It is two archives over the same blobs, so that
independent tools read it too: an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/<hex>``: ``skopeo inspect oci-archive:FILE:v1.6``) and a docker-archive
(``manifest.json``: ``docker load``). docs/bundles.md describes the format for outsiders.

The index entry of an image is always an OCI image manifest, because skopeo skips entries of
Docker's media types; when the registry served a Docker schema2 manifest (our images are
those), the entry is its OCI conversion over the same blobs and the registry's own bytes are
kept as a blob named by the entry's ``io.osctl.bundle.source`` annotation. The source digest is
the one the registry, the store record and the release keys know, so the reader checks that
the entry and its source name the same config and layers: what is loaded is what was signed.

A bundle is outside input like a registry answer. The reader never extracts anything: it reads
the member table (``layerfiles.tar_entries``), refuses what a bundle never holds (duplicate
members, links or devices where blobs go, blob names outside the digest grammar, data running
past the end of the file), reads JSON only up to ``MAX_INDEX`` bytes, and streams layers in
chunks, hash-checking every blob as it goes; every problem is one ``BundleError`` (or
``IntegrityError`` for bytes that do not hash to their digest) naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from osctl.adapters import ociartifact
from osctl.adapters.layerfiles import BLOCK, TarFormatError, tar_entries
from osctl.errors import BundleError, IntegrityError
from osctl.models.refs import TAG, Digest, ImageRef, Tag
from osctl.models.registry import Descriptor

MAX_INDEX = 4 << 20  # index.json, manifest.json, any manifest or config blob read into memory
MAX_MEMBERS = 100_000
MAX_LAYERS = 1000
CHUNK = 1 << 20  # bytes of a blob read, hashed and handed on at a time

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {  # Docker schema2 layer type -> its OCI name; foreign layers are never bundled
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar": "application/vnd.oci.image.layer.v1.tar",
}
LAYOUT = {"imageLayoutVersion": "1.0.0"}

ANN_REF = "org.opencontainers.image.ref.name"
ANN_NAME = "io.containerd.image.name"
ANN_ROLE = "io.osctl.bundle.role"
ANN_SOURCE = "io.osctl.bundle.source"

Role = Literal["os", "service", "metadata"]
ROLES: tuple[Role, ...] = ("os", "service", "metadata")
_BLOBS = "blobs/sha256/"
_HINT_DAMAGED = "the file is damaged or not an osctl bundle; copy or make it again"


@dataclass(frozen=True)
class BundleEntry:
    """One ``index.json`` entry, typed; ``size`` is its manifest's byte count."""

    ref_name: str
    name: str
    role: Role
    digest: Digest
    source: Digest
    size: int


@dataclass(frozen=True)
class BundleImage:
    """One index entry whose manifest, source manifest and config were read and hash-checked.

    ``layers`` are the source manifest's (equal to the entry's, checked); ``diff_ids`` come from
    the config's ``rootfs`` (empty for metadata).
    """

    ref_name: str
    name: str
    role: Role
    digest: Digest
    source: Digest
    source_bytes: bytes
    source_media_type: str
    config: Digest
    config_bytes: bytes
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        """Bytes of its config and layers: what loading it reads from the bundle."""
        return len(self.config_bytes) + sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


class _FileSource:
    """The bundle file as a ``TarSource``: positioned reads (``os.pread``), so that nothing else
    reading the file at the same time moves a shared offset; a skip costs no I/O."""

    def __init__(self, fd: int, length: int) -> None:
        self._fd, self._length = fd, length
        self.position = 0

    def read(self, count: int) -> bytes:
        data = os.pread(self._fd, max(0, min(count, self._length - self.position)), self.position)
        self.position += len(data)
        return data

    def skip(self, count: int) -> None:
        self.position = min(self.position + count, self._length)


class Bundle:
    """A bundle file, opened for reading: its member table and index parsed and checked.

    Cheap beyond that: manifests and configs are read when an image is asked for, layers only
    when streamed. Use as a context manager, or ``close()``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block us
        except FileNotFoundError:
            raise BundleError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise BundleError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        self._fd: int | None = fd
        self._finalizer = weakref.finalize(self, os.close, fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._error("not a regular file")
            self._length = info.st_size
            self._members = self._scan()
            self._check_layout()
            self.entries = self._index()
        except BaseException:
            self.close()
            raise
        self._images: dict[str, BundleImage] = {}
        self._titles: dict[str, BundleImage] | None = None

    # -- opening ---------------------------------------------------------------------------
    def _error(self, problem: str, hint: str | None = _HINT_DAMAGED) -> BundleError:
        return BundleError(f"{self.path}: {problem}", hint=hint)

    def _scan(self) -> dict[str, _Member]:
        """The member table: our names to where their data is; refuses what a bundle never holds."""
        assert self._fd is not None
        members: dict[str, _Member] = {}
        seen: set[str] = set()
        count = 0
        try:
            for entry in tar_entries(_FileSource(self._fd, self._length)):
                count += 1
                if count > MAX_MEMBERS:
                    raise self._error(f"more than {MAX_MEMBERS} members; not a bundle")
                name = entry.name.removeprefix("./")
                if entry.kind == "dir":
                    name = name.rstrip("/")
                shown = repr(name[:100])
                if entry.offset + entry.size > self._length:
                    raise self._error(f"the data of member {shown} runs past the end of the file (cut short?)",
                                      hint="copy the file again: it is incomplete")
                if entry.kind == "dir" and name in ("blobs", "blobs/sha256"):
                    continue
                if name in seen:
                    raise self._error(f"member {shown} is there twice")
                seen.add(name)
                ours = name in ("index.json", "oci-layout", "manifest.json") or name.startswith("blobs/")
                if not ours:
                    continue  # never extracted, never looked up: harmless
                if name.startswith("blobs/"):
                    try:
                        Digest("sha256:" + name.removeprefix(_BLOBS) if name.startswith(_BLOBS) else name)
                    except ValueError:
                        raise self._error(f"member {shown} is not a blob name (blobs/sha256/<64 hex digits>)") from None
                if entry.kind != "file" or entry.typeflag not in ("0", "7"):
                    what = {"symlink": "a symbolic link", "hardlink": "a hard link", "dir": "a directory"}
                    raise self._error(f"member {shown} is {what.get(entry.kind, 'a special file')}, not a file")
                members[name] = _Member(entry.offset, entry.size)
        except TarFormatError as exc:
            if count == 0:
                raise self._error(f"not a tar file (it {exc})", hint="a bundle is an uncompressed tar file "
                                  "made by osctl; was it compressed or cut short?") from None
            raise self._error(f"not a readable tar file: it {exc}") from None
        except OSError as exc:
            raise BundleError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return members

    def _json(self, name: str, limit: int | None = None) -> Any:
        limit = MAX_INDEX if limit is None else limit
        member = self._members.get(name)
        if member is None:
            raise self._error(f"no {name} in it; not an osctl bundle")
        if member.size > limit:
            raise self._error(f"{name} is {member.size} bytes, more than the {limit} allowed")
        return self._parse(self._pread(member.offset, member.size), name)

    def _parse(self, data: bytes, what: str) -> Any:
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise self._error(f"{what} is not valid JSON ({str(exc)[:80]})") from None

    def _check_layout(self) -> None:
        doc = self._json("oci-layout", 4096)
        if not isinstance(doc, dict) or doc.get("imageLayoutVersion") != "1.0.0":
            raise self._error("oci-layout does not say imageLayoutVersion 1.0.0")

    def _index(self) -> list[BundleEntry]:
        doc = self._json("index.json")
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list):
            raise self._error("index.json has no list of manifests")
        entries: list[BundleEntry] = []
        refs: set[str] = set()
        for number, item in enumerate(manifests):
            try:
                entry = _entry(item)
            except ValueError as exc:
                raise self._error(f"index.json entry {number}: {exc}") from None
            if entry.ref_name in refs:
                raise self._error(f"index.json names {entry.ref_name} twice")
            refs.add(entry.ref_name)
            for digest, what in ((entry.digest, "manifest"), (entry.source, "source manifest")):
                if self._member(digest) is None:
                    raise self._error(f"index.json names {what} {digest[:19]}... for {entry.ref_name}, "
                                      "which the file does not hold")
            if self._members[_BLOBS + entry.digest.hex].size != entry.size:
                raise self._error(f"the manifest of {entry.ref_name} is not the {entry.size} bytes index.json says")
            entries.append(entry)
        return entries

    # -- images ----------------------------------------------------------------------------
    def image(self, ref_name: str) -> BundleImage:
        """The entry named ``ref_name`` (``v1.6``, a service reference, ``<repo>-tuf:<file>``),
        read and checked; ``BundleError`` saying what the file holds instead when absent."""
        if ref_name in self._images:
            return self._images[ref_name]
        entry = next((e for e in self.entries if e.ref_name == ref_name), None)
        if entry is None:  # named as what was asked for: a version among versions, an image among images
            versions = [e.ref_name for e in self.entries if e.role == "os"]
            asked_version = TAG.fullmatch(ref_name) is not None
            held = versions if asked_version else [e.ref_name for e in self.entries if e.role == "service"]
            shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
            what = "versions" if asked_version else "service images"
            raise BundleError(f"{self.path} holds no {ref_name[:120]} (its {what}: {shown or 'none'})",
                              hint="osctl bundle inspect shows what it holds")
        image = self._read_image(entry)
        self._images[ref_name] = image
        return image

    def images(self, role: Role) -> list[BundleImage]:
        return [self.image(entry.ref_name) for entry in self.entries if entry.role == role]

    def _read_image(self, entry: BundleEntry) -> BundleImage:
        where = f"the manifest of {entry.ref_name}"
        body = self.blob_bytes(entry.digest, MAX_INDEX)
        try:
            config, layers = _manifest(self._parse(body, where), entry.role)
        except ValueError as exc:
            raise self._error(f"{where}: {exc}") from None
        source_bytes, source_type = body, OCI_MANIFEST
        source_layers = layers
        if entry.source != entry.digest:
            if entry.role == "metadata":
                raise self._error(f"{where}: metadata has no source manifest of its own")
            source_bytes = self.blob_bytes(entry.source, MAX_INDEX)
            doc = self._parse(source_bytes, f"the source manifest of {entry.ref_name}")
            source_type = doc.get("mediaType", OCI_MANIFEST) if isinstance(doc, dict) else None  # optional in OCI
            try:
                if source_type not in (DOCKER_MANIFEST, OCI_MANIFEST):
                    raise ValueError(f"its media type is {str(source_type)[:80]!r}")
                source_config, source_layers = _manifest(doc, entry.role)
            except ValueError as exc:
                raise self._error(f"the source manifest of {entry.ref_name}: {exc}") from None
            if (source_config[0], source_config[1]) != (config[0], config[1]) or \
                    [(b.digest, b.size) for b in source_layers] != [(b.digest, b.size) for b in layers]:
                raise self._error(f"the index entry of {entry.ref_name} and its source manifest name "
                                  "different blobs", hint="the bundle was altered; do not use it")
        config_bytes = self.blob_bytes(config[0], MAX_INDEX)
        if len(config_bytes) != config[1]:
            raise IntegrityError(f"{self.path}: the config of {entry.ref_name} is {len(config_bytes)} bytes, "
                                 f"not the {config[1]} its manifest says")
        diff_ids = self._diff_ids(entry, config_bytes, len(layers))
        return BundleImage(entry.ref_name, entry.name, entry.role, entry.digest, entry.source, source_bytes,
                           str(source_type), config[0], config_bytes, tuple(source_layers), diff_ids)

    def _diff_ids(self, entry: BundleEntry, config_bytes: bytes, layers: int) -> tuple[str, ...]:
        if entry.role == "metadata":
            if config_bytes != ociartifact.EMPTY:
                raise self._error(f"the config of {entry.ref_name} is not the empty config of metadata")
            return ()
        doc = self._parse(config_bytes, f"the config of {entry.ref_name}")
        rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        try:
            if not isinstance(diff_ids, list):
                raise ValueError("it has no rootfs.diff_ids")
            checked = tuple(Digest(d) for d in diff_ids)
        except ValueError as exc:
            raise self._error(f"the config of {entry.ref_name}: {exc}") from None
        if len(checked) != layers:
            raise self._error(f"the config of {entry.ref_name} lists {len(checked)} layers, its manifest {layers}")
        return checked

    def metadata_file(self, name: str) -> bytes | None:
        """The metadata file titled ``name`` (``timestamp.json``), hash-checked; None when absent."""
        if self._titles is None:
            self._titles = {}
            for image in self.images("metadata"):
                title = _title(self._parse(image.source_bytes, image.ref_name))
                if title in self._titles:
                    raise self._error(f"it holds metadata {title[:80]!r} twice")
                self._titles[title] = image
        image = self._titles.get(name)
        if image is None:
            return None
        layer = image.layers[0]
        data = self.blob_bytes(layer.digest, MAX_INDEX)
        if len(data) != layer.size:
            raise IntegrityError(f"{self.path}: metadata {name} is {len(data)} bytes, not the {layer.size} "
                                 "its manifest says")
        return data

    # -- blobs -----------------------------------------------------------------------------
    def _member(self, digest: Digest) -> _Member | None:
        return self._members.get(_BLOBS + Digest(digest).hex)

    def _blob_member(self, digest: Digest) -> _Member:
        member = self._member(digest)
        if member is None:
            raise self._error(f"blob {digest[:19]}... is missing from it")
        return member

    def _pread(self, offset: int, count: int) -> bytes:
        if self._fd is None:
            raise ValueError("the bundle is closed")
        try:
            data = os.pread(self._fd, count, offset)
        except OSError as exc:
            raise BundleError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if len(data) != count:
            raise self._error("it was cut short while being read", hint="copy the file again: it is incomplete")
        return data

    def blob_bytes(self, digest: Digest, limit: int) -> bytes:
        """A blob's bytes, at most ``limit``; ``IntegrityError`` unless they hash to ``digest``."""
        member = self._blob_member(digest)
        if member.size > limit:
            raise self._error(f"blob {digest[:19]}... is {member.size} bytes, more than the {limit} allowed for it")
        data = self._pread(member.offset, member.size)
        if hashlib.sha256(data).hexdigest() != Digest(digest).hex:
            raise self._mismatch(digest)
        return data

    def _mismatch(self, digest: Digest) -> IntegrityError:
        return IntegrityError(f"{self.path}: blob {digest[:19]}... does not hash to its digest",
                              hint="the file is damaged; copy or make it again")

    def read_blob(self, digest: Digest, size: int | None = None) -> Iterator[bytes]:
        """A blob's bytes in chunks of at most ``CHUNK``; ``IntegrityError`` instead of its last
        chunk when the bytes do not hash to ``digest``, at once when it is not ``size`` bytes."""
        digest = Digest(digest)
        member = self._blob_member(digest)
        if size is not None and member.size != size:
            raise IntegrityError(f"{self.path}: blob {digest[:19]}... is {member.size} bytes, not the {size} "
                                 "its manifest says", hint="the file is damaged; copy or make it again")
        hasher = hashlib.sha256()
        done = 0
        while True:
            count = min(CHUNK, member.size - done)
            chunk = self._pread(member.offset + done, count)
            hasher.update(chunk)
            done += count
            if done == member.size:
                if hasher.hexdigest() != digest.hex:
                    raise self._mismatch(digest)
                if chunk:
                    yield chunk
                return
            yield chunk

    def docker_archive(self, images: list[BundleImage], progress: Callable[[int], None] | None = None
                       ) -> Iterator[bytes]:
        """A docker-archive of ``images`` (``docker load`` input), streamed from the bundle.

        ``manifest.json`` (no RepoTags: the caller tags what it loaded) comes last, after every
        config and layer blob, each once and hash-checked as it streams: a blob that does not
        hash raises ``IntegrityError`` from this generator before its last byte is yielded, so
        the engine never receives a complete archive. ``progress(n)`` is called with each
        chunk's count of blob bytes.
        """
        entries: list[dict[str, Any]] = []
        blobs: dict[Digest, int] = {}
        for image in images:
            if image.role == "metadata":
                raise ValueError(f"{image.ref_name} is metadata, not an image the engine can load")
            blobs.setdefault(image.config, len(image.config_bytes))
            for layer in image.layers:
                blobs.setdefault(layer.digest, layer.size)
            entries.append({"Config": _BLOBS + image.config.hex, "RepoTags": [],
                            "Layers": [_BLOBS + layer.digest.hex for layer in image.layers]})
        for digest, size in blobs.items():
            yield _tar_header(_BLOBS + digest.hex, size)
            for chunk in self.read_blob(digest, size):
                yield chunk
                if progress is not None:
                    progress(len(chunk))
            yield bytes(_padded(size) - size)
        manifest = json.dumps(entries, separators=(",", ":")).encode()
        yield _tar_header("manifest.json", len(manifest)) + manifest + bytes(_padded(len(manifest)) - len(manifest))
        yield bytes(2 * BLOCK)

    def close(self) -> None:
        if self._fd is not None:
            self._fd = None
            self._finalizer()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BundleWriter:
    """Writes a bundle to ``<dest>.partial-XXXX`` beside ``dest``; ``commit`` renames it there.

    Blobs are written as they are added (streamed, hash-checked, never all in memory); the
    index, ``manifest.json`` and ``oci-layout`` at commit. Until then ``dest`` is untouched, and
    ``abort`` (or leaving the ``with`` block without committing) removes the partial file.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        try:
            fd, name = tempfile.mkstemp(prefix=f"{self.dest.name}.partial-", dir=self.dest.parent)
        except OSError as exc:
            raise BundleError(f"cannot write {self.dest}: {exc.strerror or exc}") from None
        self.partial = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._blobs: dict[Digest, int] = {}
        self._offsets: dict[Digest, int] = {}  # where each blob's bytes start in the partial file
        self._index: list[dict[str, Any]] = []
        self._docker: list[dict[str, Any]] = []
        self._refs: set[str] = set()
        self._done = False

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise BundleError(f"cannot write {self.dest}: {exc.strerror or exc}") from None

    def _open(self) -> None:
        if self._done:
            raise ValueError(f"the bundle writer for {self.dest} was already committed or aborted")

    def has_blob(self, digest: Digest) -> bool:
        return Digest(digest) in self._blobs

    def add_blob(self, digest: Digest, size: int, chunks: Iterable[bytes]) -> None:
        """Add a blob from ``chunks`` unless it is there already (then ``chunks`` is not touched);
        ``IntegrityError`` (and nothing of it in the file) unless the bytes are ``size`` bytes
        hashing to ``digest``."""
        self._open()
        digest = Digest(digest)
        if digest in self._blobs:
            if self._blobs[digest] != size:
                raise IntegrityError(f"blob {digest[:19]}... was added as {self._blobs[digest]} bytes, now {size}")
            return
        start = self._file.tell()
        hasher, count = hashlib.sha256(), 0
        try:
            self._write(_tar_header(_BLOBS + digest.hex, size))
            offset = self._file.tell()
            for chunk in chunks:
                count += len(chunk)
                if count > size:
                    raise IntegrityError(f"blob {digest[:19]}... for {self.dest.name} is more than the {size} "
                                         "bytes its manifest says")
                hasher.update(chunk)
                self._write(chunk)
            if count != size or hasher.hexdigest() != digest.hex:
                raise IntegrityError(f"blob {digest[:19]}... for {self.dest.name}: {count} bytes that do not hash "
                                     f"to its digest (expected {size} bytes)")
            self._write(bytes(_padded(size) - size))
        except BaseException:
            self._file.seek(start)
            self._file.truncate()
            raise
        self._blobs[digest] = size
        self._offsets[digest] = offset

    def read_blob(self, digest: Digest) -> Iterator[bytes]:
        """A blob this writer has added, read back from the partial file in chunks: its bytes were
        hash-checked as they were written, so reading them costs no second download."""
        digest = Digest(digest)
        offset, size = self._offsets[digest], self._blobs[digest]
        self._file.flush()
        done = 0
        while done < size:
            try:
                chunk = os.pread(self._file.fileno(), min(CHUNK, size - done), offset + done)
            except OSError as exc:
                raise BundleError(f"cannot read back {self.partial}: {exc.strerror or exc}") from None
            if not chunk:
                raise BundleError(f"{self.partial} was cut short while it was being written")
            done += len(chunk)
            yield chunk

    def _add_bytes(self, data: bytes) -> Digest:
        digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        self.add_blob(digest, len(data), [data])
        return digest

    def add_image(self, *, ref_name: str, name: str, role: Literal["os", "service"], manifest: bytes,
                  media_type: str, repo_tags: list[str]) -> Digest:
        """Add an image whose config and layer blobs were added already; the index entry's digest.

        ``manifest`` is the registry's own bytes (kept as the source blob); a Docker schema2
        manifest gets an OCI conversion as its index entry (see the module docstring).
        """
        self._open()
        if role not in ("os", "service"):
            raise ValueError(f"an image's role is os or service, not {role!r}")
        try:
            Tag(ref_name) if role == "os" else ImageRef.parse(ref_name)
            ImageRef.parse(name)
            for tag in repo_tags:
                if ImageRef.parse(tag).tag is None or ImageRef.parse(tag).digest is not None:
                    raise ValueError(f"{tag!r} is not repository:tag")
        except ValueError as exc:
            raise BundleError(f"cannot add {ref_name[:120]!r} to {self.dest}: {exc}") from None
        if ref_name in self._refs:
            raise BundleError(f"{self.dest}: {ref_name} is added twice")
        if media_type not in (DOCKER_MANIFEST, OCI_MANIFEST) or len(manifest) > MAX_INDEX:
            raise BundleError(f"cannot add {ref_name} to {self.dest}: its manifest is {media_type[:80]!r}, "
                              "not one image manifest")
        try:
            doc = json.loads(manifest)
            if isinstance(doc, dict) and doc.get("mediaType", media_type) != media_type:
                raise ValueError(f"it says it is {str(doc.get('mediaType'))[:80]!r}, not {media_type}")
            config, layers = _manifest(doc, role)
        except (ValueError, RecursionError) as exc:
            raise BundleError(f"cannot add {ref_name} to {self.dest}: its manifest is malformed ({exc})") from None
        for digest, size in [config] + [(layer.digest, layer.size) for layer in layers]:
            if self._blobs.get(digest) != size:
                raise BundleError(f"cannot add {ref_name} to {self.dest}: blob {digest[:19]}... ({size} bytes) "
                                  "was not added first")
        source = self._add_bytes(manifest)
        entry, body = source, manifest
        if media_type == DOCKER_MANIFEST:
            body = _canonical({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
                "layers": [{"mediaType": LAYER_TYPES[layer.media_type], "digest": layer.digest, "size": layer.size}
                           for layer in layers],
            })
            entry = self._add_bytes(body)
        self._record(ref_name, name, role, entry, len(body), source)
        self._docker.append({"Config": _BLOBS + config[0].hex, "RepoTags": list(repo_tags),
                             "Layers": [_BLOBS + layer.digest.hex for layer in layers]})
        return entry

    def add_metadata(self, *, repository: str, name: str, data: bytes) -> None:
        """Add one metadata file as the artifact ``ociartifact.put_file`` publishes (the manifest
        byte for byte), under ``<repository>-tuf:<name>``, so that it can be pushed unchanged."""
        self._open()
        ref_name = f"{repository}-tuf:{name}"
        try:
            Tag(name)
            ImageRef.parse(ref_name)
        except ValueError as exc:
            raise BundleError(f"cannot add metadata {name[:80]!r} to {self.dest}: {exc}") from None
        if ref_name in self._refs:
            raise BundleError(f"{self.dest}: metadata {name} is added twice")
        if len(data) > MAX_INDEX:
            raise BundleError(f"cannot add metadata {name} to {self.dest}: {len(data)} bytes, more than {MAX_INDEX}")
        layer = self._add_bytes(data)
        config = self._add_bytes(ociartifact.EMPTY)
        body = ociartifact.manifest(name, layer, len(data), config)
        self._record(ref_name, ref_name, "metadata", self._add_bytes(body), len(body), None)

    def _record(self, ref_name: str, name: str, role: Role, digest: Digest, size: int, source: Digest | None) -> None:
        self._refs.add(ref_name)
        self._index.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "annotations": {
            ANN_REF: ref_name, ANN_NAME: name, ANN_ROLE: role, ANN_SOURCE: source or digest}})

    def commit(self) -> None:
        """Write the index, manifest.json and oci-layout, make it durable, and put it at ``dest``."""
        self._open()
        index = _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._index})
        for member, body in (("index.json", index), ("manifest.json", _canonical(self._docker)),
                             ("oci-layout", _canonical(LAYOUT))):
            self._write(_tar_header(member, len(body)) + body + bytes(_padded(len(body)) - len(body)))
        self._write(bytes(2 * BLOCK))
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            # mkstemp made it private; a bundle is meant to be carried and read: the usual mode
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(self._file.fileno(), 0o666 & ~umask)
            self._file.close()
            os.replace(self.partial, self.dest)
            folder = os.open(self.dest.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            self.abort()
            raise BundleError(f"cannot write {self.dest}: {exc.strerror or exc}") from None
        self._done = True

    def abort(self) -> None:
        """Remove the partial file; ``dest`` is as it was."""
        self._done = True
        self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _tar_header(name: str, size: int) -> bytes:
    """A regular file's header; pax records only when the size needs them (> 8 GiB)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _entry(item: object) -> BundleEntry:
    """One index.json descriptor, typed; ValueError saying what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("not an object")
    if item.get("mediaType") != OCI_MANIFEST:
        raise ValueError(f"its media type is {str(item.get('mediaType'))[:80]!r}, not an OCI image manifest")
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_INDEX:
        raise ValueError(f"its size is {str(size)[:40]!r}, not a manifest's byte count")
    digest = Digest(item.get("digest"))
    notes = item.get("annotations")
    if not isinstance(notes, dict) or not all(isinstance(v, str) for v in notes.values()):
        raise ValueError("its annotations are not a map of strings")
    role = notes.get(ANN_ROLE)
    if role not in ROLES:
        raise ValueError(f"its role is {str(role)[:40]!r}, not os, service or metadata")
    ref_name = notes.get(ANN_REF, "")
    if role == "os":
        Tag(ref_name)
    else:
        ImageRef.parse(ref_name)
    name = notes.get(ANN_NAME, "")
    ImageRef.parse(name)
    source = Digest(notes.get(ANN_SOURCE, digest))
    return BundleEntry(ref_name, name, role, digest, source, size)


def _descriptor(value: object, where: str) -> tuple[Digest, int, str]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{where}.size is {str(size)[:40]!r}, not a byte count")
    try:
        digest = Digest(value.get("digest"))
    except ValueError as exc:
        raise ValueError(f"{where}.digest: {exc}") from None
    return digest, size, str(value.get("mediaType"))[:100]


def _manifest(doc: object, role: Role) -> tuple[tuple[Digest, int], list[Descriptor]]:
    """((config digest, size), layers) of an image manifest; ValueError saying what is wrong."""
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise ValueError("not an image manifest (schemaVersion 2)")
    digest, size, config_type = _descriptor(doc.get("config"), "config")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        raise ValueError(f"layers is not a list of at most {MAX_LAYERS}")
    blobs = [Descriptor(*_descriptor(layer, f"layers[{n}]")) for n, layer in enumerate(layers)]
    if size > MAX_INDEX:
        raise ValueError(f"its config is {size} bytes, more than the {MAX_INDEX} allowed")
    if role == "metadata":
        if config_type != ociartifact.EMPTY_TYPE or len(blobs) != 1 or blobs[0].media_type != ociartifact.LAYER_TYPE:
            raise ValueError("not a metadata artifact (an empty config and one metadata layer)")
    else:
        if config_type not in (OCI_CONFIG, DOCKER_CONFIG):
            raise ValueError(f"its config is {config_type!r}, not an image config")
        for blob in blobs:
            if blob.media_type not in LAYER_TYPES:
                raise ValueError(f"a layer is {blob.media_type!r}, not a tar or tar+gzip layer")
    return (digest, size), blobs


def _title(doc: object) -> str:
    layer = doc["layers"][0] if isinstance(doc, dict) else None  # the shape was checked by _manifest
    notes = layer.get("annotations") if isinstance(layer, dict) else None
    title = notes.get(ociartifact.TITLE) if isinstance(notes, dict) else None
    return title if isinstance(title, str) else ""
