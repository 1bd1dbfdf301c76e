"""Ending a process the engine started in a container, from the host, by its host pid.

Why from the host: the engine has no call that ends an exec, and the other way, an exec of
``kill`` inside the container, needs a ``kill`` binary the image may not have, a free pid in a
container whose pids cgroup a runaway probe may have filled, and is itself one more process
that may hang. osctl runs as root on the engine's host, so it can signal the process directly.

Why it cannot hit a stranger: a pid is only a number, reused as soon as its process is reaped.
Each process is first pinned with a pidfd (``pidfd_open``), which names that one process for
good, and only then checked, through ``/proc``: it must be in the container's cgroup (its path
names the container's id) and in the exec's session. A pid reused between the listing and the
pidfd is refused by that check; one reused after it is not the pidfd's process, which the
kernel refuses to signal. The caller confirms, once the leader is pinned, that the engine still
reports the exec running with that pid, so the leader is the exec's own process.

Where the host's ``/proc`` is not the engine's (a remote engine), nothing matches and nothing
is signalled.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that place a process in a tree and a session."""

    pid: int
    ppid: int
    pgrp: int
    session: int


def parse_stat(pid: int, text: str) -> ProcStat | None:
    """``/proc/<pid>/stat`` -> its fields; the command name (in parentheses) may hold anything,
    spaces and parentheses included, so the fields are read after its last ``)``."""
    fields = text[text.rfind(")") + 1:].split()
    if len(fields) < 4 or not all(f.lstrip("-").isdigit() for f in fields[1:4]):
        return None
    return ProcStat(pid, int(fields[1]), int(fields[2]), int(fields[3]))


def _stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat(pid, (PROC / str(pid) / "stat").read_text(errors="replace"))
    except OSError:
        return None


def _all_stats() -> dict[int, ProcStat]:
    found: dict[int, ProcStat] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            found[stat.pid] = stat
    return found


def session_tree(leader: int, stats: dict[int, ProcStat]) -> set[int]:
    """The leader, every process of its session or process group, and all their descendants
    (a child that left the session is still found through its parent)."""
    members = {leader} | {s.pid for s in stats.values() if leader in (s.session, s.pgrp)}
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in members:
                members.add(child)
                todo.append(child)
    return members


def _in_container(pid: int, container_id: str) -> bool:
    try:
        return container_id in (PROC / str(pid) / "cgroup").read_text(errors="replace")
    except OSError:
        return False


@contextlib.contextmanager
def _pinned(pids: set[int]) -> Iterator[dict[int, int]]:
    """pid -> a pidfd for each of ``pids`` still alive; closed afterwards."""
    fds: dict[int, int] = {}
    try:
        for pid in sorted(pids):
            with contextlib.suppress(OSError):
                fds[pid] = os.pidfd_open(pid)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def kill_session(leader: int, container_id: str, still_leader: Callable[[], bool]) -> int:
    """SIGKILL the exec process ``leader`` of container ``container_id`` (the full id) and what
    it started; returns how many processes were signalled (0: nothing could be verified, or
    osctl may not signal them).

    ``still_leader`` is asked once the processes are pinned: True only if the engine still
    reports the exec running with pid ``leader``. Everything is signalled at once, after the
    checks, so that no child is reparented out of reach in between.
    """
    if leader <= 1 or not _CONTAINER_ID.fullmatch(container_id):
        return 0
    tree = session_tree(leader, _all_stats())
    with _pinned(tree) as fds:
        chosen = [fd for pid, fd in fds.items() if _verified(pid, leader, tree, container_id)]
        if leader not in fds or not _verified(leader, leader, tree, container_id) or not still_leader():
            return 0
        return sum(_kill(fd) for fd in chosen)


def _kill(pidfd: int) -> bool:
    """SIGKILL the pinned process; False when it is already gone or osctl may not (not root)."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        return False
    return True


def _verified(pid: int, leader: int, tree: set[int], container_id: str) -> bool:
    """Read again after pinning: still in the container, and still the leader, in its session,
    or a child of one found in the tree."""
    stat = _stat(pid)
    return (stat is not None and _in_container(pid, container_id)
            and (pid == leader or leader in (stat.session, stat.pgrp) or stat.ppid in tree))
