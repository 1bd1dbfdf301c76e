"""Write initramfs archives: gzip'd cpio in the kernel's "newc" format, byte for byte reproducible.

    entries = [directory("dev"), char_device("dev/console", 5, 1), file("init", script, 0o755)]
    data = initramfs(entries, mtime=1_700_000_000)

The kernel unpacks an initramfs from a (compressed) cpio archive in the "newc" format, the one
`cpio -H newc` writes (the kernel's Documentation/driver-api/early-userspace/buffer-format.rst).
Each entry is:

    header   "070701", then 13 fields, each 8 hexadecimal digits (upper case here):
             ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
             rdevminor, namesize (the name's length with its NUL), check (0: no checksum)
    name     the path without a leading "/", NUL-terminated, then NULs up to a multiple of 4
             bytes (counted from the start of the header, which is 110 bytes long)
    data     filesize bytes (a symlink's data is its target), then NULs up to a multiple of 4

and an entry named "TRAILER!!!" ends the archive. The kernel creates what each entry says,
device nodes included, before it runs /init, so no root privileges are needed to make one.
An initramfs may also be several such archives (each compressed or not) one after the other:
the kernel unpacks them in turn, so a part shared by many initrds can be compressed once.

Reproducible: entries are written in the order given, inode numbers count from 1, owners are
root, every time is `mtime`, and gzip's own header time is 0, so the same entries always give
the same bytes (the build-hash of the OS images relies on it).
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One member of the archive: a path (no leading "/"), its st_mode and its content."""

    path: str
    mode: int               # file type bits included, e.g. stat.S_IFREG | 0o644
    data: bytes = b""       # a regular file's content, or a symlink's target
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(length: int) -> bytes:
    """The NULs that bring ``length`` bytes up to a multiple of 4."""
    return b"\0" * (-length % 4)


def _member(ino: int, entry: Entry, mtime: int) -> bytes:
    name = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, mtime, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
    header = MAGIC + b"".join(b"%08X" % value for value in fields)
    return header + name + _pad(len(header) + len(name)) + entry.data + _pad(len(entry.data))


def cpio(entries: list[Entry], mtime: int = 0) -> bytes:
    """The uncompressed newc archive of ``entries``, in that order (parents before children)."""
    paths = [entry.path for entry in entries]
    if len(set(paths)) != len(paths) or any(p.startswith("/") or not p for p in paths):
        raise ValueError("initrd entries need distinct, relative paths")
    members = [_member(ino, entry, mtime) for ino, entry in enumerate(entries, start=1)]
    return b"".join(members) + _member(0, Entry(TRAILER, 0), 0)


def initramfs(entries: list[Entry], mtime: int = 0) -> bytes:
    """``cpio(entries)``, gzip'd (level 6, header time 0): what a boot loader hands the kernel."""
    return gzip.compress(cpio(entries, mtime), compresslevel=6, mtime=0)
