"""Damaged files under the host root, and a host root that is read-only."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

import docker

from tests.support.faults import FaultRecord, assert_clear_error, assert_consistent, installed, osctl_ok
from tests.support.hosts import Host


def test_truncated_store_record(host: Host, docker_client: docker.DockerClient,
                                fault: Callable[[str], FaultRecord]) -> None:
    record = fault("truncated store record")
    osctl_ok(host, "upgrade", "--to", "v1.4")
    marker = installed(host, docker_client, "v1.5")
    path = host.root / "var/lib/osctl/store/v1.4.json"
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    for args in (("list-versions", "--offline"), ("downgrade", "--to", "v1.4"), ("pull", "v1.4")):
        assert_clear_error(host.osctl(*args), 1, str(path), "damaged")
    assert_consistent(host, docker_client, "v1.5", marker, record)
    path.unlink()  # what the hint says: remove it and pull again
    osctl_ok(host, "pull", "v1.4", "--quiet")
    osctl_ok(host, "downgrade", "--to", "v1.4")
    assert_consistent(host, docker_client, "v1.4", marker, record)


def test_truncated_boot_pointer_uses_last_good_copy(host: Host, docker_client: docker.DockerClient,
                                                    fault: Callable[[str], FaultRecord]) -> None:
    record = fault("truncated boot pointer")
    osctl_ok(host, "upgrade", "--to", "v1.4")
    marker = installed(host, docker_client, "v1.5")
    pointer = host.root / "boot/osctl/boot.json"
    pointer.write_text(pointer.read_text()[:10])
    proc = host.osctl("boot")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    # The copy of the committed pointer is used (never an older one) and the file is repaired.
    assert json.loads(pointer.read_text())["default"] == "v1.5"
    assert_consistent(host, docker_client, "v1.5", marker, record)


def test_damaged_journal(host: Host, docker_client: docker.DockerClient,
                         fault: Callable[[str], FaultRecord]) -> None:
    record = fault("damaged journal")
    marker = installed(host, docker_client, "v1.4")
    journal = host.root / "var/lib/osctl/journal.json"
    good = journal.read_text()
    journal.write_text('{"kind": "upg')
    for args in (("status",), ("upgrade", "--to", "v1.5"), ("boot",)):
        assert_clear_error(host.osctl(*args), 1, str(journal), "damaged")
    journal.write_text(good)
    assert_consistent(host, docker_client, "v1.4", marker, record)


def test_garbage_settings_file(host: Host, docker_client: docker.DockerClient,
                               fault: Callable[[str], FaultRecord]) -> None:
    fault("garbage settings file")
    config = host.root / "etc/osctl/config.yaml"
    config.parent.mkdir(parents=True)
    host.image = ""  # so that the file is where the image comes from
    config.write_text("image: x\n  bad: [\n")
    assert_clear_error(host.osctl("status"), 2, f"{config}:2:6")
    config.write_text("imagex: 127.0.0.1:5000/osctl/os\n")
    assert_clear_error(host.osctl("list-versions"), 2, f"{config}:1:1", "imagex")


def test_non_utf8_settings_file_is_bad_input(host: Host, fault: Callable[[str], FaultRecord]) -> None:
    fault("settings file not UTF-8 (exit code per docs)")
    config = host.root / "etc/osctl/config.yaml"
    config.parent.mkdir(parents=True)
    host.image = ""
    config.write_bytes(b"\xff\xfe\x00garbage\x00")
    assert_clear_error(host.osctl("status"), 2, str(config), "not UTF-8")


def test_read_only_host_root(host: Host, docker_client: docker.DockerClient,
                             fault: Callable[[str], FaultRecord]) -> None:
    record = fault("read-only host root")
    marker = installed(host, docker_client, "v1.4")
    before = sorted(str(p.relative_to(host.root)) for p in host.root.rglob("*"))
    subprocess.run(["mount", "--bind", str(host.root), str(host.root)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(host.root)], check=True)
        for args in (("pull", "v1.5"), ("upgrade", "--to", "v1.5"), ("service", "down")):
            assert_clear_error(host.osctl(*args), 1, "Read-only file system")
    finally:
        subprocess.run(["umount", str(host.root)], check=True)
    assert sorted(str(p.relative_to(host.root)) for p in host.root.rglob("*")) == before
    assert_consistent(host, docker_client, "v1.4", marker, record)


def test_disk_fills_during_staging(host: Host, docker_client: docker.DockerClient,
                                   fault: Callable[[str], FaultRecord]) -> None:
    """The host root is a small filesystem: v1.3 fits, staging v1.4 beside it does not.

    40 MiB holds v1.3 (its store copy and its ESP copy of a real kernel and initrd, about 19 MB)
    with room to spare. Filled to 24 KiB of bytes, the preflight refuses v1.4 before its first
    byte (exit 8). Out of inodes instead (the preflight counts bytes: a filesystem can still run
    out while the version is staged), staging fails with ENOSPC, and nothing is left half-done."""
    record = fault("disk full while staging")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,nr_inodes=2000", "tmpfs", str(host.root)], check=True)
    try:
        marker = installed(host, docker_client, "v1.3")
        filler = host.root / "filler"
        free = subprocess.run(["df", "--output=avail", "-B1", str(host.root)], capture_output=True,
                              text=True, check=True).stdout.split()[-1]
        filler.write_bytes(b"\0" * max(0, int(free) - 24 * 1024))  # leave less than v1.4's boot files need
        line = assert_clear_error(host.osctl("upgrade", "--to", "v1.4"), 8, "not enough space for v1.4 on the host root")
        assert "free" in line and "needs" in line
        filler.unlink()
        assert_consistent(host, docker_client, "v1.3", marker, record)

        inodes = host.root / "inodes"
        inodes.mkdir()
        free_inodes = int(subprocess.run(["df", "--output=iavail", str(host.root)], capture_output=True,
                                         text=True, check=True).stdout.split()[-1])
        for index in range(free_inodes - 2):  # two left: the journal's writes, not the staged files
            (inodes / str(index)).touch()
        proc = host.osctl("upgrade", "--to", "v1.4")
        assert_clear_error(proc, 1, "No space left on device")
        shutil.rmtree(inodes)
        assert not (host.root / "var/lib/osctl/store/v1.4.json").exists()
        assert not [p for p in (host.root / "var/lib/osctl/store").iterdir() if p.name.startswith(".partial-")]
        assert not (host.root / "var/lib/osctl/store/v1.4").exists()
        assert_consistent(host, docker_client, "v1.3", marker, record)
    finally:
        osctl_ok(host, "service", "down")
        subprocess.run(["umount", str(host.root)], check=False)
