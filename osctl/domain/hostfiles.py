"""Files of the host, under its root: never outside it.

User data names paths as the host sees them (``/etc/motd``). They are resolved under
``--root``; a path with ``..`` or one that leads out through a symbolic link is refused, so
user data can never write to the machine that runs osctl instead of the host it manages.
"""

from __future__ import annotations

from pathlib import Path

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


def read_ids(root: Path, kind: str) -> dict[str, int]:
    """Names to ids from the host's ``/etc/passwd`` or ``/etc/group``."""
    path = root / "etc" / kind
    ids: dict[str, int] = {"root": 0}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split(":")
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
    path = root / "etc" / "passwd"
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split(":")
            if fields[0] == user and len(fields) > 3 and fields[3].isdigit():
                return int(fields[3])
    return 0
