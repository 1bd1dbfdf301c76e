"""The OS image family in the local registry honours the image contract, and osctl says so.

Also checks the refusals: images that are not OS images, whose label differs from the tag,
whose manifest is invalid or whose boot artifacts are missing, each with a clear line.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator

import docker
import pytest

from tests.integration.conftest import OS_REPO, REGISTRY, TEST_REPO, Host, host_objects, registry_tags

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
    assert isinstance(artifacts, dict) and artifacts.get("/boot/vmlinuz", 0) > 0
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
def built(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Images this test builds; removed afterwards (locally; the registry is left alone)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.NotFound:
            pass


def build_variant(client: docker.DockerClient, tags: list[str], dockerfile: str, files: dict[str, str]) -> str:
    """Build FROM a shipped version with a changed label or file, tagged as a test image."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in {"Dockerfile": dockerfile, **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"{TEST_REPO}/{uuid.uuid4().hex[:8]}:v1.4"
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True)
    tags.append(tag)
    return tag


def test_label_that_differs_from_the_tag_is_refused(host: Host, docker_client: docker.DockerClient,
                                                    built: list[str]) -> None:
    tag = build_variant(docker_client, built, f"FROM {OS_REPO}:v1.4\nLABEL io.osctl.os.version=v1.9\n", {})
    proc = host.osctl("image", "validate", tag, "--no-pull")
    assert proc.returncode == 2
    assert "'v1.9' differs from the tag 'v1.4'" in proc.stderr


def test_manifest_with_unknown_key_is_refused_with_its_location(host: Host, docker_client: docker.DockerClient,
                                                                built: list[str]) -> None:
    manifest = "version: v1.4\nservices:\n  a:\n    comand: [sleep, '9']\nboot: {kernel: /boot/vmlinuz}\n"
    tag = build_variant(docker_client, built,
                        f"FROM {OS_REPO}:v1.4\nCOPY release.yaml /usr/lib/osctl/release.yaml\n",
                        {"release.yaml": manifest})
    proc = host.osctl("image", "validate", tag, "--no-pull")
    assert proc.returncode == 2
    assert "/usr/lib/osctl/release.yaml:4:5: services.a.comand: unknown key (did you mean 'command'?)" in proc.stderr
    assert host_objects(docker_client, host.host_id) == []


def test_missing_boot_artifact_is_refused(host: Host, docker_client: docker.DockerClient, built: list[str]) -> None:
    manifest = "version: v1.4\nservices:\n  a: {command: [sleep, '9']}\nboot: {kernel: /boot/vmlinuz-6.1}\n"
    tag = build_variant(docker_client, built,
                        f"FROM {OS_REPO}:v1.4\nCOPY release.yaml /usr/lib/osctl/release.yaml\n",
                        {"release.yaml": manifest})
    proc = host.osctl("image", "validate", tag, "--no-pull")
    assert proc.returncode == 2
    assert "boot.kernel: /boot/vmlinuz-6.1 is not a file in the image" in proc.stderr


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
