"""Versions against the real registry and engine: list, pull, store, offline, pin, prune."""

from __future__ import annotations

import json
import socket
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import docker
import pytest

from tests.support.hosts import OS_REPO, REGISTRY, Host, host_objects, registry_tags
from tests.support import registry_tools

V2 = "application/vnd.docker.distribution.manifest.v2+json"


def registry_digest(tag: str) -> str:
    name = OS_REPO.split("/", 1)[1]
    req = urllib.request.Request(f"http://{REGISTRY}/v2/{name}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": V2})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["Docker-Content-Digest"]


def dead_registry_repo() -> str:
    """A repository on a loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}/osctl/os"


def rows(host: Host, *args: str) -> dict[str, dict[str, object]]:
    data = host.osctl_json("list-versions", *args)
    assert isinstance(data, list)
    return {row["version"]: row for row in data}


def test_list_versions_agrees_with_the_registry(host: Host) -> None:
    listed = rows(host)
    versions = [t for t in registry_tags(OS_REPO) if t.startswith("v")]
    assert set(versions) <= set(listed)
    for tag in versions:
        assert listed[tag]["available"] is True and listed[tag]["stored"] is False
        assert listed[tag]["digest"] == registry_digest(tag)
    order = list(listed)
    assert order.index("v1.6") < order.index("v1.5") < order.index("v1.4") < order.index("v1.3"), "newest first"
    for key in ("version", "digest", "stored", "available", "running", "next_boot", "previous", "pinned"):
        assert key in listed["v1.4"]


def test_pull_stores_everything_needed_offline(host: Host, docker_client: docker.DockerClient) -> None:
    proc = host.osctl("pull", "v1.5")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((host.root / "var/lib/osctl/store/v1.5.json").read_text())
    assert record["digest"] == registry_digest("v1.5")
    boot = host.root / "var/lib/osctl/store/v1.5"
    assert sorted(p.name for p in boot.iterdir()) == ["initrd.img", "release.yaml", "vmlinuz"]
    assert not (host.root / "boot/loader/entries/osctl-v1.5.conf").exists(), "stored, but nothing boots it yet"
    assert "version: v1.5" in (boot / "release.yaml").read_text()
    pinned = [ref for ref in record["service_images"] if ref.startswith(f"{REGISTRY}/osctl/node-exporter:1.0@sha256:")]
    assert pinned, f"service images are stored too, by the digest the OS image pins: {record['service_images']}"
    for image_id in [record["image_id"], *record["service_images"].values()]:
        docker_client.images.get(image_id)
    listed = rows(host)["v1.5"]
    assert listed["stored"] is True and listed["available"] is True

    # Stored means usable without the registry: listing and pulling again work offline.
    host.image = dead_registry_repo()
    proc = host.osctl("list-versions", "--json")
    assert proc.returncode == 0 and "showing stored versions only" in proc.stderr
    offline = {row["version"]: row for row in json.loads(proc.stdout)}
    assert list(offline) == ["v1.5"] and offline["v1.5"]["available"] is False
    assert rows(host, "--offline")["v1.5"]["stored"] is True


def test_pull_twice_is_a_no_op(host: Host) -> None:
    assert host.osctl("pull", "v1.4").returncode == 0
    data = host.osctl_json("pull", "v1.4")
    assert isinstance(data, dict) and data["already_stored"] is True


def test_unknown_version_names_the_repository_and_nearest(host: Host) -> None:
    proc = host.osctl("pull", "v1.4.5")
    assert proc.returncode == 2
    assert f"v1.4.5 does not exist in {OS_REPO}" in proc.stderr
    assert "nearest available: v1.4, v1.5" in proc.stderr  # below and above, by version order
    assert not (host.root / "var/lib/osctl/store/v1.4.5.json").exists()


def test_bad_version_strings_are_refused(host: Host) -> None:
    for bad in ("latest", "../v1.4", "v1.4;rm"):
        proc = host.osctl("pull", bad)
        assert proc.returncode == 2 and "is not a version" in proc.stderr, proc.stderr


def test_registry_down_is_one_clear_line(host: Host) -> None:
    host.image = dead_registry_repo()
    proc = host.osctl("pull", "v1.4")
    assert proc.returncode == 4
    assert proc.stderr.startswith("error: cannot reach the registry at 127.0.0.1:")
    assert "Traceback" not in proc.stderr
    assert not (host.root / "var/lib/osctl/store").exists() or not any((host.root / "var/lib/osctl/store").iterdir())


@pytest.mark.alone  # prune removes a shared OS image that no other host holds: not while others pull it
def test_pin_unpin_and_prune(host: Host, docker_client: docker.DockerClient) -> None:
    for version in ("v1.3", "v1.4", "v1.5"):
        assert host.osctl("pull", version, "--quiet").returncode == 0
    assert host.osctl("pin", "v1.3").returncode == 0
    assert rows(host)["v1.3"]["pinned"] is True

    plan = host.osctl_json("prune", "--keep", "1", "--dry-run")
    assert isinstance(plan, dict)
    assert plan["remove"] == ["v1.4"] and plan["keep"] == {"v1.5": "among the newest 1", "v1.3": "pinned"}
    assert (host.root / "var/lib/osctl/store/v1.4.json").exists(), "dry run changes nothing"

    plan = host.osctl_json("prune", "--keep", "1")
    assert isinstance(plan, dict) and plan["remove"] == ["v1.4"]
    listed = rows(host)
    assert listed["v1.4"]["stored"] is False and listed["v1.4"]["available"] is True
    assert not (host.root / "var/lib/osctl/store/v1.4").exists()
    assert listed["v1.3"]["stored"] and listed["v1.5"]["stored"]

    assert host.osctl("unpin", "v1.3").returncode == 0
    plan = host.osctl_json("prune", "--keep", "1")
    assert isinstance(plan, dict) and plan["remove"] == ["v1.3"]


def test_prune_never_removes_what_boots_or_runs(host: Host) -> None:
    for version in ("v1.3", "v1.4"):
        assert host.osctl("pull", version, "--quiet").returncode == 0
    pointer = host.root / "boot/osctl/boot.json"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(json.dumps({"default": "v1.4", "previous": "v1.3"}))
    plan = host.osctl_json("prune", "--keep", "0")
    assert isinstance(plan, dict)
    assert plan["remove"] == [] and plan["keep"] == {"v1.4": "default boot", "v1.3": "previous"}


@pytest.mark.alone  # prune removes a shared OS image that no other host holds: not while others pull it
def test_prune_leaves_images_another_host_stores(host: Host, make_host: Callable[[], Host],
                                                 docker_client: docker.DockerClient) -> None:
    other = make_host()
    for h in (host, other):
        assert h.osctl("pull", "v1.3", "--quiet").returncode == 0
    plan = host.osctl_json("prune", "--keep", "0")
    assert isinstance(plan, dict) and plan["remove"] == ["v1.3"] and plan["images_removed"] == []
    assert rows(other, "--offline")["v1.3"]["stored"] is True
    image_id = json.loads((other.root / "var/lib/osctl/store/v1.3.json").read_text())["image_id"]
    docker_client.images.get(image_id)  # still there for the other host


def test_pin_of_a_version_not_stored_is_refused(host: Host) -> None:
    proc = host.osctl("pin", "v1.4")
    assert proc.returncode == 2 and "v1.4 is not stored on this host" in proc.stderr


def test_a_half_pulled_version_is_not_stored(host: Host) -> None:
    """A version folder without a record (an interrupted pull) is neither listed nor kept."""
    leftover = host.root / "var/lib/osctl/store/v1.4"
    leftover.mkdir(parents=True)
    (leftover / "vmlinuz").write_bytes(b"partial")
    assert rows(host)["v1.4"]["stored"] is False
    assert host.osctl("pull", "v1.4", "--quiet").returncode == 0
    assert (leftover / "vmlinuz").read_bytes() != b"partial"


@pytest.fixture
def test_repo(registry: str) -> Iterator[str]:
    """A repository of its own in the local registry, emptied afterwards."""
    name = f"osctl-test/{uuid.uuid4().hex[:8]}/os"
    yield name
    registry_tools.delete_repository(registry, name)


def assert_nothing_stored(host: Host, docker_client: docker.DockerClient) -> None:
    store = host.root / "var/lib/osctl/store"
    assert not store.exists() or list(store.iterdir()) == []
    boot = host.root / "boot/osctl"
    assert not boot.exists() or list(boot.iterdir()) == []
    assert host_objects(docker_client, host.host_id) == []


def test_listing_more_tags_than_a_page(host: Host, registry: str, test_repo: str) -> None:
    tags = [f"v0.{i // 50}.{i % 50}" for i in range(150)] + ["latest", "nightly"]
    digest = registry_tools.copy_tags(registry, "osctl/os", "v1.4", test_repo, tags)
    host.image = f"{registry}/{test_repo}"
    listed = rows(host)
    assert len(listed) == 150, "every version tag, and no tag that is not a version"
    assert all(row["digest"] == digest and row["available"] for row in listed.values())
    assert list(listed)[:2] == ["v0.2.49", "v0.2.48"] and list(listed)[-1] == "v0.0.0"


@pytest.mark.parametrize(("source", "words"), [
    ("osctl/node-exporter:1.0", "not an osctl OS image"),
    ("osctl/os:v1.5", "'v1.5' differs from the tag 'v1.4'"),
])
def test_pull_refuses_what_is_not_this_version(host: Host, docker_client: docker.DockerClient, registry: str,
                                               test_repo: str, source: str, words: str) -> None:
    repo, tag = source.split(":")
    digest = registry_tools.copy_tags(registry, repo, tag, test_repo, ["v1.4"])
    host.image = f"{registry}/{test_repo}"
    proc = host.osctl("pull", "v1.4")
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert_nothing_stored(host, docker_client)
    with pytest.raises(docker.errors.ImageNotFound):  # the refused image's name is gone again
        docker_client.images.get(f"{host.image}@{digest}")


def test_pull_refuses_an_invalid_manifest(host: Host, docker_client: docker.DockerClient, registry: str,
                                          test_repo: str) -> None:
    ref = f"{registry}/{test_repo}:v1.4"
    registry_tools.build_image(docker_client, ref, f"FROM {OS_REPO}:v1.4\nRUN [\"/bin/sh\", \"-c\", "
                               "\"echo 'surprise: true' >> /usr/lib/osctl/release.yaml\"]\n")
    registry_tools.push(docker_client, ref)
    docker_client.images.remove(ref)
    host.image = f"{registry}/{test_repo}"
    proc = host.osctl("pull", "v1.4")
    assert proc.returncode == 2 and "surprise: unknown key" in proc.stderr, proc.stderr
    assert_nothing_stored(host, docker_client)


def test_pull_refuses_a_tag_that_moves_during_the_pull(host: Host, docker_client: docker.DockerClient) -> None:
    """The registry answers one digest at resolve time and another after the pull."""
    from osctl.adapters.engine import Engine
    from osctl.adapters.registry import Registry
    from osctl.domain.settings import Settings
    from osctl.errors import IntegrityError
    from osctl.operations.pull import pull_version

    class MovingTag(Registry):
        def digest(self, tag: str) -> str:
            return "sha256:" + "0" * 64

    settings = Settings(env=host.env())
    engine = Engine()
    try:
        with pytest.raises(IntegrityError, match="moved from"):
            pull_version(settings, engine, "v1.4", registry=MovingTag(OS_REPO))
    finally:
        engine.close()
    assert_nothing_stored(host, docker_client)
