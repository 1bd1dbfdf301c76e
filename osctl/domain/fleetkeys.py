"""Where the fleet's state lives in etcd: every key osctl uses, in one place.

    /osctl/fleet/<group>/rollout            the group's rollout record (models.fleet.Rollout); no lease:
                                            it outlives every host
    /osctl/fleet/<group>/slots/<i>          semaphore slot i, 0 <= i < max_concurrent (SlotHolder),
                                            under the holder's lease: a dead holder frees it
    /osctl/fleet/<group>/hosts/<host-id>    what the host publishes about itself (HostState), under
                                            its lease: the inventory is the hosts that are alive

Everything of a group is under one prefix, so a group can be read at one revision (a consistent
view for ``osctl fleet status``), replayed (``Etcd.history``), or removed, without touching
another group. Prefixes end with '/', so group ``web`` never matches ``web-2``. Group names and
host ids cannot contain '/' (``models.refs``), so a key always parses back unambiguously.
"""

from __future__ import annotations

from osctl.errors import UsageError
from osctl.models.refs import validate_group, validate_host_id

ROOT = "/osctl/fleet/"


def group_prefix(group: str) -> str:
    """Every key of the group starts with this."""
    try:
        validate_group(group)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f"{ROOT}{group}/"


def rollout_key(group: str) -> str:
    return f"{group_prefix(group)}rollout"


def slots_prefix(group: str) -> str:
    return f"{group_prefix(group)}slots/"


def slot_key(group: str, index: int) -> str:
    if index < 0:
        raise ValueError(f"a slot index is not negative: {index}")
    return f"{slots_prefix(group)}{index}"


def hosts_prefix(group: str) -> str:
    return f"{group_prefix(group)}hosts/"


def host_key(group: str, host_id: str) -> str:
    try:
        validate_host_id(host_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f"{hosts_prefix(group)}{host_id}"


def slot_index(group: str, key: str) -> int | None:
    """The index of a slot key of ``group``, or None for any other key."""
    rest = key.removeprefix(slots_prefix(group))
    return int(rest) if rest != key and rest.isdigit() else None


def host_of(group: str, key: str) -> str | None:
    """The host id of a host-state key of ``group``, or None for any other key."""
    rest = key.removeprefix(hosts_prefix(group))
    return rest if rest != key and rest and "/" not in rest else None
