"""The ESP's budget with the shipped images' real kernels (about 8 MB, shared) and initrds (about
1 MB each), on a small filesystem of its own: only bootable versions are there, a shared kernel
is one file, and what does not fit is refused before anything changes (docs/boot.md)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.faults import assert_clear_error, osctl_ok
from tests.support.hosts import Host
from tests.support.services import running_sets


@pytest.fixture
def small_esp(host: Host, tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs as the host's ESP (an ESP is a partition of its own)."""
    esp = tmp_path / "esp"
    esp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(esp)], check=True)
    (host.root / "etc/osctl").mkdir(parents=True)
    (host.root / "etc/osctl/config.yaml").write_text(f"boot: {{esp: {esp}}}\n")
    try:
        yield esp
    finally:
        osctl_ok(host, "service", "down")
        subprocess.run(["umount", str(esp)], check=True)


def _esp_files(esp: Path) -> dict[str, int]:
    return {str(p.relative_to(esp)): p.stat().st_size for p in sorted(esp.rglob("*")) if p.is_file()}


def _fill(esp: Path, leave: int) -> Path:
    """Take the ESP's free space down to ``leave`` bytes."""
    filler = esp / "filler"
    free = subprocess.run(["df", "--output=avail", "-B1", str(esp)], capture_output=True, text=True,
                          check=True).stdout.split()[-1]
    filler.write_bytes(b"\0" * max(0, int(free) - leave))
    return filler


def test_the_esp_holds_only_what_may_boot_and_refuses_what_does_not_fit(
        host: Host, small_esp: Path, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.3")
    osctl_ok(host, "upgrade", "--to", "v1.4")
    files = _esp_files(small_esp)
    assert sorted(n for n in files if n.startswith("loader/entries/")) == [
        "loader/entries/osctl-v1.3.conf", "loader/entries/osctl-v1.4.conf"]
    kernels = [n for n in files if n.startswith("osctl/files/vmlinuz-")]
    assert len(kernels) == 1 and files[kernels[0]] > 4 << 20, f"one shared real kernel: {files}"
    assert len([n for n in files if n.startswith("osctl/files/initrd.img-")]) == 2

    # The ESP has room for less than one initrd: the upgrade to v1.5 is refused before its
    # download (the preflight counts the initrd the ESP lacks, not the kernel it shares).
    filler = _fill(small_esp, 512 * 1024)
    before = _esp_files(small_esp)
    proc = host.osctl("upgrade", "--to", "v1.5")
    line = assert_clear_error(proc, 8, f"not enough space for v1.5 on the ESP ({small_esp})")
    assert re.search(r"needs [0-9.]+ MiB \(incl\. a 1\.0 MiB margin\), [0-9.]+ KiB free", line), line
    assert _esp_files(small_esp) == before, "nothing half-written on the ESP"
    assert running_sets(docker_client, host).keys() == {"v1.4"}, "nothing swapped"
    assert json.loads((host.root / "boot/osctl/boot.json").read_text())["default"] == "v1.4"
    assert not (host.root / "var/lib/osctl/store/v1.5.json").exists(), "nothing downloaded, nothing stored"

    # Stored needs no room on the ESP; making it bootable does, and is refused before it swaps.
    osctl_ok(host, "pull", "v1.5")
    proc = host.osctl("upgrade", "--to", "v1.5")
    assert_clear_error(proc, 1, f"the EFI system partition {small_esp} has 0.")
    assert "the boot files of v1.5 need 1." in proc.stderr, proc.stderr
    assert running_sets(docker_client, host).keys() == {"v1.4"}, "nothing swapped"
    proc = host.osctl("upgrade", "--to", "v1.5", "--stage")
    assert_clear_error(proc, 1, "the boot files of v1.5 need")
    assert _esp_files(small_esp) == before
    proc = host.osctl("pin", "v1.5")
    assert_clear_error(proc, 1, "the boot files of v1.5 need")
    assert _esp_files(small_esp) == before

    filler.unlink()
    osctl_ok(host, "upgrade", "--to", "v1.5")
    files = _esp_files(small_esp)
    assert sorted(n for n in files if n.startswith("loader/entries/")) == [
        "loader/entries/osctl-v1.4.conf", "loader/entries/osctl-v1.5.conf"], "v1.3 left the ESP"
    assert len([n for n in files if n.startswith("osctl/files/")]) == 3, "its initrd too; the kernel stays"
    stored = host.osctl_json("list-versions", "--offline")
    assert isinstance(stored, list) and {r["version"] for r in stored if r["stored"]} >= {"v1.3", "v1.4", "v1.5"}
