"""The OS image family in the local registry honours the image contract, and osctl says so.

Also checks the refusals: images that are not OS images, whose label differs from the tag,
whose manifest is invalid or whose boot artifacts are missing, each with a clear line.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import docker
import pytest

from tests.support.hosts import OS_REPO, REGISTRY, TEST_REPO, Host, host_objects, registry_tags
from tests.support import registry_tools

SHIPPED = ["v1.3", "v1.4", "v1.5", "v1.6"]


def validate(host: Host, target: str) -> dict[str, object]:
    proc = host.osctl("image", "validate", target, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_registry_holds_the_shipped_versions(registry: str) -> None:
    assert set(SHIPPED) <= set(registry_tags(OS_REPO))


@pytest.mark.parametrize("version", SHIPPED)
def test_every_shipped_version_is_a_valid_os_image(host: Host, docker_client: docker.DockerClient,
                                                   version: str) -> None:
    result = validate(host, version)
    assert result["valid"] is True and result["version"] == version
    artifacts = result["boot_artifacts"]
    # The Debian kernel (about 8 MB) and a busybox initrd (about 1 MB), not placeholders.
    assert isinstance(artifacts, dict) and artifacts.get("/boot/vmlinuz", 0) > 4 << 20
    assert 512 << 10 < artifacts.get("/boot/initrd.img", 0) < 4 << 20
    # Reading files out of the image used a helper container; it is gone again.
    assert host_objects(docker_client, host.host_id) == []


def test_versions_differ_like_real_releases(host: Host) -> None:
    services = {v: set(validate(host, v)["services"]) for v in SHIPPED}  # type: ignore[arg-type]
    assert {"status", "cron"} <= services["v1.4"] - services["v1.3"], "v1.4 adds services"
    assert "console" in services["v1.4"] - services["v1.5"], "v1.5 removes one"
    assert "metrics" in services["v1.5"]


def test_image_that_is_not_an_os_image_is_refused(host: Host) -> None:
    proc = host.osctl("image", "validate", f"{REGISTRY}/osctl/node-exporter:1.0")
    assert proc.returncode == 2
    assert "not an osctl OS image" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_version_names_the_repository(host: Host) -> None:
    proc = host.osctl("image", "validate", "v9.99")
    assert proc.returncode == 2
    assert f"{OS_REPO}:v9.99 does not exist in the registry" in proc.stderr


@pytest.fixture
def variant(docker_client: docker.DockerClient) -> Iterator[Callable[..., str]]:
    """Build an image FROM v1.4 with extra Dockerfile lines (and files), tagged as a test image.

    Removed afterwards, locally; nothing is pushed."""
    tags: list[str] = []

    def build(lines: str, files: dict[str, str] | None = None) -> str:
        tag = f"{TEST_REPO}/{uuid.uuid4().hex[:8]}:v1.4"
        registry_tools.build_image(docker_client, tag, f"FROM {OS_REPO}:v1.4\n{lines}\n", files)
        tags.append(tag)
        return tag

    yield build
    for tag in tags:
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.NotFound:
            pass


def test_label_that_differs_from_the_tag_is_refused(host: Host, variant: Callable[..., str]) -> None:
    proc = host.osctl("image", "validate", variant("LABEL io.osctl.os.version=v1.9"), "--no-pull")
    assert proc.returncode == 2
    assert "'v1.9' differs from the tag 'v1.4'" in proc.stderr


@pytest.mark.parametrize(("manifest", "words"), [
    ("version: v1.4\nservices:\n  a:\n    comand: [sleep, '9']\nboot: {kernel: /boot/vmlinuz}\n",
     "/usr/lib/osctl/release.yaml:4:5: services.a.comand: unknown key (did you mean 'command'?)"),
    ("version: v1.4\nservices:\n  a: {command: [sleep, '9']}\nboot: {kernel: /boot/vmlinuz-6.1}\n",
     "boot.kernel: /boot/vmlinuz-6.1 is not a file in the image"),
    ("version: v1.4\nservices:\n  a: {depends_on: [b]}\n  b: {depends_on: [a]}\nboot: {kernel: /boot/vmlinuz}\n",
     "dependency cycle: a -> b -> a"),
])
def test_image_with_a_bad_manifest_is_refused_with_its_location(
    host: Host, docker_client: docker.DockerClient, variant: Callable[..., str], manifest: str, words: str
) -> None:
    tag = variant("COPY release.yaml /usr/lib/osctl/release.yaml", {"release.yaml": manifest})
    proc = host.osctl("image", "validate", tag, "--no-pull")
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert host_objects(docker_client, host.host_id) == [], "the helper container is gone"


def test_every_service_of_every_version_really_runs(registry: str, docker_client: docker.DockerClient) -> None:
    """Each daemon stays up, passes its healthcheck (v1.6's status must fail it) and stops on
    SIGTERM; each one-shot exits 0. system-images/selftest.py does the work, as its README says."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "system-images" / "selftest.py"
    proc = subprocess.run([sys.executable, str(script), "--registry", registry, "--quick"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "v1.6" in proc.stdout and "status" in proc.stdout
