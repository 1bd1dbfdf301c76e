"""Hostile OS images: boot artifacts that loop, or that are too large to hold.

The images are built from docs/image-format.md alone (tests/support/hostile_images.py). Each
refusal is one line naming the manifest key, exit 2 (an invalid image), with no engine-internal
path in it and no helper container left behind.
"""

from __future__ import annotations

import docker
import pytest

from tests.support.hostile_images import KERNEL, os_image
from tests.support.hosts import Host, host_objects

MIB = 1 << 20


def refused(host: Host, client: docker.DockerClient, ref: str, words: str) -> str:
    proc = host.osctl("image", "validate", ref, "--no-pull")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "overlay2" not in proc.stderr and "/var/lib/docker" not in proc.stderr
    assert host_objects(client, host.host_id) == [], "the helper container is gone"
    return lines[0]


@pytest.mark.parametrize("links", [
    {"boot/vmlinuz": "vmlinuz"},  # itself
    {"boot/vmlinuz": "/boot/vmlinuz"},  # itself, absolute
    {"boot/vmlinuz": "b", "boot/b": "vmlinuz"},  # two
], ids=["self", "self-absolute", "pair"])
def test_kernel_symlink_loop_is_named_at_its_key(host: Host, docker_client: docker.DockerClient,
                                                 links: dict[str, str]) -> None:
    with os_image(docker_client, links=links) as ref:
        refused(host, docker_client, ref, "boot.kernel: symlink loop in the image")


def test_kernel_behind_too_many_links_is_refused(host: Host, docker_client: docker.DockerClient) -> None:
    links = {"boot/vmlinuz": "l1", **{f"boot/l{i}": f"l{i + 1}" for i in range(1, 10)}, "boot/l10": "real"}
    with os_image(docker_client, files={"boot/real": KERNEL}, links=links) as ref:
        refused(host, docker_client, ref, "boot.kernel: more than 8 symbolic links in a row in the image")


def test_kernel_over_the_limit_is_refused_before_it_is_read(host: Host, docker_client: docker.DockerClient) -> None:
    with os_image(docker_client, files={"boot/vmlinuz": bytes(64 * MIB + 1)}) as ref:
        refused(host, docker_client, ref, "boot.kernel: larger than 64 MiB")


def test_kernel_that_is_a_folder_is_not_a_file(host: Host, docker_client: docker.DockerClient) -> None:
    with os_image(docker_client, files={"boot/vmlinuz/inner": KERNEL}) as ref:
        refused(host, docker_client, ref, "boot.kernel: /boot/vmlinuz is not a file in the image")


def test_kernel_behind_links_inside_the_image_is_read(host: Host, docker_client: docker.DockerClient) -> None:
    """The control: links that end at a file (relative, absolute, through a folder link) are followed."""
    links = {"boot/vmlinuz": "/k/current", "k/current": "../versions/6.1/vmlinuz", "versions/6.1": "6.1.0"}
    with os_image(docker_client, files={"versions/6.1.0/vmlinuz": KERNEL}, links=links) as ref:
        result = host.osctl_json("image", "validate", ref, "--no-pull")
    assert isinstance(result, dict) and result["boot_artifacts"] == {"/boot/vmlinuz": len(KERNEL)}
