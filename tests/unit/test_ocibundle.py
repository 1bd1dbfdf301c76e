"""Bundle files (osctl/adapters/ocibundle.py): what the writer makes, the reader reads back; every
malformed, cut-short or hostile file is one BundleError (IntegrityError for bytes that do not
hash) naming the file, never a traceback. Bundles are built here from synthetic images; no engine.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from osctl.adapters import ocibundle, ociartifact
from osctl.adapters.ocibundle import (DOCKER_MANIFEST, OCI_MANIFEST, Bundle, BundleImage, BundleWriter)
from osctl.errors import BundleError, IntegrityError, OsctlError
from osctl.models.refs import Digest

from tests.support.bundles import digest_of, gz_layer

REPO = "127.0.0.1:5000/osctl/os"


class Image:
    """A synthetic image as a registry serves it: blobs and the manifest's own bytes."""

    def __init__(self, layers: list[dict[str, bytes]], *, oci: bool = False, label: str = "x") -> None:
        built = [gz_layer(files) for files in layers]
        self.layers = [blob for blob, _ in built]
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"l": label}},
                                  "rootfs": {"type": "layers", "diff_ids": [d for _, d in built]}}).encode()
        kind = ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip") if oci \
            else ("application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip")
        self.media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": self.media_type,
            "config": {"mediaType": kind[0], "digest": digest_of(self.config), "size": len(self.config)},
            "layers": [{"mediaType": kind[1], "digest": digest_of(b), "size": len(b)} for b in self.layers]},
            indent=3).encode()

    def add_to(self, writer: BundleWriter, ref_name: str, role: str = "os", tags: list[str] | None = None) -> Digest:
        for blob in [self.config, *self.layers]:
            writer.add_blob(digest_of(blob), len(blob), [blob[i:i + 100] for i in range(0, len(blob), 100)])
        name = f"{REPO}:{ref_name}" if role == "os" else ref_name
        return writer.add_image(ref_name=ref_name, name=name, role=role, manifest=self.manifest,  # type: ignore[arg-type]
                                media_type=self.media_type, repo_tags=tags if tags is not None else [name])


V16 = Image([{"etc/os-release": b"v1.6"}, {"usr/lib/osctl/release.yaml": os.urandom(3000)}])
V15 = Image([{"etc/os-release": b"v1.5"}], label="v1.5")
SVC = Image([{"bin/agent": b"agent"}], oci=True)


def make(path: Path, **metadata: bytes) -> Path:
    with BundleWriter(path) as writer:
        V16.add_to(writer, "v1.6")
        V15.add_to(writer, "v1.5")
        SVC.add_to(writer, "127.0.0.1:5000/osctl/agent:1.0", "service")
        for name, data in (metadata or {"timestamp.json": b'{"signed": 1}'}).items():
            writer.add_metadata(repository=REPO, name=name, data=data)
        writer.commit()
    return path


@pytest.fixture
def bundle_file(tmp_path: Path) -> Path:
    return make(tmp_path / "os.bundle")


# ------------------------------------------------------------------ what the writer makes
def test_the_reader_reads_back_what_the_writer_wrote(bundle_file: Path) -> None:
    with Bundle(bundle_file) as bundle:
        assert [(e.ref_name, e.role) for e in bundle.entries] == [
            ("v1.6", "os"), ("v1.5", "os"), ("127.0.0.1:5000/osctl/agent:1.0", "service"),
            (f"{REPO}-tuf:timestamp.json", "metadata")]
        image = bundle.image("v1.6")
        assert image.name == f"{REPO}:v1.6" and image.source == digest_of(V16.manifest)
        assert image.source_bytes == V16.manifest and image.source_media_type == DOCKER_MANIFEST
        assert image.digest != image.source  # the OCI conversion is the index entry
        assert image.config == digest_of(V16.config) and image.config_bytes == V16.config
        assert [layer.digest for layer in image.layers] == [digest_of(b) for b in V16.layers]
        assert image.diff_ids == tuple(json.loads(V16.config)["rootfs"]["diff_ids"])
        assert image.size == len(V16.config) + sum(len(b) for b in V16.layers)
        service = bundle.images("service")[0]
        assert service.digest == service.source == digest_of(SVC.manifest)  # OCI already: kept as it is
        assert bundle.metadata_file("timestamp.json") == b'{"signed": 1}'
        assert bundle.metadata_file("root.json") is None
        with pytest.raises(BundleError, match=r"holds no v9\.9 \(its versions: v1\.6, v1\.5\)"):
            bundle.image("v9.9")


