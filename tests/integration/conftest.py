"""Fixtures for tests against the real Docker engine and the local registry.

Each test gets its own host (a fresh root folder and a host id starting with ``osctltest-``)
and everything labelled with that host id is removed after the test. At the end of the session
the run fails if anything labelled as a test host is still on the engine. Nothing without a
test host label is ever touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from osctl.domain.naming import HOLD_REPOSITORY
from tests.support.etcd_cluster import EtcdCluster

TEST_HOST_PREFIX = "osctltest-"
REGISTRY = os.environ.get("OSCTL_REGISTRY", "127.0.0.1:5000")
OS_REPO = os.environ.get("OSCTL_IMAGE", f"{REGISTRY}/osctl/os")
TEST_REPO = f"{REGISTRY}/osctl-test"  # images the tests build themselves
HOST_LABEL = "io.osctl.host"
SESSION_HOSTS: set[str] = set()  # the hosts this test session made: the only ones it checks and removes


@dataclass
class Host:
    """One simulated host: its id, its root, and a way to run osctl as a user would."""

    host_id: str
    root: Path
    image: str = OS_REPO
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSCTL_")}
        return {**env, "OSCTL_ROOT": str(self.root), "OSCTL_HOST_ID": self.host_id,
                "OSCTL_IMAGE": self.image, **self.extra_env}

    def osctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "osctl", *args], capture_output=True, text=True,
                              env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL)

    def osctl_json(self, *args: str) -> object:
        proc = self.osctl(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/setup first", pytrace=False)
    yield client
    leftovers = leftovers_of_test_hosts(client)
    for kind, name in leftovers:
        remove(client, kind, name)
    client.close()
    if leftovers:
        pytest.fail(f"tests left these behind (now removed): {leftovers}", pytrace=False)


@pytest.fixture(scope="session")
def registry() -> str:
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5).close()
    except OSError as exc:
        pytest.fail(f"no registry answers at {REGISTRY} ({exc}); run scripts/setup first", pytrace=False)
    return REGISTRY


@pytest.fixture
def make_host(tmp_path: Path, docker_client: docker.DockerClient, registry: str) -> Iterator[Callable[[], Host]]:
    """Make as many hosts as a test needs; each is cleaned up afterwards."""
    made: list[Host] = []

    def make() -> Host:
        host = Host(f"{TEST_HOST_PREFIX}{uuid.uuid4().hex[:10]}", tmp_path / f"root{len(made)}")
        SESSION_HOSTS.add(host.host_id)
        host.root.mkdir()
        made.append(host)
        return host

    yield make
    for host in made:
        for kind, name in host_objects(docker_client, host.host_id):
            remove(docker_client, kind, name)


@pytest.fixture
def host(make_host: Callable[[], Host]) -> Host:
    return make_host()


def _containers(client: docker.DockerClient, selector: dict[str, str]) -> list[docker.models.containers.Container]:
    """The SDK inspects each listed container: one removed meanwhile (by another test process on
    the same engine) is a 404; list again."""
    for _ in range(5):
        try:
            return client.containers.list(all=True, filters=selector)  # type: ignore[no-any-return]
        except docker.errors.NotFound:
            time.sleep(0.1)
    return client.containers.list(all=True, filters=selector)  # type: ignore[no-any-return]


def host_objects(client: docker.DockerClient, host_id: str) -> list[tuple[str, str]]:
    """Containers, volumes and image hold tags of one host."""
    selector = {"label": f"{HOST_LABEL}={host_id}"}
    holds = f"{HOLD_REPOSITORY}/{host_id.lower()}/"
    return ([("container", c.name) for c in _containers(client, selector)]
            + [("volume", v.name) for v in client.volumes.list(filters=selector)]
            + [("tag", t) for image in client.images.list() for t in image.tags if t.startswith(holds)])


def leftovers_of_test_hosts(client: docker.DockerClient) -> list[tuple[str, str]]:
    selector = {"label": HOST_LABEL}
    found = [("container", c.name, c.labels) for c in _containers(client, selector)]
    found += [("volume", v.name, v.attrs.get("Labels") or {}) for v in client.volumes.list(filters=selector)]
    found += [("tag", t, {HOST_LABEL: t.split("/")[1]}) for image in client.images.list() for t in image.tags
              if t.startswith(f"{HOLD_REPOSITORY}/")]  # hold tags carry the host id lower-cased, as ours are
    return [(kind, name) for kind, name, labels in found if labels.get(HOST_LABEL, "") in SESSION_HOSTS]


def remove(client: docker.DockerClient, kind: str, name: str) -> None:
    try:
        if kind == "container":
            client.containers.get(name).remove(force=True)
        elif kind == "tag":
            client.images.remove(name, noprune=True)
        else:
            client.volumes.get(name).remove(force=True)
    except (docker.errors.NotFound, docker.errors.APIError):
        pass


def registry_tags(repository: str) -> list[str]:
    """The registry's own answer, read without osctl, to check osctl against."""
    name = repository.split("/", 1)[1]
    with urllib.request.urlopen(f"http://{REGISTRY}/v2/{name}/tags/list?n=1000", timeout=10) as resp:
        return sorted(json.load(resp).get("tags") or [])


SYSTEM_IMAGES = Path(__file__).resolve().parents[2] / "system-images"


def shipped_manifest(version: str) -> str:
    """A shipped version's release.yaml, as built into its image."""
    return (SYSTEM_IMAGES / "versions" / version / "release.yaml").read_text().replace("${REGISTRY}", REGISTRY)


@pytest.fixture
def publish(docker_client: docker.DockerClient, registry: str) -> Iterator[Callable[[str, str], str]]:
    """Publish OS versions with a manifest of the test's own, FROM v1.5, in a repository of
    the test's own; returns the repository. Removed from the registry and engine afterwards."""
    from tests.support import registry_tools

    repo = f"{registry}/osctl-test/{uuid.uuid4().hex[:8]}/os"
    refs: list[str] = []

    def make(version: str, manifest: str) -> str:
        refs.append(registry_tools.os_version_variant(docker_client, f"{OS_REPO}:v1.5", repo, version, manifest))
        return repo

    yield make
    registry_tools.delete_repository(registry, repo.split("/", 1)[1])
    for ref in refs:
        try:
            docker_client.images.remove(ref, noprune=False)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="session")
def _etcd_cluster_session() -> Iterator[EtcdCluster]:
    """One three-member etcd cluster for the whole session (starting one costs about 0.5 s)."""
    try:
        cluster = EtcdCluster(3).start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start an etcd cluster: {exc}; run scripts/setup first", pytrace=False)
    yield cluster
    cluster.close()


@pytest.fixture
def etcd_cluster(_etcd_cluster_session: EtcdCluster) -> EtcdCluster:
    """The session's etcd cluster, every member up.

    Tests may stop members; the next test gets them back. Keys are not cleared: each test
    works under a prefix (a fleet group) of its own.
    """
    _etcd_cluster_session.ensure_all_running()
    return _etcd_cluster_session
