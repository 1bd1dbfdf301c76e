"""Files of the host, under its root: never outside it.

User data names paths as the host sees them (``/etc/motd``). They are resolved under
``--root``; a path with ``..`` or one that leads out through a symbolic link is refused, so
user data can never write to the machine that runs osctl instead of the host it manages.
The host's users and groups are read and edited here too, through the same guard.
"""

from __future__ import annotations

from pathlib import Path

from osctl.adapters import fsutil
from osctl.errors import UsageError


def under_root(root: Path, path: str) -> Path:
    """``path`` of the host, inside ``root``; refused when it would lead outside."""
    if not path.startswith("/"):
        raise UsageError(f"{path!r} must be an absolute path of the host")
    if ".." in path.split("/"):
        raise UsageError(f"{path!r} must not contain '..'")
    base = root.resolve()
    candidate = (base / path.lstrip("/")).resolve()
    if candidate != base and base not in candidate.parents:
        raise UsageError(f"{path!r} leads outside the host root {root} (through a symbolic link)")
    return candidate


def _entries(root: Path, kind: str) -> list[list[str]]:
    """The colon-separated fields of each line of the host's ``/etc/passwd`` or ``/etc/group``."""
    path = under_root(root, f"/etc/{kind}")
    if not path.is_file():
        return []
    return [line.split(":") for line in path.read_text(errors="replace").splitlines()]


def read_ids(root: Path, kind: str) -> dict[str, int]:
    """Names to ids from the host's ``/etc/passwd`` or ``/etc/group``."""
    ids: dict[str, int] = {"root": 0}
    for fields in _entries(root, kind):
        if len(fields) > 2 and fields[2].isdigit():
            ids[fields[0]] = int(fields[2])
    return ids


def owner_ids(root: Path, owner: str) -> tuple[int, int]:
    """``user[:group]`` (names or numbers) as uid and gid of the host."""
    user, _, group = owner.partition(":")
    users, groups = read_ids(root, "passwd"), read_ids(root, "group")

    def resolve(value: str, table: dict[str, int], what: str) -> int:
        if value.isdigit():
            return int(value)
        if value not in table:
            raise UsageError(f"owner {owner!r}: the host has no {what} {value!r}")
        return table[value]

    uid = resolve(user or "root", users, "user")
    gid = resolve(group, groups, "group") if group else _primary_gid(root, user)
    return uid, gid


def _primary_gid(root: Path, user: str) -> int:
    for fields in _entries(root, "passwd"):
        if fields[0] == user and len(fields) > 3 and fields[3].isdigit():
            return int(fields[3])
    return 0


def add_user(root: Path, name: str, shell: str) -> int:
    """Make sure the host has user ``name`` (with a group of its own); returns its uid.

    A new user takes the next free id above 999 (below the 60000s that distributions reserve).
    """
    users = read_ids(root, "passwd")
    if name in users:
        return users[name]
    uid = _next_id(users)
    _append_line(under_root(root, "/etc/passwd"), f"{name}:x:{uid}:{uid}::/home/{name}:{shell}")
    _append_line(under_root(root, "/etc/group"), f"{name}:x:{uid}:")
    return uid


def add_to_group(root: Path, user: str, group: str) -> None:
    """Make ``user`` a member of ``group``, creating the group when the host has none."""
    path = under_root(root, "/etc/group")
    lines = path.read_text().splitlines() if path.is_file() else []
    for index, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == group and len(fields) == 4:
            members = [m for m in fields[3].split(",") if m]
            if user not in members:
                fields[3] = ",".join([*members, user])
                lines[index] = ":".join(fields)
                fsutil.atomic_write(path, "\n".join(lines) + "\n")
            return
    _append_line(path, f"{group}:x:{_next_id(read_ids(root, 'group'))}:{user}")


def _next_id(ids: dict[str, int]) -> int:
    return max([999, *(i for i in ids.values() if i < 60000)]) + 1


def _append_line(path: Path, line: str) -> None:
    current = path.read_text() if path.is_file() else ""
    if current and not current.endswith("\n"):
        current += "\n"
    fsutil.atomic_write(path, current + line + "\n")
