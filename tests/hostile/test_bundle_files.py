"""Damaged and lying bundles against the real engine: ``Engine.load`` of a bundle's docker-archive.

A blob that does not hash stops the stream before its last byte (``Bundle.docker_archive``) and
``Engine.load`` lets that ``IntegrityError`` out as itself; what the engine must show for it is
nothing: the image is not there. The images are synthetic (random layers), so that none of
them can be in the engine already, and an image id is its config's digest: the only image a
load of this archive could leave is that one, so other tests may pull and load meanwhile.
Whatever a test loads is removed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from osctl.adapters.engine import Engine
from osctl.adapters.ocibundle import DOCKER_MANIFEST, Bundle, BundleWriter
from osctl.errors import EngineError, IntegrityError
from tests.support.bundles import digest_of, gz_layer


def image_ids() -> set[str]:
    out = subprocess.run(["docker", "images", "-a", "-q", "--no-trunc"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def synthetic(dest: Path, *, lie_about_diff_ids: bool = False) -> tuple[str, list[bytes]]:
    """A bundle of one new image: a 3 MiB random layer, then a small one; (config digest, layers)."""
    built = [gz_layer(files) for files in ({"data/random": os.urandom(3 << 20)}, {"etc/marker": os.urandom(64)})]
    layers = [blob for blob, _ in built]
    diff_ids = [digest_of(blob) if lie_about_diff_ids else diff for blob, diff in built]  # a lie: the gzip's digest
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/nothing"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": digest_of(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest_of(b),
                    "size": len(b)} for b in layers]}).encode()
    with BundleWriter(dest) as writer:
        for blob in [config, *layers]:
            writer.add_blob(digest_of(blob), len(blob), [blob])  # type: ignore[arg-type]
        writer.add_image(ref_name="v9.0", name="127.0.0.1:5000/osctl-hostile/os:v9.0", role="os",
                         manifest=manifest, media_type=DOCKER_MANIFEST, repo_tags=[])
        writer.commit()
    MADE.append(digest_of(config))
    return digest_of(config), layers


def flip(path: Path, blob: bytes, at: int) -> None:
    with open(path, "r+b") as f:
        where = path.read_bytes().index(blob) + at
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 1]))


@pytest.fixture
def engine(docker_client: docker.DockerClient) -> Iterator[Engine]:
    """The engine; every image id a test's ``load`` reports, or that a failed one might have
    left (the test's synthetic config digests), is removed afterwards."""
    engine = Engine()
    loaded: list[str] = []
    load = engine.load

    def recording(chunks: Iterator[bytes]) -> list[str]:
        ids = load(chunks)
        loaded.extend(ids)
        return ids

    engine.load = recording  # type: ignore[method-assign]
    yield engine
    engine.close()
    for image_id in set(loaded) | set(MADE) & image_ids():
        docker_client.images.remove(image_id, force=True)
    MADE.clear()


MADE: list[str] = []  # config digests of the synthetic images made by the running test


@pytest.mark.parametrize("where", ["middle of the first layer", "last byte of the last layer"])
def test_a_corrupt_blob_mid_stream_leaves_nothing_in_the_engine(tmp_path: Path, engine: Engine, where: str) -> None:
    bundle_file = tmp_path / "b.bundle"
    config, layers = synthetic(bundle_file)
    bad = layers[0] if where.startswith("middle") else layers[1]
    flip(bundle_file, bad, len(bad) // 2 if where.startswith("middle") else len(bad) - 1)
    with Bundle(bundle_file) as bundle, pytest.raises(IntegrityError) as caught:
        engine.load(bundle.docker_archive([bundle.image("v9.0")]))
    assert type(caught.value) is IntegrityError and "does not hash to its digest" in str(caught.value)
    assert config not in image_ids()
    assert engine.info().version  # the client is still usable after the cut-short request


def test_the_same_bundle_undamaged_loads_the_image(tmp_path: Path, engine: Engine) -> None:
    bundle_file = tmp_path / "b.bundle"
    config, _ = synthetic(bundle_file)
    seen: list[int] = []
    with Bundle(bundle_file) as bundle:
        image = bundle.image("v9.0")
        assert engine.load(bundle.docker_archive([image], seen.append)) == [config]
    assert config in image_ids() and sum(seen) == image.size


def test_layers_that_are_not_what_the_config_says_are_an_engine_error(tmp_path: Path, engine: Engine) -> None:
    bundle_file = tmp_path / "b.bundle"
    config, _ = synthetic(bundle_file, lie_about_diff_ids=True)
    with Bundle(bundle_file) as bundle, pytest.raises(EngineError) as caught:
        engine.load(bundle.docker_archive([bundle.image("v9.0")]))
    assert str(caught.value).startswith("loading images into the engine: ") and "\n" not in str(caught.value)
    assert config not in image_ids()


def test_an_archive_the_engine_cannot_read_is_an_engine_error(engine: Engine) -> None:
    with pytest.raises(EngineError, match="^loading images into the engine: "):
        engine.load(iter([b"not a tar" * 1000]))
