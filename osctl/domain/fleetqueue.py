"""A group's queue for semaphore slots, so that a thousand waiting hosts do not stampede.

Slots (``fleetslots``) guarantee that at most ``max_concurrent`` hosts swap; they say nothing
about who goes next. Hosts asking again every second, or all watching the slots, would send
etcd a burst of requests for every slot freed, most of them losing the race. Instead, a host
that is ready to swap joins the queue with one key under its lease, named so that keys sort in
the order hosts joined (``fleetkeys.queue_key``), and then:

- reads its place: how many hosts are ahead of it, the one just ahead, and the slots taken (one
  request, at one revision);
- if fewer hosts are ahead than slots are free, it takes a slot and leaves the queue;
- otherwise the first host in the queue watches the slots (and the rollout: a pause must reach
  it), and every other host watches only the host just ahead of it, which leaves the queue when
  it takes a slot or gives up.

So a freed slot wakes one host, which wakes the next when it leaves: etcd sends each waiting host
a handful of answers however long the queue, and the order is first come, first served. This is
the chain etcd's own lock recipe uses (each waiter watches its predecessor), with a head that
counts free slots instead of waiting for one holder. A host that dies in the queue leaves it
when its lease expires, which wakes the host behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from osctl.adapters.etcd import Query
from osctl.domain import fleetkeys
from osctl.domain.fleetslots import FleetSemaphore, Slot
from osctl.models.fleet import QueueEntry

if TYPE_CHECKING:
    from osctl.adapters.etcd import Etcd


@dataclass(frozen=True)
class Place:
    """Where a queued host stands, read at one revision."""

    ahead: int  # hosts queued before it
    predecessor: str | None  # the key of the host just ahead; None for the first
    slots: list[Slot]  # the slots taken
    revision: int  # of the read: a watch from revision + 1 misses nothing since

    def may_take(self, host_id: str, max_concurrent: int) -> bool:
        """Whether a slot is for this host now: it holds one already, or fewer hosts are ahead
        of it than slots are free (each of those may take one first)."""
        if any(s.holder.host_id == host_id for s in self.slots):
            return True
        return self.ahead < max_concurrent - len(self.slots)


class FleetQueue:
    """The queue of one group. Stateless: the caller keeps the key it joined with."""

    def __init__(self, etcd: Etcd, group: str) -> None:
        self.etcd, self.group = etcd, group
        self.prefix = fleetkeys.queue_prefix(group)

    def join(self, host_id: str, version: str, lease: int, revision: int, now: datetime) -> str:
        """Join at the back (``revision``: the newest the host has seen); the key to keep.

        A key that exists already is this host's own (a retried create whose answer was lost)."""
        key = fleetkeys.queue_key(self.group, revision, host_id)
        entry = QueueEntry(host_id=host_id, version=version, joined_at=now)
        self.etcd.create(key, entry.model_dump(mode="json"), lease=lease)
        return key

    def place(self, key: str) -> Place:
        """The host's place and the slots taken, in one request."""
        semaphore = FleetSemaphore(self.etcd, self.group)
        revision, (ahead, slots) = self.etcd.read_many([
            Query(self.prefix, range_end=key.encode(), descending=True, limit=1, keys_only=True),
            Query(semaphore.prefix, prefix=True),
        ])
        predecessor = ahead.kvs[0].key if ahead.kvs else None
        return Place(ahead.count, predecessor, semaphore.parse(slots.kvs), revision)

    def leave(self, key: str) -> None:
        """Leave the queue (the host took a slot, or stopped waiting): wakes the host behind."""
        self.etcd.delete(key)
