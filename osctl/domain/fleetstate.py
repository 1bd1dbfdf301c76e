"""Reading and writing a group's rollout record and its hosts' published states in etcd.

Typed on both sides (``models.fleet``), so the agent and ``osctl fleet`` never handle raw JSON.
The rollout record is changed only by compare-and-swap (``update_rollout``): the operator's
``fleet pause`` and an agent recording a failure may race, and neither may undo the other.
A host's state is written under the host's lease, so the inventory lists the hosts alive now.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ValidationError

from osctl.adapters.etcd import Query
from osctl.domain import fleetkeys
from osctl.errors import EtcdError
from osctl.models.fleet import HostState, Rollout, RolloutFailure, RolloutState, StagedMark

if TYPE_CHECKING:
    from osctl.adapters.etcd import Etcd, KeyValue

M = TypeVar("M", bound=BaseModel)
CAS_ATTEMPTS = 20  # compare-and-swap rounds before giving up: only under absurd contention


class RolloutConflict(EtcdError):
    """The rollout record kept changing under a compare-and-swap; try again."""


def read_rollout(etcd: Etcd, group: str) -> tuple[Rollout, int] | None:
    """The group's rollout and the revision it was read at (for ``update_rollout``), or None."""
    kv = etcd.get(fleetkeys.rollout_key(group))
    return (parse_record(Rollout, kv), kv.mod_revision) if kv is not None else None


def read_rollout_at(etcd: Etcd, group: str) -> tuple[Rollout | None, int, int]:
    """The group's rollout (or None), its own revision (its last change; 0 without one) and the
    revision of the read. A watch of the rollout from the read's revision + 1 sees every later
    change, so a host that decided to wait misses none; a transaction comparing the rollout's
    revision acts only under the rollout the host read."""
    revision, (found,) = etcd.read_many([Query(fleetkeys.rollout_key(group))])
    if not found.kvs:
        return None, 0, revision
    return parse_record(Rollout, found.kvs[0]), found.kvs[0].mod_revision, revision


def write_rollout(etcd: Etcd, group: str, rollout: Rollout) -> int:
    """Start (or replace) the group's rollout, whatever was there; the revision of the write.

    The group's staging marks go in the same transaction: they belong to the rollout replaced,
    and a host must never count one of them towards the new one."""
    return etcd.write_many([(fleetkeys.rollout_key(group), rollout.model_dump(mode="json"))],
                           clear_prefixes=[fleetkeys.staged_prefix(group)])


def effective_state(rollout: Rollout, now: datetime) -> RolloutState:
    """The rollout's state as hosts act on it: staging past its deadline is active."""
    if rollout.state == "staging" and rollout.stage_deadline is not None and now >= rollout.stage_deadline:
        return "active"
    return rollout.state


def mark_staged(etcd: Etcd, group: str, rollout: Rollout, mark: StagedMark, lease: int) -> int:
    """Say, under the host's lease, that it is done staging for ``rollout``."""
    return etcd.put(fleetkeys.staged_key(group, rollout.seed, mark.host_id), mark.model_dump(mode="json"),
                    lease=lease)


def end_staging_if_done(etcd: Etcd, group: str, rollout: Rollout, now: datetime) -> bool:
    """Turn the rollout active when every live host of the group is done staging (one read of two
    counts; the last host to stage is the one that finds them equal). Whether it did."""
    _revision, (staged, hosts) = etcd.read_many([
        Query(fleetkeys.staged_prefix(group, rollout.seed), prefix=True, count_only=True),
        Query(fleetkeys.hosts_prefix(group), prefix=True, count_only=True),
    ])
    if staged.count < hosts.count:
        return False

    def activate(current: Rollout) -> Rollout | None:
        if current.seed != rollout.seed or current.state != "staging":
            return None
        return current.model_copy(update={"state": "active", "updated_at": now,
                                          "reason": f"every host staged ({staged.count})"})

    updated = update_rollout(etcd, group, activate)
    return updated is not None and updated.state == "active"


def update_rollout(etcd: Etcd, group: str, change: Callable[[Rollout], Rollout | None]) -> Rollout | None:
    """Apply ``change`` to the current rollout by compare-and-swap, re-reading on a conflict.

    ``change`` gets the current record and returns the new one, or None to leave it as is
    (e.g. it is already paused). Returns the record as it now stands, or None when the group
    has no rollout.
    """
    for _ in range(CAS_ATTEMPTS):
        current = read_rollout(etcd, group)
        if current is None:
            return None
        rollout, revision = current
        changed = change(rollout)
        if changed is None or changed == rollout:
            return rollout
        if etcd.replace(fleetkeys.rollout_key(group), changed.model_dump(mode="json"), mod_revision=revision):
            return changed
    raise RolloutConflict(f"the rollout of group {group} changed {CAS_ATTEMPTS} times while being updated",
                          hint="try again")


def add_failure(rollout: Rollout, failure: RolloutFailure, now: datetime) -> Rollout:
    """The rollout with one more failed host; paused, saying why, once the failure budget is spent.

    A host is counted once per version however often it reports: the budget counts hosts.
    """
    if any(f.host_id == failure.host_id and f.version == failure.version for f in rollout.failures):
        return rollout
    failures = (*rollout.failures, failure)
    update: dict[str, object] = {"failures": failures, "updated_at": now}
    if rollout.state == "active" and len(failures) >= rollout.failure_budget:
        names = ", ".join(f.host_id for f in failures[:3]) + (f" and {len(failures) - 3} more" if len(failures) > 3 else "")
        update |= {"state": "paused",
                   "reason": f"failure budget spent: {len(failures)} host(s) failed on {rollout.target} ({names})"}
    return rollout.model_copy(update=update)


def publish_host(etcd: Etcd, group: str, state: HostState, lease: int) -> int:
    """Write what the host says about itself, under its lease; the revision of the write."""
    return etcd.put(fleetkeys.host_key(group, state.host_id), state.model_dump(mode="json"), lease=lease)


def read_hosts(etcd: Etcd, group: str) -> list[HostState]:
    """The published state of every live host of the group, by host id."""
    states = []
    for kv in etcd.get_prefix(fleetkeys.hosts_prefix(group)):
        if fleetkeys.host_of(group, kv.key) is not None:
            states.append(parse_record(HostState, kv))
    return sorted(states, key=lambda s: s.host_id)


def parse_record(model: type[M], kv: KeyValue) -> M:
    """The record a key holds, or an ``EtcdError`` naming the key and the first problem."""
    try:
        return model.model_validate(kv.value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "value"
        raise EtcdError(f"the etcd key {kv.key} holds an invalid {model.__name__} record ({where}: {first['msg']})",
                        hint="something other than osctl wrote it; fix or delete the key") from None
