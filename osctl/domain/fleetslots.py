"""A per-group counting semaphore in etcd: at most ``max_concurrent`` hosts of a group swap at once.

Why fixed slot keys rather than locksmith's one JSON document with a holder list: locksmith's
read-modify-write of a shared value retries under contention and, if a holder dies, needs a
human (``locksmithctl unlock``). Here the group has ``max_concurrent`` keys
``/osctl/fleet/<group>/slots/<i>``; taking one is a transaction that creates it only if absent
(``Etcd.create``), so etcd itself guarantees that no two hosts hold the same slot, hence never
more than ``max_concurrent`` holders; and each slot is written under the holder's lease, so a
host that dies mid-swap frees its slot when its lease expires, with nobody's help.

A host holds at most one slot. ``acquire`` first looks for a slot the host already holds: after
an agent restart the host finds its slot (under the old lease if that lease has not expired
yet), moves it to its new lease and keeps it, rather than taking a second one. ``release``
deletes only a slot that holds this host, compared by revision, so it can never free a slot
that expired and was meanwhile taken by another host.

Lowering ``max_concurrent`` during a rollout takes effect as holders release: slots at or above
the new limit are never taken again, and no slot is taken while the group holds as many as the
limit, but a holder above it keeps its slot until done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from osctl.domain import fleetkeys
from osctl.domain.fleetstate import parse_record
from osctl.models.fleet import SlotHolder

if TYPE_CHECKING:
    from osctl.adapters.etcd import Etcd, KeyValue

ROUNDS = 3  # reads of the slots per acquire: enough to get past a burst of competitors, then "busy"


@dataclass(frozen=True)
class Slot:
    """A taken slot: its index, its key, who holds it, under which lease, as of which revision."""

    index: int
    key: str
    holder: SlotHolder
    lease: int
    mod_revision: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FleetSemaphore:
    """The slots of one group. Stateless between calls: every call reads etcd afresh."""

    def __init__(self, etcd: Etcd, group: str, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.etcd, self.group, self._clock = etcd, group, clock
        self.prefix = fleetkeys.slots_prefix(group)

    def slots(self) -> list[Slot]:
        """Every taken slot of the group, by index (read at one revision)."""
        return self.parse(self.etcd.get_prefix(self.prefix))

    def parse(self, kvs: list[KeyValue]) -> list[Slot]:
        """The taken slots among keys read under the slots' prefix, by index."""
        found = []
        for kv in kvs:
            index = fleetkeys.slot_index(self.group, kv.key)
            if index is not None:
                found.append(_slot(index, kv))
        return sorted(found, key=lambda s: s.index)

    def acquire(self, host_id: str, version: str, lease: int, max_concurrent: int) -> Slot | None:
        """Take a slot for ``host_id`` under ``lease`` (or keep the one it holds); None when all are taken.

        Never blocks: the caller (the agent) waits and asks again, re-checking its window and
        the rollout's state in between.
        """
        if max_concurrent < 1:
            raise ValueError("max_concurrent is at least 1")
        for _ in range(ROUNDS):
            slot, settled = self.take(host_id, version, lease, max_concurrent, self.slots())
            if slot is not None or settled:
                return slot
        return None

    def take(self, host_id: str, version: str, lease: int, max_concurrent: int, taken: list[Slot], *,
             unchanged: tuple[str, int] | None = None, leaving: str | None = None) -> tuple[Slot | None, bool]:
        """One attempt given the slots as just read (``taken``): the slot, and whether the answer
        is settled (True: a slot, or all are taken; False: someone was quicker, or ``unchanged``
        changed: read again).

        A host that waited in the group's queue has read the slots with its place (one request
        for both), so it goes straight to the create, which also checks that the rollout is
        still the one it read (``unchanged``: its key and revision) and leaves the queue
        (``leaving``: its key), in the same transaction."""
        mine = [s for s in taken if s.holder.host_id == host_id]
        if mine:
            kept = self._keep(mine, version, lease)
            return kept, kept is not None  # None: it expired or changed under us
        if len(taken) >= max_concurrent:
            return None, True
        used = {s.index for s in taken}
        free = [i for i in range(max_concurrent) if i not in used]
        # Start at a place of the host's own, so that competitors spread over the free slots
        # instead of all racing for the first one.
        start = int.from_bytes(hashlib.sha256(host_id.encode()).digest()[:4], "big") % len(free)
        for index in free[start:] + free[:start]:
            holder = SlotHolder(host_id=host_id, version=version, acquired_at=self._clock())
            key = fleetkeys.slot_key(self.group, index)
            revision = self.etcd.create(key, holder.model_dump(mode="json"), lease=lease, unchanged=unchanged,
                                        also_delete=leaving)
            if revision is not None:
                return Slot(index, key, holder, lease, revision), True
            if unchanged is not None:
                return None, False  # the slot was taken or the rollout changed: the caller reads again
        return None, False

    def give_back(self, slot: Slot) -> bool:
        """Free a slot this host took (one request: its key and revision are known); False when it
        had already gone (its lease expired)."""
        return self.etcd.delete(slot.key, mod_revision=slot.mod_revision)

    def release(self, host_id: str) -> bool:
        """Give back the slot ``host_id`` holds: True when it held one (and now holds none), False
        when it held none (already released, or its lease expired).

        Deletes only a slot still holding this host, compared by revision: never one that
        expired and was taken by another host meanwhile. A delete that reports nothing deleted
        (its answer was lost and the retry found the key gone, or the lease expired just now)
        still leaves the host without a slot, which is what the caller asked for.
        """
        mine = [slot for slot in self.slots() if slot.holder.host_id == host_id]
        for slot in mine:
            self.etcd.delete(slot.key, mod_revision=slot.mod_revision)
        return bool(mine)

    def _keep(self, mine: list[Slot], version: str, lease: int) -> Slot | None:
        """The slot the host already holds, moved to ``lease`` if it was under another one."""
        slot, extras = mine[0], mine[1:]
        for extra in extras:  # never made by acquire; healed rather than counted twice
            self.etcd.delete(extra.key, mod_revision=extra.mod_revision)
        if slot.lease == lease and slot.holder.version == version:
            return slot
        # Held under an older lease of ours (the agent restarted): the same slot, now under the new
        # lease, so that it outlives the old one; the time it was taken stays.
        holder = slot.holder.model_copy(update={"version": version})
        revision = self.etcd.replace(slot.key, holder.model_dump(mode="json"), mod_revision=slot.mod_revision,
                                     lease=lease)
        return Slot(slot.index, slot.key, holder, lease, revision) if revision is not None else None


def _slot(index: int, kv: KeyValue) -> Slot:
    return Slot(index, kv.key, parse_record(SlotHolder, kv), kv.lease, kv.mod_revision)