def test_the_index_entry_is_an_oci_manifest_over_the_same_blobs(bundle_file: Path) -> None:
    with tarfile.open(bundle_file) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        entry = index["manifests"][0]
        body = tar.extractfile("blobs/sha256/" + entry["digest"][7:]).read()  # type: ignore[union-attr]
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[-3:] == ["index.json", "manifest.json", "oci-layout"] and len(names) == len(set(names))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {e["mediaType"] for e in index["manifests"]} == {OCI_MANIFEST}
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1.6", "io.containerd.image.name":
                                    f"{REPO}:v1.6", "io.osctl.bundle.role": "os",
                                    "io.osctl.bundle.source": digest_of(V16.manifest)}
    converted = json.loads(body)
    source = json.loads(V16.manifest)
    assert converted["config"]["digest"] == source["config"]["digest"]
    assert converted["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [(l["digest"], l["size"], l["mediaType"]) for l in converted["layers"]] == [
        (l["digest"], l["size"], "application/vnd.oci.image.layer.v1.tar+gzip") for l in source["layers"]]
    assert docker[0] == {"Config": "blobs/sha256/" + digest_of(V16.config).hex, "RepoTags": [f"{REPO}:v1.6"],
                         "Layers": ["blobs/sha256/" + digest_of(b).hex for b in V16.layers]}
    assert len(docker) == 3  # the OS images and the service image; metadata is no image


def test_metadata_is_the_manifest_put_file_pushes(bundle_file: Path) -> None:
    pushed: dict[str, bytes] = {}

    class Registry:
        def push_blob(self, data: bytes) -> Digest:
            return digest_of(data)

        def push_manifest(self, tag: str, body: bytes, media_type: str) -> Digest:
            pushed[tag] = body
            return digest_of(body)

    digest = ociartifact.put_file(Registry(), "timestamp.json", b'{"signed": 1}')  # type: ignore[arg-type]
    with Bundle(bundle_file) as bundle:
        image = bundle.image(f"{REPO}-tuf:timestamp.json")
    assert image.digest == image.source == digest and image.source_bytes == pushed["timestamp.json"]


def test_docker_archive_streams_each_blob_once_and_manifest_json_last(bundle_file: Path) -> None:
    counted: list[int] = []
    with Bundle(bundle_file) as bundle:
        images = bundle.images("os")
        stream = b"".join(bundle.docker_archive(images + images[:1], counted.append))
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for name in names[:-1]:
            assert "sha256:" + name.rsplit("/", 1)[1] == digest_of(tar.extractfile(name).read())  # type: ignore[union-attr]
    blobs = {V16.config, V15.config, *V16.layers, *V15.layers}
    assert names[-1] == "manifest.json" and len(names) == len(set(names)) == len(blobs) + 1
    assert [entry["RepoTags"] for entry in manifest] == [[], [], []]
    assert manifest[0]["Config"] == "blobs/sha256/" + digest_of(V16.config).hex
    assert sum(counted) == sum(len(b) for b in blobs)


def corrupt(path: Path, blob: bytes, at: int) -> None:
    """Flip one byte of ``blob`` inside the bundle file, keeping its name."""
    content = path.read_bytes()
    where = content.index(blob) + at
    path.write_bytes(content[:where] + bytes([content[where] ^ 1]) + content[where + 1:])


def test_a_corrupt_blob_stops_the_archive_before_its_last_byte(bundle_file: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocibundle, "CHUNK", 512)
    bad = V16.layers[1]
    corrupt(bundle_file, bad, 10)
    received = bytearray()
    with Bundle(bundle_file) as bundle, pytest.raises(IntegrityError) as caught:
        for chunk in bundle.docker_archive([bundle.image("v1.6")]):
            received += chunk
    assert str(caught.value) == f"{bundle_file}: blob {digest_of(bad)[:19]}... does not hash to its digest"
    sent = received[received.index(digest_of(bad).hex.encode()) + 512:]  # after its header
    assert 0 < len(sent) < len(bad)  # part of it went; never all of it, never what follows


