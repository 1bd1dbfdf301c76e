"""Filesystem helpers with the durability osctl promises: whole files or nothing.

A host can lose power at any moment. A file osctl writes is written to a temporary file in the
same folder, fsynced, renamed over the old one, and the folder is fsynced, so a reader sees the
old content or the new content, never a torn mix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from osctl.errors import StateError


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably, creating parent folders."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {_reason(exc)}", hint=_hint(exc)) from exc


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist; other failures are a ``StateError``."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise StateError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {_reason(exc)}", hint=_hint(exc)) from exc


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist; other failures are a ``StateError``."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {_reason(exc)}", hint=_hint(exc)) from exc


def sha256_of(path: Path) -> str | None:
    """The file's sha256 (hex), read in pieces; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Space:
    """The filesystem a path is on, as ``free_space`` found it.

    ``path`` is what was measured: the path asked about, or its nearest existing ancestor (a
    folder osctl has yet to create will be made on that filesystem). ``device`` tells
    filesystems apart, so that two places on one disk are checked against its free bytes once;
    ``mount`` is the top folder of that filesystem, for messages, when it could be found.
    """

    path: str
    mount: str | None
    device: int
    free: int  # bytes an unprivileged writer may still use (root's reserve excluded)
    size: int  # bytes the filesystem holds in all


def free_space(path: Path) -> Space:
    """The free and total bytes of the filesystem ``path`` is (or will be) on.

    ``f_bavail`` rather than ``f_bfree``: ext4 keeps about 5% for root, and the engine or a
    service writing as another user cannot count on it. A failure to look is a ``StateError``.
    """
    probe = Path(os.path.abspath(path))
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        device = os.stat(probe).st_dev
        vfs = os.statvfs(probe)
    except OSError as exc:
        raise StateError(f"cannot measure the free space at {path}: {_reason(exc)}", hint=_hint(exc)) from exc
    return Space(str(probe), _mount_of(probe, device), device, vfs.f_bavail * vfs.f_frsize,
                 vfs.f_blocks * vfs.f_frsize)


def _mount_of(path: Path, device: int) -> str | None:
    """The topmost ancestor of ``path`` on ``device``: its filesystem's mount point (None if unknown)."""
    try:
        while path != path.parent and os.stat(path.parent).st_dev == device:
            path = path.parent
    except OSError:
        return None
    return str(path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _hint(exc: OSError) -> str | None:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "osctl manages the host's state and needs write access to its root (run as root?)"
    if exc.errno == errno.ENOSPC:
        return "free some space on the filesystem that holds the host root"
    return None

