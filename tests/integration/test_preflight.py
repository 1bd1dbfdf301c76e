"""Preflight against the real engine: where it keeps its data, which layers it holds (checked
against its own layer store on disk), and ``osctl pull`` refused on a host root too small for it."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from osctl.adapters.engine import Engine, chain_ids
from osctl.adapters.registry import Registry
from osctl.domain.preflight import engine_need
from osctl.operations.preflight import registry_need
from tests.support.hosts import OS_REPO, Host, host_objects


def _layer_store(client: docker.DockerClient) -> set[str] | None:
    """The ChainIDs the engine's layer store holds on disk (``<root>/image/<driver>/layerdb``),
    or None when that folder is not on this machine."""
    info = client.info()
    folder = Path(info["DockerRootDir"]) / "image" / info["Driver"] / "layerdb" / "sha256"
    if not folder.is_dir():
        return None
    return {f"sha256:{name}" for name in os.listdir(folder) if re.fullmatch(r"[0-9a-f]{64}", name)}


def test_data_root_is_the_engines(docker_client: docker.DockerClient) -> None:
    engine = Engine()
    try:
        assert engine.data_root() == docker_client.info()["DockerRootDir"]
    finally:
        engine.close()


def test_layer_chains_are_the_engines_layer_store(docker_client: docker.DockerClient, registry: str) -> None:
    docker_client.images.pull(OS_REPO, tag="v1.6")  # one image known to be there, with several layers
    layers = docker_client.api.inspect_image(f"{OS_REPO}:v1.6")["RootFS"]["Layers"]
    engine = Engine()
    try:
        before = _layer_store(docker_client)
        chains = engine.layer_chains()
        after = _layer_store(docker_client)
    finally:
        engine.close()
    assert set(chain_ids(layers)) <= chains and len(layers) > 1
    registry = Registry(OS_REPO)
    need = registry_need(registry, registry.manifest("v1.6").digest, "v1.6")
    assert engine_need([need], chains) == (0, 0), "its manifest and config name the layers the engine has"
    assert engine_need([need], set())[0] == sum(layer.size for layer in need.layers) > 0
    if before is None or after is None:
        pytest.skip("the engine's layer store is not on this machine")
    # Other tests may pull or remove images meanwhile: what stayed must be listed, nothing invented.
    assert before & after <= chains <= before | after


@pytest.fixture
def small_root(host: Host) -> Iterator[Path]:
    """The host's root on a 4 MiB tmpfs (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(host.root)], check=True)
    yield host.root
    subprocess.run(["umount", "-l", str(host.root)], check=False)


def _image_ids(client: docker.DockerClient) -> set[str]:
    return {image["Id"] for image in client.api.images(all=True)}


def _tags(client: docker.DockerClient, image_id: str) -> list[str]:
    try:
        return list(client.api.inspect_image(image_id).get("RepoTags") or [])
    except docker.errors.NotFound:  # another test removed it meanwhile
        return []


def test_pull_that_does_not_fit_is_refused_before_the_first_byte(host: Host, small_root: Path,
                                                                docker_client: docker.DockerClient) -> None:
    before = _image_ids(docker_client)
    proc = host.osctl("--root", str(small_root), "pull", "v1.6")
    assert proc.returncode == 8, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert re.search(r"not enough space for v1\.6 on the host root \(" + re.escape(str(small_root))
                     + r"\).*: needs \d+\.\d (KiB|MiB|GiB) \(incl\. a \d+\.\d (KiB|MiB) margin\), \d+\.\d (KiB|MiB) free",
                     line), line
    assert "osctl prune --keep" in proc.stderr, proc.stderr
    store = small_root / "var/lib/osctl/store"
    assert not store.exists() or not any(store.glob("*.json")), "nothing stored"
    assert not (small_root / "boot").exists() or not any((small_root / "boot").rglob("*.conf"))
    assert host_objects(docker_client, host.host_id) == [], "no hold tag, container or volume"
    named = [t for i in _image_ids(docker_client) - before for t in _tags(docker_client, i) if t.startswith(OS_REPO)]
    assert named == [], f"nothing of {OS_REPO} came into the engine: {named}"