def test_blob_reads_check_hash_and_size(bundle_file: Path) -> None:
    blob = V16.layers[0]
    with Bundle(bundle_file) as bundle:
        assert b"".join(bundle.read_blob(digest_of(blob))) == blob
        with pytest.raises(IntegrityError, match="not the 5 its manifest says"):
            next(bundle.read_blob(digest_of(blob), 5))
        with pytest.raises(BundleError, match="more than the 10 allowed"):
            bundle.blob_bytes(digest_of(blob), 10)
        with pytest.raises(BundleError, match="is missing from it"):
            bundle.blob_bytes(digest_of(b"absent"), 10)
    corrupt(bundle_file, blob, len(blob) - 1)
    with Bundle(bundle_file) as bundle, pytest.raises(IntegrityError, match="does not hash"):
        bundle.blob_bytes(digest_of(blob), 1 << 20)


# ------------------------------------------------------------------ the writer
def test_a_blob_that_does_not_hash_leaves_nothing_in_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "b.bundle"
    with BundleWriter(dest) as writer:
        with pytest.raises(IntegrityError, match="do not hash"):
            writer.add_blob(digest_of(b"right"), 5, [b"wrong"])
        with pytest.raises(IntegrityError, match="more than the 5 bytes"):
            writer.add_blob(digest_of(b"right"), 5, [b"right", b"more"])
        with pytest.raises(IntegrityError, match="do not hash"):
            writer.add_blob(digest_of(b"right"), 5, [b"rig"])
        assert not writer.has_blob(digest_of(b"right"))
        writer.add_blob(digest_of(b"right"), 5, [b"right"])
        writer.add_blob(digest_of(b"right"), 5, iter(()))  # there already: the chunks are not read
        writer.add_metadata(repository=REPO, name="1.root.json", data=b"{}")
        writer.commit()
    with tarfile.open(dest) as tar:
        assert tar.getnames().count("blobs/sha256/" + digest_of(b"right").hex) == 1
    with Bundle(dest) as bundle:
        assert bundle.blob_bytes(digest_of(b"right"), 5) == b"right"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bundle"]


def test_an_image_needs_its_blobs_first(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "b.bundle") as writer:
        writer.add_blob(digest_of(V15.config), len(V15.config), [V15.config])
        with pytest.raises(BundleError, match="was not added first"):
            writer.add_image(ref_name="v1.5", name=f"{REPO}:v1.5", role="os", manifest=V15.manifest,
                             media_type=DOCKER_MANIFEST, repo_tags=[])
        with pytest.raises(BundleError, match="not repository:tag"):
            writer.add_image(ref_name="v1.5", name=f"{REPO}:v1.5", role="os", manifest=V15.manifest,
                             media_type=DOCKER_MANIFEST, repo_tags=[f"{REPO}@{digest_of(b'x')}"])


def test_abort_and_an_exception_leave_no_file_and_dest_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "b.bundle"
    dest.write_bytes(b"the old bundle")
    writer = BundleWriter(dest)
    V15.add_to(writer, "v1.5")
    assert writer.partial.parent == tmp_path and writer.partial.name.startswith("b.bundle.partial-")
    writer.abort()
    with pytest.raises(RuntimeError), BundleWriter(dest) as writer:
        V15.add_to(writer, "v1.5")
        raise RuntimeError("interrupted")
    with BundleWriter(dest):
        pass  # never committed
    assert [p.name for p in tmp_path.iterdir()] == ["b.bundle"] and dest.read_bytes() == b"the old bundle"


def test_a_missing_folder_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write .*nowhere/b.bundle"):
        BundleWriter(tmp_path / "nowhere" / "b.bundle")


# ------------------------------------------------------------------ hostile and broken files
Members = list[tuple[tarfile.TarInfo, bytes]]


def members_of(path: Path) -> Members:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]


def retar(path: Path, members: Members) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    path.write_bytes(buf.getvalue())


def edit_json(name: str, change: Callable[[object], object]) -> Callable[[Members], Members]:
    def edit(members: Members) -> Members:
        return [(i, json.dumps(change(json.loads(d))).encode() if i.name == name else d) for i, d in members]
    return edit


def entry0(change: Callable[[dict], None]) -> Callable[[Members], Members]:  # type: ignore[type-arg]
    def apply(doc: object) -> object:
        change(doc["manifests"][0])  # type: ignore[index]
        return doc
    return edit_json("index.json", apply)


