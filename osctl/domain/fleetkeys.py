"""Where the fleet's state lives in etcd: every key osctl uses, in one place.

    /osctl/fleet/<group>/rollout            the group's rollout record (models.fleet.Rollout); no lease:
                                            it outlives every host
    /osctl/fleet/<group>/slots/<i>          semaphore slot i, 0 <= i < max_concurrent (SlotHolder),
                                            under the holder's lease: a dead holder frees it
    /osctl/fleet/<group>/hosts/<host-id>    what the host publishes about itself (HostState), under
                                            its lease: the inventory is the hosts that are alive
    /osctl/fleet/<group>/queue/<rev>.<host> a host waiting for a slot (QueueEntry), under its lease;
                                            ordered by name: <rev> is the 16-digit revision the
                                            host had seen when it joined, so earlier comes first
    /osctl/fleet/<group>/staged/<seed>/<host>
                                            the host has done staging for the rollout with that
                                            seed (StagedMark), under its lease; counted against
                                            the hosts to end the staging phase

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


def queue_prefix(group: str) -> str:
    return f"{group_prefix(group)}queue/"


def queue_key(group: str, revision: int, host_id: str) -> str:
    """A waiting host's place: names sort by the revision it joined at, then by host id."""
    try:
        validate_host_id(host_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f"{queue_prefix(group)}{revision:016d}.{host_id}"


def staged_prefix(group: str, seed: int | None = None) -> str:
    """Every staging mark of the group, or of the rollout with ``seed``."""
    base = f"{group_prefix(group)}staged/"
    return base if seed is None else f"{base}{seed}/"


def staged_key(group: str, seed: int, host_id: str) -> str:
    try:
        validate_host_id(host_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f"{staged_prefix(group, seed)}{host_id}"


def range_end(prefix: str) -> bytes:
    """The first key after every key starting with ``prefix`` (its last byte plus one)."""
    raw = bytearray(prefix.encode())
    if not raw or raw[-1] == 0xFF:
        raise ValueError(f"cannot range over the prefix {prefix!r}")
    raw[-1] += 1
    return bytes(raw)


def rollout_and_slots(group: str) -> tuple[str, bytes]:
    """One key range holding the rollout record and every slot, and nothing else (``queue/`` and
    ``hosts/`` sort before ``rollout``, ``staged/`` after ``slots/``): what the first host in
    the queue watches, with one stream, to learn of a freed slot or of a pause."""
    return rollout_key(group), range_end(slots_prefix(group))
