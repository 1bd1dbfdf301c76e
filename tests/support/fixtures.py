"""The fixtures every test may ask for; ``tests/conftest.py`` registers this module as a plugin.

Tests that ask for ``docker_client``, ``registry``, ``host``, ``make_host``, ``publish``,
``release_repo``, ``supervise`` or ``tls_registry`` need the real engine and registry and are marked
``integration``; tests that ask for ``etcd_cluster`` start etcd and are marked ``etcd``
(``tests/conftest.py`` does the marking).
"""

from __future__ import annotations

import signal
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest

from tests.support import faults
from tests.support.etcd_cluster import EtcdCluster
from tests.support.hosts import (OS_REPO, REGISTRY, SESSION_HOSTS, TEST_HOST_PREFIX, Host, host_objects,
                                 leftovers_of_test_hosts, remove_all)
from tests.support.supervisor import Supervise

if TYPE_CHECKING:
    from tests.support.tuf_publisher import ReleaseRepo

SHIPPED = ("v1.3", "v1.4", "v1.5", "v1.6")  # the OS versions system-images/build.py publishes
ENGINE_FIXTURES = {"docker_client", "registry"}  # every engine fixture depends on one of these
ETCD_FIXTURES = {"_etcd_cluster_session"}


@pytest.fixture(autouse=True)
def _signal_handlers_restored() -> Iterator[None]:
    """Some unit tests call osctl's ``main()`` in the pytest process, which installs a SIGTERM
    handler raising ``osctl.cli.app.Terminated``; put back what was there, so that a SIGTERM to
    pytest later ends the run instead of failing whatever test is running."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/setup first", pytrace=False)
    yield client
    leftovers = leftovers_of_test_hosts(client)
    remove_all(client, leftovers)
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
    remove_all(docker_client, [o for host in made for o in host_objects(docker_client, host.host_id)])


@pytest.fixture
def host(make_host: Callable[[], Host]) -> Host:
    return make_host()


@pytest.fixture
def publish(docker_client: docker.DockerClient, registry: str) -> Iterator[Callable[[str, str], str]]:
    """Publish OS versions with a manifest of the test's own, FROM v1.5, in a repository of
    the test's own; returns the repository. Removed from the registry and engine afterwards."""
    from tests.support import registry_tools

    repo = f"{registry}/osctl-test/{uuid.uuid4().hex[:8]}/os"
    refs: list[str] = []

    def make(version: str, manifest: str, files: dict[str, str] | None = None) -> str:
        refs.append(registry_tools.os_version_variant(docker_client, f"{OS_REPO}:v1.5", repo, version, manifest,
                                                      files))
        return repo

    yield make
    registry_tools.remove_variants(docker_client, registry, repo, refs)
    registry_tools.delete_repository(registry, repo.split("/", 1)[1] + "-tuf")  # metadata a test signed


@pytest.fixture
def supervise(host: Host) -> Iterator[Callable[..., Supervise]]:
    """``supervise(*options)`` starts ``osctl supervise`` for ``host``; all are stopped afterwards."""
    started: list[Supervise] = []

    def start(*args: str) -> Supervise:
        started.append(Supervise(host, *args))
        return started[-1]

    yield start
    for sup in started:
        sup.terminate()


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


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Callable[[str], faults.FaultRecord]:
    """``fault("name")`` registers the fault this test injects, for the run's fault summary."""

    def register(name: str) -> faults.FaultRecord:
        return faults.register(request.node.nodeid, name)

    return register


@pytest.fixture
def release_repo(docker_client: docker.DockerClient, registry: str,
                 tmp_path: Path) -> Iterator[Callable[..., ReleaseRepo]]:
    """``release_repo(root_keys=1, root_threshold=1)``: a repository of the test's own holding
    copies of the shipped versions (``127.0.0.1:5000/osctl-test/trust-<random>``, tags only, no
    image data moved) and a TUF publisher for it (``tests.support.tuf_publisher``), nothing
    signed yet. Its manifests, its ``-tuf`` metadata and the engine's names under it are
    removed afterwards."""
    from tests.support import registry_tools
    from tests.support.tuf_publisher import ReleaseRepo

    source = OS_REPO.split("/", 1)[1]
    name = f"osctl-test/trust-{uuid.uuid4().hex[:8]}"
    made: list[ReleaseRepo] = []

    def make(**options: int) -> ReleaseRepo:
        assert not made, "one release repository per test"
        for version in SHIPPED:
            registry_tools.copy_tags(registry, source, version, name, [version])
        made.append(ReleaseRepo(f"{registry}/{name}", tmp_path / "release", **options))
        return made[0]

    yield make
    if made:
        for repo in (name, f"{name}-tuf"):
            registry_tools.delete_repository(registry, repo)
        registry_tools.untag_local(docker_client, f"{registry}/{name}")