def special(name_of: Callable[[Members], str], kind: bytes, link: str = "") -> Callable[[Members], Members]:
    def edit(members: Members) -> Members:
        name = name_of(members)
        out = [(i, d) for i, d in members if i.name != name]
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        return [(info, b"")] + out
    return edit


def first_blob(members: Members) -> str:
    return next(i.name for i, _ in members if i.name.startswith("blobs/"))


def swap_layers(members: Members) -> Members:
    """The OCI entry of v1.6 made to name V15's layer instead: the signed source no longer matches."""
    out = []
    index = json.loads(next(d for i, d in members if i.name == "index.json"))
    entry = index["manifests"][0]
    body = json.loads(next(d for i, d in members if i.name == "blobs/sha256/" + entry["digest"][7:]))
    body["layers"][0] = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                         "digest": digest_of(V15.layers[0]), "size": len(V15.layers[0])}
    new = json.dumps(body).encode()
    entry.update(digest=digest_of(new), size=len(new))
    info = tarfile.TarInfo("blobs/sha256/" + digest_of(new).hex)
    for i, d in members:
        out.append((i, json.dumps(index).encode() if i.name == "index.json" else d))
    return [(info, new)] + out


HOSTILE: dict[str, tuple[Callable[[Members], Members], str]] = {
    "no index.json": (lambda m: [x for x in m if x[0].name != "index.json"], "no index.json in it"),
    "no oci-layout": (lambda m: [x for x in m if x[0].name != "oci-layout"], "no oci-layout in it"),
    "another layout version": (edit_json("oci-layout", lambda d: {"imageLayoutVersion": "2.0"}), "1.0.0"),
    "index not JSON": (lambda m: [(i, b"{nope" if i.name == "index.json" else d) for i, d in m],
                       "index.json is not valid JSON"),
    "index nested too deep": (lambda m: [(i, b"[" * 100000 + b"]" * 100000 if i.name == "index.json" else d)
                                         for i, d in m], "index.json is not valid JSON"),
    "index without manifests": (edit_json("index.json", lambda d: {"manifests": "x"}), "no list of manifests"),
    "duplicate member": (lambda m: m + [m[0]], "is there twice"),
    "symlink as a blob": (special(first_blob, tarfile.SYMTYPE, "/etc/shadow"), "is a symbolic link, not a file"),
    "hard link as a blob": (special(first_blob, tarfile.LNKTYPE, "index.json"), "is a hard link, not a file"),
    "device as a blob": (special(first_blob, tarfile.CHRTYPE), "is a special file, not a file"),
    "directory as index.json": (special(lambda m: "index.json", tarfile.DIRTYPE), "is a directory, not a file"),
    "blob name outside the grammar": (special(lambda m: "blobs/sha256/../../etc/passwd", tarfile.REGTYPE),
                                      "is not a blob name"),
    "docker entry": (entry0(lambda e: e.update(mediaType=DOCKER_MANIFEST)), "not an OCI image manifest"),
    "entry digest not a digest": (entry0(lambda e: e.update(digest="sha256:/../../x")), "is not a sha256 digest"),
    "ref name with a newline": (entry0(lambda e: e["annotations"].update(
        {"org.opencontainers.image.ref.name": "v1.6\nrm -rf /"})), "is not an image tag"),
    "unknown role": (entry0(lambda e: e["annotations"].update({"io.osctl.bundle.role": "root"})),
                     "not os, service or metadata"),
    "missing manifest": (entry0(lambda e: e.update(digest=digest_of(b"nothing"))), "which the file does not hold"),
    "manifest size wrong": (entry0(lambda e: e.update(size=e["size"] + 1)), "is not the"),
    "huge size": (entry0(lambda e: e.update(size=1 << 60)), "not a manifest's byte count"),
    "same name twice": (edit_json("index.json", lambda d: {**d, "manifests": d["manifests"] * 2}),  # type: ignore[dict-item]
                        "names v1.6 twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_bundle_is_one_bundle_error_naming_the_file(bundle_file: Path, case: str) -> None:
    edit, problem = HOSTILE[case]
    retar(bundle_file, edit(members_of(bundle_file)))
    with pytest.raises(BundleError) as caught:
        with Bundle(bundle_file) as bundle:
            bundle.image("v1.6")
    message = str(caught.value)
    assert message.startswith(f"{bundle_file}: ") and problem in message and "\n" not in message


def test_entry_and_source_naming_different_blobs_is_refused(bundle_file: Path) -> None:
    retar(bundle_file, swap_layers(members_of(bundle_file)))
    with Bundle(bundle_file) as bundle, pytest.raises(BundleError, match="source manifest name different blobs"):
        bundle.image("v1.6")


def test_a_config_whose_layers_do_not_match_is_refused(tmp_path: Path) -> None:
    image = Image([{"a": b"a"}])
    image.config = json.dumps({"rootfs": {"diff_ids": []}}).encode()
    image.manifest = image.manifest.replace(json.loads(image.manifest)["config"]["digest"].encode(),
                                            digest_of(image.config).encode())
    image.manifest = image.manifest.replace(b'"size": 1', b'"size": %d' % len(image.config), 0)
    doc = json.loads(image.manifest)
    doc["config"]["size"] = len(image.config)
    image.manifest = json.dumps(doc).encode()
    with BundleWriter(tmp_path / "b") as writer:
        image.add_to(writer, "v1.6")
        writer.commit()
    with Bundle(tmp_path / "b") as bundle, pytest.raises(BundleError, match="lists 0 layers, its manifest 1"):
        bundle.image("v1.6")


def test_a_changed_manifest_is_an_integrity_error(bundle_file: Path) -> None:
    with Bundle(bundle_file) as bundle:
        entry = bundle.entries[0]
    content = bundle_file.read_bytes()
    manifest_offset = content.index(b'"schemaVersion":2', content.index(entry.digest.hex.encode()))
    bundle_file.write_bytes(content[:manifest_offset] + b'"schemaVersion":3' + content[manifest_offset + 17:])
    with Bundle(bundle_file) as bundle, pytest.raises(IntegrityError, match="does not hash to its digest"):
        bundle.image("v1.6")


def cut(at: Callable[[bytes], int]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        content = path.read_bytes()
        path.write_bytes(content[:at(content)])
    return apply


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty file": (lambda p: p.write_bytes(b""), "not a tar file"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(4096)), "not a tar file"),
    "compressed": (lambda p: p.write_bytes(gzip.compress(p.read_bytes())), "not a tar file"),
    "cut in a blob": (cut(lambda c: len(c) // 2 + 7), "runs past the end of the file"),
    "cut at a member boundary": (cut(lambda c: c.rindex(b"oci-layout") + 1024), "without the end-of-archive block"),
    "cut in a header": (cut(lambda c: c.rindex(b"oci-layout") + 100), "ends inside a header"),
    "damaged header": (lambda p: p.write_bytes(p.read_bytes().replace(b"index.json", b"index.jsoN")),
                       "bad checksum"),
    "a directory": (lambda p: (p.unlink(), p.mkdir()), "not a regular file"),
    "a FIFO": (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
    "missing": (lambda p: p.unlink(), "no such file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_file_is_one_bundle_error_naming_it(bundle_file: Path, case: str) -> None:
    damage, problem = BROKEN[case]
    damage(bundle_file)
    with pytest.raises(BundleError) as caught:
        Bundle(bundle_file).close()
    message = str(caught.value)
    assert str(bundle_file) in message and problem in message and "\n" not in message


def test_limits_on_members_and_json(bundle_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocibundle, "MAX_MEMBERS", 5)
    with pytest.raises(BundleError, match="more than 5 members"):
        Bundle(bundle_file)
    monkeypatch.setattr(ocibundle, "MAX_MEMBERS", 100)
    monkeypatch.setattr(ocibundle, "MAX_INDEX", 100)
    with pytest.raises(BundleError, match=r"index.json is \d+ bytes, more than the 100 allowed"):
        Bundle(bundle_file)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_every_failure_is_an_osctl_error(bundle_file: Path, damage: str) -> None:
    """A sweep: the file cut, or one byte changed, at every 997th byte never raises anything but
    an OsctlError of one line."""
    content = bundle_file.read_bytes()
    for at in range(0, len(content), 997):
        bundle_file.write_bytes(content[:at] if damage == "cut" else
                                content[:at] + bytes([content[at] ^ 0x55]) + content[at + 1:])
        try:
            with Bundle(bundle_file) as bundle:
                for entry in bundle.entries:
                    image: BundleImage = bundle.image(entry.ref_name)
                    if image.role != "metadata":
                        b"".join(bundle.docker_archive([image]))
        except OsctlError as exc:
            assert "\n" not in str(exc)
