"""One mutating osctl per host at a time.

The lock is an ``flock`` on ``<root>/var/lib/osctl/lock``: the kernel releases it when the
holder dies, however it dies, so a stale lock from a killed process is simply taken over.
The holder writes its pid into the file so the one that waits can say who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from osctl.constants import STATE_DIR
from osctl.errors import HostLocked, OsctlError, StateError


SUPERVISOR = "supervise"
SUPERVISOR_PATIENCE = 15.0  # the supervisor holds the lock only for short repairs


def check_unlocked(root: Path) -> None:
    """Raise ``HostLocked`` now if another command is changing the host.

    Commands plan from the host's state before they take the lock; a plan read from a host in
    the middle of a change would be wrong (a rollback would say there is nothing to roll back
    to), so they first check that nobody is changing it. Read-only: it never creates the lock.
    """
    try:
        fd = os.open(root / STATE_DIR / "lock", os.O_RDONLY)
    except OSError:
        return  # no lock file yet, or unreadable: the real lock decides later
    try:
        try:
            holder = _try_flock(fd, fcntl.LOCK_SH)
        except OSError:
            return
        if holder and not holder.endswith(f": {SUPERVISOR}"):
            raise _locked(holder)
    finally:
        os.close(fd)


def _try_flock(fd: int, mode: int) -> str | None:
    """Take the lock without waiting: None when taken, else the holder's note (maybe empty)."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return None
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
    return os.pread(fd, 200, 0).decode(errors="replace").strip()


def _locked(holder: str) -> HostLocked:
    return HostLocked(f"another osctl is changing this host ({holder or 'unknown pid'})",
                      hint="wait for it to finish; the lock goes away when that process ends")


@contextlib.contextmanager
def host_lock(root: Path, purpose: str) -> Iterator[None]:
    """Hold the host's lock for the block, or raise ``HostLocked`` naming the holder.

    A command meeting the supervisor's lock waits a little (it only holds it to restart or
    recreate a container); meeting another command's lock, it fails at once.
    """
    path = root / STATE_DIR / "lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"cannot create the lock {path}: {exc.strerror or exc}",
                         hint="osctl needs write access to the host root (run as root?)") from exc
    try:
        deadline = time.monotonic() + (0 if purpose == SUPERVISOR else SUPERVISOR_PATIENCE)
        while (holder := _try_flock(fd, fcntl.LOCK_EX)) is not None:
            # The supervisor's holds are short; an empty note is a holder that is just arriving.
            transient = not holder or holder.endswith(f": {SUPERVISOR}")
            if not transient or time.monotonic() >= deadline:
                raise _locked(holder)
            time.sleep(0.05)
        _record(fd, f"pid {os.getpid()}: {purpose}")
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def supervisor_lock(root: Path) -> Iterator[None]:
    """One ``osctl supervise`` per host, held for its whole life (released when it dies)."""
    def busy(fd: int) -> HostLocked:
        holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "unknown pid"
        return HostLocked(f"another osctl supervise ({holder}) already supervises this host")

    with exclusive(root / STATE_DIR / "supervise.lock", busy, mode=0o644) as fd:
        _record(fd, f"pid {os.getpid()}")
        yield


@contextlib.contextmanager
def exclusive(path: Path, busy: Callable[[int], OsctlError], *, mode: int = 0o600) -> Iterator[int]:
    """Hold an ``flock`` on ``path`` (made if missing), or raise ``busy(fd)`` at once when another
    process holds it; the kernel drops it when the holder dies, so a crash never leaves it held."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    except OSError as exc:
        raise StateError(f"cannot create the lock {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise busy(fd) from None
        yield fd
    finally:
        os.close(fd)


def _record(fd: int, text: str) -> None:
    """Say who holds a lock: written whole, then trimmed, so a reader never sees it empty."""
    data = f"{text}\n".encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
