"""The registry misbehaves while a large layer is in flight: it dies, or the tag moves.

Each test publishes its own v1.5 with a fresh 40 MiB random layer (so the engine has never seen
it and must transfer it through a slow relay), installs v1.4 from the shipped repository, then
upgrades through ``StreamProxy`` and acts once 8 MiB have gone by.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import docker
import pytest

from tests.support import registry_tools
from tests.support.faults import FaultRecord, assert_clear_error, assert_consistent, installed
from tests.support.hosts import OS_REPO, REGISTRY, Host
from tests.support.proxies import StreamProxy

MiB = 1024 * 1024
LAYER_MIB = 40
ACT_AFTER = 8 * MiB
RATE = 12 * MiB  # bytes per second towards the engine: the layer takes about 3 s


@pytest.fixture
def big_v15(docker_client: docker.DockerClient) -> Iterator[str]:
    """``osctl-test/<id>/os:v1.5``: v1.5 plus a random layer, pushed and then dropped from the engine."""
    repo = f"osctl-test/{uuid.uuid4().hex[:8]}/os"
    ref = f"{REGISTRY}/{repo}:v1.5"
    registry_tools.build_image(docker_client, ref, f"FROM {OS_REPO}:v1.5\nRUN [\"/bin/sh\", \"-c\", "
                               f"\"dd if=/dev/urandom of=/var/lib/ballast bs=1048576 count={LAYER_MIB} 2>/dev/null\"]\n")
    registry_tools.push(docker_client, ref)
    docker_client.images.remove(ref)
    yield repo
    registry_tools.delete_repository(REGISTRY, repo)
    for image in docker_client.images.list():
        names = image.tags + image.attrs.get("RepoDigests", [])
        if any(repo in name for name in names):
            try:
                docker_client.images.remove(image.id, force=True)
            except docker.errors.APIError:
                pass


class ActOnce:
    """Calls ``action`` in its own thread the first time the relay has sent ``ACT_AFTER`` bytes."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.fired = threading.Event()
        self.done = threading.Event()

    def __call__(self, total: int) -> None:
        if total >= ACT_AFTER and not self.fired.is_set():
            self.fired.set()
            threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self.action()
        finally:
            self.done.set()


def test_registry_dies_mid_layer_and_comes_back(host: Host, docker_client: docker.DockerClient, big_v15: str,
                                                fault: Callable[[str], FaultRecord]) -> None:
    record = fault(f"registry stopped mid-pull of a {LAYER_MIB} MiB layer, back 2 s later")
    marker = installed(host, docker_client, "v1.4")

    def bounce() -> None:
        proxy.stop()
        time.sleep(2)
        proxy.start()

    act = ActOnce(bounce)
    with StreamProxy(RATE, act) as proxy:
        host.image = f"{proxy.address}/{big_v15}"
        proc = host.osctl("upgrade", "--to", "v1.5", timeout=240)
    assert act.fired.is_set(), "the layer never went through the relay"
    assert proc.returncode == 0, f"the engine resumes the layer once the registry is back: {proc.stderr}"
    assert_consistent(host, docker_client, "v1.5", marker, record)


def test_registry_dies_mid_layer_for_good(host: Host, docker_client: docker.DockerClient, big_v15: str,
                                          fault: Callable[[str], FaultRecord]) -> None:
    record = fault(f"registry stopped mid-pull of a {LAYER_MIB} MiB layer, never back")
    marker = installed(host, docker_client, "v1.4")
    act = ActOnce(lambda: proxy.stop())
    started = time.monotonic()
    with StreamProxy(RATE, act) as proxy:
        host.image = f"{proxy.address}/{big_v15}"
        proc = host.osctl("upgrade", "--to", "v1.5", timeout=240)
    assert act.fired.is_set(), "the layer never went through the relay"
    assert_clear_error(proc, 4, "registry")
    assert time.monotonic() - started < 180, "bounded retries"
    assert not (host.root / "var/lib/osctl/store/v1.5.json").exists()
    assert_consistent(host, docker_client, "v1.4", marker, record)


def test_tag_moves_during_upgrade(host: Host, docker_client: docker.DockerClient, big_v15: str,
                                  fault: Callable[[str], FaultRecord]) -> None:
    record = fault("tag moved to another digest while the upgrade pulls it")
    marker = installed(host, docker_client, "v1.4")
    act = ActOnce(lambda: registry_tools.copy_tags(REGISTRY, "osctl/os", "v1.5", big_v15, ["v1.5"]))
    with StreamProxy(RATE, act) as proxy:
        host.image = f"{proxy.address}/{big_v15}"
        proc = host.osctl("upgrade", "--to", "v1.5", timeout=240)
    assert act.done.wait(10), "the tag was never moved"
    assert_clear_error(proc, 1, "moved from")
    assert not (host.root / "var/lib/osctl/store/v1.5.json").exists()
    assert_consistent(host, docker_client, "v1.4", marker, record)
    # The moved tag is a good version: taking it on purpose works.
    host.image = f"{REGISTRY}/{big_v15}"
    proc = host.osctl("upgrade", "--to", "v1.5", timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert_consistent(host, docker_client, "v1.5", marker)
