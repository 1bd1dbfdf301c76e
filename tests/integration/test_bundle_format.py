"""The bundle format, read by others: a writer-made bundle of the real v1.6 OS image is an OCI
layout skopeo reads and a docker-archive ``docker load`` reads, and osctl's own reader gets the
image, its files and its docker-archive back out of it.

The image is read from the local registry with plain ``requests`` (the registry is only read,
never written). Whatever a test loads into the engine is removed again: the tag ``docker load``
gives is per test, and an image the engine did not hold before is removed.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from osctl.adapters.engine import Engine
from osctl.adapters.layerfiles import find_files
from osctl.adapters.ocibundle import DOCKER_MANIFEST, Bundle, BundleWriter
from tests.support.hosts import OS_REPO

VERSION = "v1.6"


@pytest.fixture
def bundle_file(tmp_path: Path, registry: str) -> tuple[Path, str]:
    """(a bundle of OS_REPO:v1.6 and one metadata file, the tag its manifest.json gives the image)."""
    host, _, name = OS_REPO.partition("/")
    base = f"http://{host}/v2/{name}"
    with requests.Session() as session:
        answer = session.get(f"{base}/manifests/{VERSION}", headers={"Accept": DOCKER_MANIFEST}, timeout=30)
        answer.raise_for_status()
        manifest = answer.content
        doc = json.loads(manifest)
        tag = f"osctl-bundle-test-{uuid.uuid4().hex[:8]}/os:{VERSION}"
        dest = tmp_path / "os.bundle"
        with BundleWriter(dest) as writer:
            for blob in [doc["config"], *doc["layers"]]:
                with session.get(f"{base}/blobs/{blob['digest']}", stream=True, timeout=30) as resp:
                    resp.raise_for_status()
                    writer.add_blob(blob["digest"], blob["size"], resp.iter_content(1 << 20))
            writer.add_image(ref_name=VERSION, name=f"{OS_REPO}:{VERSION}", role="os", manifest=manifest,
                             media_type=answer.headers["Content-Type"], repo_tags=[tag])
            writer.add_metadata(repository=OS_REPO, name="timestamp.json", data=b'{"signed": {}}')
            writer.commit()
    return dest, tag


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_skopeo_reads_the_oci_layout(bundle_file: tuple[Path, str]) -> None:
    path, _ = bundle_file
    with Bundle(path) as bundle:
        image = bundle.image(VERSION)
        entry_bytes = bundle.blob_bytes(image.digest, 1 << 20)
    where = f"oci-archive:{path}:{VERSION}"
    assert skopeo("inspect", "--raw", where).encode() == entry_bytes
    assert skopeo("inspect", "--config", "--raw", where).encode() == image.config_bytes
    shown = json.loads(skopeo("inspect", where))
    assert shown["Digest"] == image.digest
    assert shown["Layers"] == [layer.digest for layer in image.layers]
    assert shown["Labels"]["io.osctl.os.version"] == VERSION
    artifact = json.loads(skopeo("inspect", "--raw", f"oci-archive:{path}:{OS_REPO}-tuf:timestamp.json"))
    assert artifact["layers"][0]["annotations"] == {"org.opencontainers.image.title": "timestamp.json"}


@pytest.fixture
def engine_images(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Append image ids a test may have loaded; those the engine did not hold before, and that
    nobody tagged since, are removed afterwards."""
    before = {image.id for image in docker_client.images.list(all=True)}
    loaded: list[str] = []
    yield loaded
    for image_id in set(loaded) - before:
        try:
            if not docker_client.images.get(image_id).tags:
                docker_client.images.remove(image_id)
        except docker.errors.NotFound:
            pass


def test_docker_load_reads_the_docker_archive(bundle_file: tuple[Path, str], docker_client: docker.DockerClient,
                                              engine_images: list[str]) -> None:
    path, tag = bundle_file
    with Bundle(path) as bundle:
        config = bundle.image(VERSION).config
    engine_images.append(config)
    try:
        proc = subprocess.run(["docker", "load", "-i", str(path)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f"Loaded image: {tag}" in proc.stdout
        assert docker_client.images.get(tag).id == config  # the image id is the config digest
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=120)


def test_osctl_loads_the_image_and_reads_its_files_from_the_bundle(bundle_file: tuple[Path, str],
                                                                   engine_images: list[str]) -> None:
    path, _ = bundle_file
    with Bundle(path) as bundle:
        image = bundle.image(VERSION)
        layers = [lambda layer=layer: bundle.read_blob(layer.digest, layer.size) for layer in image.layers]
        found = find_files(layers, {"/usr/lib/osctl/release.yaml": True, "/boot/vmlinuz": False}, limit=1 << 20)
        release, kernel = found["/usr/lib/osctl/release.yaml"], found["/boot/vmlinuz"]
        assert release is not None and release.data is not None and f"version: {VERSION}" in release.data.decode()
        assert kernel is not None and kernel.size > 4 << 20 and kernel.data is None
        engine_images.append(image.config)
        engine = Engine()
        try:
            assert engine.load(bundle.docker_archive([image])) == [image.config]
        finally:
            engine.close()
        assert bundle.metadata_file("timestamp.json") == b'{"signed": {}}'
