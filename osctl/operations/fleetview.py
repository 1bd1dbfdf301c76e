"""The group now, for people watching it: one summary, kept current by one etcd watch.

``osctl fleet status --watch`` (a terminal) and ``osctl fleet serve`` (a web page, any number of
browsers) show the same thing, so both take it from here: ``summarize`` turns a ``FleetStatus``
into a JSON-ready summary (hosts by version and phase, the wave open now and the next one, the
failure budget, the newest failures, the slots), and ``GroupWatch`` keeps the latest
``FleetStatus`` of a group current from a single etcd watch, however many viewers read it.

Why the watch pattern: read the group at revision R, then watch its prefix from R + 1, so
nothing written between the read and the watch is missed (etcd replays it). A 1,000-host fleet
changes many times a second; the watch only says "something changed" and the group is read
again at most ``4`` times a second (``min_interval``), so a burst costs one read, not one per
change. The summary is computed when a viewer asks, with the viewer's clock: a wave opens at a
time, not at an etcd change, so a view redrawn for its clock alone is right too.

Nothing here renders: the CLI draws the summary with rich, the web page with the DOM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from osctl.domain import fleetkeys
from osctl.domain.updatepolicy import opened_share, wave_position
from osctl.errors import EtcdError, EtcdUnavailable
from osctl.operations.fleet import FleetStatus, read_status

if TYPE_CHECKING:
    from osctl.adapters.etcd import Etcd
    from osctl.models.fleet import Rollout

log = logging.getLogger(__name__)

LAST_FAILURES = 5  # failures shown, newest first: the budget is usually a handful, the reasons long


def _utcnow() -> datetime:
    return datetime.now(UTC)


def summarize(found: FleetStatus | None, now: datetime, *, group: str, error: str | None = None,
              read_at: datetime | None = None, failures: int | None = LAST_FAILURES) -> dict[str, Any]:
    """What a live view shows of the group at ``now``, as JSON-ready data.

    ``found`` is the last status read (None before the first read succeeded); ``error`` says
    why it may be stale (etcd unreachable), ``read_at`` when it was read. Keys:
    ``group``, ``revision``, ``as_of`` / ``read_at`` (ISO times), ``error``, ``rollout`` (target,
    state, reason, started_at, max_concurrent, or None), ``hosts`` (how many), ``on_target``,
    ``by_version``, ``by_phase``, ``wave``, ``budget``, ``last_failures``, ``slots``.
    The full host list is not in it (a view of 1,000 hosts shows counts): ``fleet status --json``
    has it. ``failures``: how many of the newest failures ``last_failures`` lists (None: all).
    """
    rollout = found.rollout if found else None
    hosts = found.hosts if found else []
    slots = found.slots if found else []
    summary: dict[str, Any] = {
        "group": group,
        "revision": found.revision if found else 0,
        "as_of": now.astimezone(UTC).isoformat(),
        "read_at": read_at.astimezone(UTC).isoformat() if read_at else None,
        "error": error,
        "rollout": None,
        "hosts": len(hosts),
        "on_target": found.on_target if found else 0,
        "by_version": dict(sorted(Counter(h.running or "none" for h in hosts).items())),
        "by_phase": dict(sorted(Counter(h.phase for h in hosts).items())),
        "wave": None,
        "budget": None,
        "last_failures": [],
        "slots": {"taken": len(slots), "max": rollout.max_concurrent if rollout else None,
                  "holders": [{"index": s.index, "host_id": s.holder.host_id, "version": s.holder.version,
                               "since": s.holder.acquired_at.isoformat()} for s in slots]},
    }
    if rollout is None:
        return summary
    summary["rollout"] = {"target": rollout.target, "state": rollout.state, "reason": rollout.reason,
                          "started_at": rollout.started_at.isoformat(), "max_concurrent": rollout.max_concurrent,
                          "stage_deadline": rollout.stage_deadline.isoformat() if rollout.stage_deadline else None,
                          "staged": found.staged, "queued": found.queued}
    summary["wave"] = wave_summary(rollout, [h.host_id for h in hosts], now)
    used = len(rollout.failures)
    summary["budget"] = {"used": used, "budget": rollout.failure_budget,
                         "left": max(0, rollout.failure_budget - used), "spent": used >= rollout.failure_budget}
    newest = sorted(rollout.failures, key=lambda f: f.at, reverse=True)[:failures]
    summary["last_failures"] = [{"host_id": f.host_id, "version": f.version, "reason": f.reason,
                                 "at": f.at.isoformat()} for f in newest]
    return summary


def wave_summary(rollout: Rollout, host_ids: list[str], now: datetime) -> dict[str, Any]:
    """Where the rollout's waves stand at ``now``: the share open, which wave that is (1-based,
    0 before the first opens), how many of ``host_ids`` it lets go, and the next wave (its share,
    when it opens, seconds until then), or None once the last one is open.

    Hosts are placed as the agents place themselves (``updatepolicy.wave_position`` of the
    rollout's seed), so the count is what the agents will do, not an estimate from the shares.
    """
    share = opened_share(rollout.waves, rollout.started_at, now)
    number = sum(1 for w in rollout.waves if w.share <= share) if share > 0 else 0
    elapsed = (now - rollout.started_at).total_seconds()
    upcoming = [w for w in rollout.waves if w.after > elapsed and w.share > share]
    following = None
    if upcoming:
        wave = upcoming[0]
        opens = rollout.started_at + timedelta(seconds=wave.after)
        following = {"number": rollout.waves.index(wave) + 1, "share": wave.share,
                     "opens_at": opens.astimezone(UTC).isoformat(),
                     "in_seconds": max(0.0, (opens - now).total_seconds())}
    return {"number": number, "of": len(rollout.waves), "share": share,
            "hosts_open": sum(1 for h in host_ids if wave_position(rollout.seed, h) < share),
            "next": following}


@dataclass(frozen=True)
class Snapshot:
    """What a ``GroupWatch`` knows now. ``seq`` grows by one per new read or new error, so a
    viewer asks "anything after ``seq``?" and never misses (nor repeats) a change."""

    seq: int
    status: FleetStatus | None
    read_at: datetime | None
    error: str | None


class GroupWatch:
    """The latest status of one group, re-read when an etcd watch of its prefix reports a change.

    One thread (``start``) does every read and the one watch; viewers call ``wait`` from their
    own threads. When etcd cannot be reached the last status is kept, ``error`` says why, and
    the thread tries again every ``retry`` seconds.
    """

    def __init__(self, etcd: Etcd, group: str, *, min_interval: float = 0.25, watch_timeout: float = 30.0,
                 retry: float = 1.0, clock: Callable[[], datetime] = _utcnow) -> None:
        self.etcd, self.group = etcd, group
        self.prefix = fleetkeys.group_prefix(group)
        self.min_interval, self.watch_timeout, self.retry = min_interval, watch_timeout, retry
        self.clock = clock
        self.reads = 0  # group reads done: what the coalescing saves is visible (tests, --debug)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._snapshot = Snapshot(0, None, None, None)
        self._thread: threading.Thread | None = None

    # -- for viewers -------------------------------------------------------------------------
    def current(self) -> Snapshot:
        with self._changed:
            return self._snapshot

    def wait(self, after: int, timeout: float) -> Snapshot:
        """The snapshot once its ``seq`` is past ``after``, or as it is after ``timeout`` seconds
        (or at once when the watch is stopping)."""
        with self._changed:
            self._changed.wait_for(lambda: self._snapshot.seq > after or self._stop.is_set(), timeout)
            return self._snapshot

    def summary(self, snapshot: Snapshot | None = None) -> dict[str, Any]:
        """``summarize`` of the snapshot (default: the current one) at this moment."""
        snap = snapshot or self.current()
        return summarize(snap.status, self.clock(), group=self.group, error=snap.error, read_at=snap.read_at)

    # -- the one reader ------------------------------------------------------------------------
    def start(self) -> GroupWatch:
        self._thread = threading.Thread(target=self.run, name=f"fleet-watch-{self.group}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- as a ``webserve.LiveSource`` -----------------------------------------------------------
    def data(self, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
        """``wait``, then the summary of what it returned: the page's data and its number."""
        snap = self.wait(after, timeout) if timeout > 0 else self.current()
        return snap.seq, self.summary(snap)

    @property
    def closing(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Read, watch from the revision read, read again on a change; until ``stop``."""
        last_read = float("-inf")
        while not self._stop.is_set():
            pause = last_read + self.min_interval - time.monotonic()
            if pause > 0 and self._stop.wait(pause):  # coalesce: changes meanwhile are read at once
                return
            last_read = time.monotonic()
            try:
                found = read_status(self.etcd, self.group)
            except (EtcdUnavailable, EtcdError) as exc:
                self._publish(self.current().status, exc.message, keep_time=True)
                self._stop.wait(self.retry)
                continue
            self.reads += 1
            self._publish(found, None)
            try:
                self._wait_for_change(found.revision)
            except (EtcdUnavailable, EtcdError) as exc:
                self._publish(found, exc.message, keep_time=True)
                self._stop.wait(self.retry)

    def _wait_for_change(self, revision: int) -> None:
        """Return once something under the group's prefix changed after ``revision`` (or the
        stream broke, or ``stop``): the caller reads the group again in every case."""
        while not self._stop.is_set():
            events = self.etcd.watch(self.prefix, prefix=True, since=revision + 1, timeout=self.watch_timeout,
                                     stop=self._stop)
            if events is not None:  # a change, or [] for a broken stream: read again either way
                return

    def _publish(self, status: FleetStatus | None, error: str | None, *, keep_time: bool = False) -> None:
        with self._changed:
            before = self._snapshot
            if keep_time and before.error == error and before.status is status:
                return  # the same failure again: nothing new to show
            read_at = before.read_at if keep_time else self.clock()
            self._snapshot = Snapshot(before.seq + 1, status, read_at, error)
            self._changed.notify_all()
        if error:
            log.debug("fleet view of %s: %s", self.group, error)
