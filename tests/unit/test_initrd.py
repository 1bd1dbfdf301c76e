"""system-images/initrd.py writes the kernel's newc cpio format, byte for byte reproducibly.

The archive is read back here with a reader written from the format's description (the
kernel's buffer-format.rst), not from the writer: every header field, the 4-byte padding, the
trailer, and the same bytes for the same entries."""

from __future__ import annotations

import gzip
import importlib.util
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
          "rdevmajor", "rdevminor", "namesize", "check")


def load_initrd() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "system-images" / "initrd.py"
    spec = importlib.util.spec_from_file_location("sysimg_initrd", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


initrd = load_initrd()


def read_newc(data: bytes) -> list[tuple[str, dict[str, int], bytes]]:
    """(name, header fields, data) of each member up to and including TRAILER!!!."""
    members, pos = [], 0
    while True:
        assert pos % 4 == 0 and data[pos:pos + 6] == b"070701"
        fields = {key: int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i, key in enumerate(FIELDS)}
        name_end = pos + 110 + fields["namesize"]
        assert data[name_end - 1] == 0, "the name is NUL-terminated"
        name = data[pos + 110:name_end - 1].decode()
        body = name_end + (-name_end % 4)
        assert data[name_end:body] == b"\0" * (body - name_end)
        members.append((name, fields, data[body:body + fields["filesize"]]))
        pos = body + fields["filesize"]
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return members


ENTRIES = [initrd.directory("dev"), initrd.char_device("dev/console", 5, 1),
           initrd.file("init", b"#!/bin/busybox sh\n", 0o755), initrd.symlink("sh", "bin/busybox"),
           initrd.file("odd", b"12345")]


def test_every_member_reads_back_with_its_fields() -> None:
    members = read_newc(initrd.cpio(ENTRIES, mtime=1_700_000_000))
    assert [name for name, _, _ in members] == ["dev", "dev/console", "init", "sh", "odd", "TRAILER!!!"]
    by_name = {name: (fields, body) for name, fields, body in members}
    dev, console, init = by_name["dev"][0], by_name["dev/console"][0], by_name["init"][0]
    assert stat.S_ISDIR(dev["mode"]) and dev["nlink"] == 2
    assert stat.S_ISCHR(console["mode"]) and (console["rdevmajor"], console["rdevminor"]) == (5, 1)
    assert stat.S_IMODE(init["mode"]) == 0o755 and by_name["init"][1] == b"#!/bin/busybox sh\n"
    assert stat.S_ISLNK(by_name["sh"][0]["mode"]) and by_name["sh"][1] == b"bin/busybox"
    assert by_name["odd"][1] == b"12345"  # 5 bytes: padded to 8 in the archive
    inodes = [fields["ino"] for name, fields, _ in members if name != "TRAILER!!!"]
    assert inodes == [1, 2, 3, 4, 5]
    assert {fields["mtime"] for name, fields, _ in members if name != "TRAILER!!!"} == {1_700_000_000}
    assert all(fields["uid"] == fields["gid"] == fields["check"] == 0 for _, fields, _ in members)


def test_same_entries_give_the_same_bytes_and_gzip_carries_no_time() -> None:
    one, two = initrd.initramfs(ENTRIES, mtime=7), initrd.initramfs(list(ENTRIES), mtime=7)
    assert one == two and one[:2] == b"\x1f\x8b" and one[4:8] == b"\0\0\0\0"  # gzip MTIME field
    assert gzip.decompress(one) == initrd.cpio(ENTRIES, mtime=7)


@pytest.mark.parametrize("paths", [["a", "a"], ["/init"], [""]])
def test_duplicate_or_absolute_paths_are_refused(paths: list[str]) -> None:
    with pytest.raises(ValueError):
        initrd.cpio([initrd.file(p, b"") for p in paths])
