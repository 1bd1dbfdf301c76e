"""The update agent: a host that updates itself, alone or as one of a fleet coordinated in etcd.

Every check is one ``tick``, which walks the same gates in the same order and stops at the
first closed one:

    policy manual -> target (pinned version, else the group's rollout, else the newest release)
    -> already running? -> rolled back here before? (never retried) -> rollout active or staging?
    -> the host's wave open? (not while staging: everyone downloads) -> stage (pull)
    -> download-only, or the rollout still staging: stop here -> maintenance window open?
    -> the group's queue, then a slot of its semaphore -> swap -> give the slot back

Between checks the agent waits for what can open the gate it stopped at, not for a clock: in a
fleet, an etcd watch of the rollout record (a rollout starting, a pause, staging ending), of the
host just ahead in the queue (``fleetqueue``), or of the slots for the first host in the queue.
A gate that opens by itself (a wave, a window, a staging deadline) bounds the wait, and so does
the check interval (with jitter, so a fleet does not ask in lockstep). So a freed slot is taken
within milliseconds, and a quiet fleet sends etcd nothing but lease renewals.

A rollout starts "staging": every host downloads the target (and says so with a mark under its
lease); the last one to finish, or the deadline, turns the rollout active. A slot is then held
only for the swap itself. The slot is given back only after the host published its result
(healthy or rolled back): what etcd records never shows more hosts "swapping" than slots. A
rollback is reported to the rollout, which pauses for everyone once its failure budget is spent.
Each host's state is published under its lease, refreshed by a thread during long swaps: a host
that dies stops being listed, and its slot and its place in the queue free themselves.

The host itself is behind ``HostWork`` (``agenthost``): this machine (``LocalHost``), or a
simulator's stand-in. Without etcd settings the agent runs alone: no slots, no rollout, the
same gates otherwise.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from osctl.adapters.etcd import Etcd, Event
from osctl.domain import fleetkeys, updatepolicy
from osctl.domain.fleetqueue import FleetQueue
from osctl.domain.fleetslots import FleetSemaphore
from osctl.domain.fleetstate import (add_failure, effective_state, end_staging_if_done, mark_staged, publish_host,
                                     read_rollout_at, update_rollout)
from osctl.errors import EtcdLeaseGone, EtcdUnavailable, OsctlError, TrustError
from osctl.models.events import AgentEvent, Events, ignore
from osctl.models.fleet import HostPhase, HostState, Rollout, RolloutFailure, StagedMark
from osctl.operations import transaction
from osctl.operations.agenthost import AGENT_STATE, HostWork

if TYPE_CHECKING:
    from osctl.domain.settings import Settings

__all__ = ["AGENT_STATE", "Agent", "Step", "Wait"]

JITTER = 0.1  # +-10 % of the check interval
SLOT_RETRY = 1.0  # seconds before asking again when etcd is away or a race was lost


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WatchOn:
    """An etcd change that may open the gate: a key, or the range up to ``range_end``, from
    revision ``since`` (the read that decided to wait, plus one: nothing in between is missed)."""

    key: str
    since: int
    range_end: bytes | None = None
    wanted: Callable[[Event], bool] = lambda _event: True


@dataclass(frozen=True)
class Wait:
    """What the agent waits for before its next check (at most the check interval)."""

    watch: WatchOn | None = None
    until: datetime | None = None  # a gate that opens by itself then (a wave, a window, staging's end)
    soon: bool = False  # ask again in a second (etcd away, a race lost)


# After a swap (or a refusal) the next check comes at once: it finds nothing to do, and waits on
# the rollout record from a fresh revision instead of for a whole check interval.
AT_ONCE = Wait(soon=True, until=datetime.min.replace(tzinfo=UTC))


@dataclass(frozen=True)
class Step:
    """Where one tick stopped, and why (one line for humans and for ``fleet status``)."""

    phase: HostPhase
    target: str | None
    detail: str
    wait: Wait = field(default=Wait(), compare=False)

    @property
    def retry_soon(self) -> bool:
        """A gate that opens by itself or on an etcd change: the agent does not wait a whole interval."""
        return self.wait.soon or self.wait.until is not None or self.wait.watch is not None


class Agent:
    """One host's agent. ``settings`` is re-read at every tick (user data may change it)."""

    def __init__(self, settings: Settings, host: HostWork, *, lease_ttl: int = 30, events: Events = ignore,
                 rng: random.Random | None = None, clock: Callable[[], datetime] = _utcnow,
                 on_tick: Callable[[Step, Rollout | None], None] | None = None) -> None:
        self.base, self.host, self.lease_ttl = settings, host, lease_ttl
        self.events = events
        # Called after every check with where it stopped and the rollout it saw (metrics, tests).
        self.on_tick = on_tick or (lambda _step, _rollout: None)
        self.rng, self.clock = rng or random.Random(), clock
        self.host_id = settings.host_id
        # One attempt per call: the loop itself asks again soon, and must not sit for a minute in
        # retries while etcd has no quorum.
        self.etcd: Etcd | None = Etcd(settings.etcd_endpoints, timeout=2.0, attempts=1, deadline=5.0) \
            if settings.etcd_endpoints else None
        self.keeper_etcd: Etcd | None = None  # the lease keeper's own client (its requests count too)
        self.group = settings.group
        self.lease: int | None = None
        self._published: tuple[Step, object] | None = None  # the state last written, and its lease
        self._seen_rollout: Rollout | None = None  # as last read: for the wave position it publishes
        self._seen_rollout_revision = 0  # its own revision (mod_revision) then
        self._seen_read_revision = 0  # the revision it was read at
        self._queue_woken = False  # the last check waits in the queue: the next one need not read the rollout
        self._reuse_rollout = False
        self._interval = 300.0  # the check interval, as the last check read it
        self._settings_cache: tuple[tuple[int, int, int] | None, Settings] | None = None
        self._queued: tuple[str, str, int] | None = None  # queue key, the target it waits for, its lease
        self._marked: tuple[int, int] | None = None  # staging mark written: rollout seed, lease
        self.failed = host.failed_versions()
        self.last = Step("idle", None, "starting")
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        # What ends a wait: an etcd watch's answer, the lease keeper (the lease is gone: check
        # now), or the stop.
        self._nudge = threading.Event()

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Recover what a crash left, then tick until ``stop`` is set."""
        self._stop = stop
        # Waits sleep on one event, the nudge: a stop must ring it too (one thread, no polling).
        threading.Thread(target=lambda: (stop.wait(), self._nudge.set()), name="stop", daemon=True).start()
        self._recover()
        if self.etcd is not None:
            self.keeper_etcd = Etcd(self.base.etcd_endpoints)  # the main client may be busy
            self._keeper = threading.Thread(target=self._keep_lease, name="lease", daemon=True)
            self._keeper.start()
        try:
            while not stop.is_set():
                step = self.tick()
                if once:
                    return
                self._wait(step.wait, stop)
        finally:
            self._leave()

    def _settings(self) -> Settings:
        """The settings as the file says now (user data may change it between two checks): read
        again when the file changed (its size, time or inode), else the same, with the memo of
        the previous check emptied (refreshed release metadata must not outlive a check). The
        YAML and its validation are most of a check's CPU in a thousand-host simulation."""
        try:
            stat = self.base.config_path.stat()
            key: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            key = None
        if self._settings_cache is None or key != self._settings_cache[0]:
            self._settings_cache = (key, dataclasses.replace(self.base))
        settings = self._settings_cache[1]
        settings.memo.clear()
        return settings

    def _wait(self, wait: Wait, stop: threading.Event) -> None:
        """Until what the step waits for happens, its time comes, the check interval passes, the
        lease keeper finds the lease gone (everything under it must be written again), or stop."""
        timeout = updatepolicy.next_check(self._interval, JITTER, self.rng)
        if wait.soon:
            timeout = min(timeout, SLOT_RETRY)
        if wait.until is not None:
            timeout = min(timeout, max(0.0, (wait.until - self.clock()).total_seconds()) + 0.05)
        try:
            if wait.watch is not None and self.etcd is not None:
                w = wait.watch
                try:
                    events = self.etcd.watch(w.key, range_end=w.range_end, since=w.since, timeout=timeout,
                                             wake=self._nudge, wanted=w.wanted)
                    if any(e.key == fleetkeys.rollout_key(self.group) for e in events or ()):
                        self._queue_woken = False  # woken by the rollout itself: the next check reads it
                    return
                except OsctlError:
                    timeout = min(timeout, SLOT_RETRY)  # etcd away: the next check says so
            self._nudge.wait(timeout)
        finally:
            if not stop.is_set():
                self._nudge.clear()

    def tick(self) -> Step:
        """Walk the gates once; publish where the host stopped."""
        settings = self._settings()
        # Woken in the queue: this check may take the rollout read before (see _rollout). Set
        # again only by a wait in the queue.
        self._reuse_rollout, self._queue_woken = self._queue_woken, False
        try:
            self._interval = settings.file.update.check_interval
            step = self._gates(settings)
        except EtcdUnavailable as exc:
            step = Step("waiting-slot", self.last.target, f"etcd unavailable, waiting: {exc.message}", Wait(soon=True))
            self._say_changed(step)  # nothing to publish to
            self.on_tick(step, self._seen_rollout)
            return step
        except EtcdLeaseGone:
            self.lease = None  # its keys are gone with it: a new lease, and everything written again
            step = Step("waiting-slot", self.last.target, "this host's lease expired; taking a new one",
                        Wait(soon=True))
        except OsctlError as exc:
            step = Step("failed", self.last.target, exc.message)
        if step.phase != "waiting-slot":
            self._safe(self._leave_queue)
        self._publish(settings, step)
        self._safe(lambda: self._mark_staging_done(step))
        self.on_tick(step, self._seen_rollout)
        return step

    # ------------------------------------------------------------------ the gates

    def _gates(self, settings: Settings) -> Step:
        policy = settings.file.update
        rollout, revision = self._rollout()
        changes = Wait(watch=self._rollout_watch(revision))  # what an idle host waits for
        if policy.policy == "manual":
            return Step("idle", None, "update policy is manual", changes)
        running = self.host.running()
        target, source = self._target(settings, rollout)
        if target is None:
            return Step("idle", None, source, changes)
        if target == running:
            if (self.last.phase, self.last.target) == ("healthy", target):
                return dataclasses.replace(self.last, wait=changes)  # it swapped here: nothing new to say
            return Step("idle", target, f"runs {target} ({source})", changes)
        if target in self.failed:
            return Step("rolled-back", target, f"{target} failed on this host before (it rolled back, or a boot gave "
                                                  "up on its trial); it is not tried again", changes)
        following = rollout if source == "rollout" else None  # a pinned host ignores the rollout's target
        state = effective_state(following, self.clock()) if following is not None else None
        if following is not None:
            if state not in ("active", "staging"):
                return Step("idle", target, f"rollout {following.state}"
                            + (f": {following.reason}" if following.reason else ""), changes)
            position = updatepolicy.wave_position(following.seed, self.host_id)
            if state == "active" and not updatepolicy.wave_open(following.waves, following.started_at, self.clock(),
                                                                position):
                opens = updatepolicy.wave_opens_at(following.waves, following.started_at, position)
                return Step("waiting-wave", target, f"this host's wave opens at {opens:%Y-%m-%d %H:%M}Z",
                            Wait(watch=changes.watch, until=opens, soon=self.etcd is None))
        if not self.host.stored(target):
            self._publish(settings, Step("staging", target, f"pulling {target}"))
            try:
                self.host.stage(target)
            except TrustError as exc:
                return self._refused(target, following, exc)
            self.events(AgentEvent("staged", target))
        if policy.policy == "download-only":
            return Step("staged", target, f"{target} is stored; policy download-only never swaps", changes)
        if following is not None and state == "staging":
            deadline = following.stage_deadline
            return Step("staged", target, f"{target} is stored; swaps start when every host of the group has it"
                        + (f" (by {deadline:%H:%M:%S}Z at the latest)" if deadline else ""),
                        Wait(watch=changes.watch, until=deadline))
        if not updatepolicy.window_open(policy.window, self.clock()):
            opens = updatepolicy.next_window_start(policy.window, self.clock())
            return Step("waiting-window", target, f"maintenance window opens at {opens:%Y-%m-%d %H:%M}Z",
                        Wait(watch=changes.watch, until=opens, soon=self.etcd is None))
        return self._swap_in_slot(settings, target, following, rollout.max_concurrent if rollout else 1, revision)

    def _target(self, settings: Settings, rollout: Rollout | None) -> tuple[str | None, str]:
        """What the host converges to, and where that came from."""
        if settings.file.version:
            return settings.file.version, "pinned in the settings"
        if self.etcd is not None:
            if rollout is None:
                return None, f"no rollout for group {self.group}"
            return rollout.target, "rollout"
        return transaction.newest_release(settings, None), "newest release"

    def _rollout(self) -> tuple[Rollout | None, int]:
        """The group's rollout and the revision it was read at (0 without etcd); the rollout's own
        revision is kept for the slot's transaction.

        A host woken in the queue (the host ahead left, or a slot was freed) does not read it
        again: the slot's transaction takes a slot only if the rollout is still at the revision
        read before, so a change cannot slip through, and the way from a freed slot to the next
        swap is one request shorter. After such a transaction failed, the rollout is read."""
        if self.etcd is None:
            return None, 0
        reuse, self._reuse_rollout = self._reuse_rollout, False
        if reuse and self._seen_rollout is not None:
            return self._seen_rollout, self._seen_read_revision
        self._seen_rollout, self._seen_rollout_revision, revision = read_rollout_at(self.etcd, self.group)
        self._seen_read_revision = revision
        return self._seen_rollout, revision

    def _rollout_watch(self, revision: int) -> WatchOn | None:
        return WatchOn(fleetkeys.rollout_key(self.group), revision + 1) if self.etcd is not None else None

    # ------------------------------------------------------------------ queue, slot, swap

    def _swap_in_slot(self, settings: Settings, target: str, rollout: Rollout | None, limit: int,
                      revision: int) -> Step:
        """Wait in the group's queue, take a slot, swap, publish the result, give the slot back.

        ``rollout``: the rollout the host follows (None for a pinned or lone host). The slot is
        taken only if the rollout is still the one read at this check (it may have been paused
        meanwhile), and the host leaves the queue in the same transaction: a freed slot reaches
        the next host's swap in one request after its wake-up's two reads."""
        if self.etcd is None:
            return self._swap(settings, target, rollout)
        lease = self._lease()
        queue = FleetQueue(self.etcd, self.group)
        if self._queued is None or self._queued[1:] != (target, lease):
            self._leave_queue()
            self._queued = (queue.join(self.host_id, target, lease, revision, self.clock()), target, lease)
        place = queue.place(self._queued[0])
        semaphore = FleetSemaphore(self.etcd, self.group)
        held = any(s.holder.host_id == self.host_id for s in place.slots)  # since before an agent restart
        slot, settled = None, True
        if place.may_take(self.host_id, limit):
            unchanged = (fleetkeys.rollout_key(self.group), self._seen_rollout_revision) if rollout else None
            slot, settled = semaphore.take(self.host_id, target, lease, limit, place.slots, unchanged=unchanged,
                                           leaving=None if held else self._queued[0])
        if slot is None and not settled:  # another host was quicker, or the rollout changed: look again
            return Step("waiting-slot", target, "the slots or the rollout changed; looking again", AT_ONCE)
        if slot is None:
            if place.predecessor is None:  # first in the queue: a freed slot, or a pause, wakes it
                start, end = fleetkeys.rollout_and_slots(self.group)
                rollout_key = fleetkeys.rollout_key(self.group)
                watch = WatchOn(start, place.revision + 1, end, lambda e: e.key == rollout_key or e.kind == "delete")
                detail = f"first in the queue; {len(place.slots)} of {limit} slots taken"
            else:  # the host ahead leaves the queue when it takes a slot or gives up
                watch = WatchOn(place.predecessor, place.revision + 1, None, lambda e: e.kind == "delete")
                detail = f"{place.ahead} host(s) ahead in the queue; {len(place.slots)} of {limit} slots taken"
            self._queue_woken = True
            return Step("waiting-slot", target, detail, Wait(watch=watch))
        if held:
            self._leave_queue()  # wakes the host behind (a new slot left the queue in its transaction)
        self._queued = None
        try:
            self.events(AgentEvent("slot", f"slot {slot.index} for {target}"))
            step = self._swap(settings, target, rollout)
            self._publish(settings, step)  # the result is on record before the slot is free
            return step
        finally:
            semaphore.give_back(slot)

    def _swap(self, settings: Settings, target: str, rollout: Rollout | None) -> Step:
        running = self.host.running()
        self._publish(settings, Step("swapping", target, f"{running or 'nothing'} -> {target}"))
        try:
            swapped = self.host.swap(target)
        except TrustError as exc:  # stored, then revoked: never swapped to
            return self._refused(target, rollout, exc)
        if swapped.result == "rolled-back":
            self.failed.add(target)
            self.host.remember_failed(target)
            if rollout is not None and self.etcd is not None:
                failure = RolloutFailure(host_id=self.host_id, version=target, reason=swapped.detail, at=self.clock())
                update_rollout(self.etcd, self.group,
                               lambda r: add_failure(r, failure, self.clock()) if r.target == target else None)
            self.events(AgentEvent("rolled-back", swapped.detail))
            return Step("rolled-back", target, f"rolled back to {running}: {swapped.detail}", AT_ONCE)
        self.events(AgentEvent("swapped", swapped.detail))
        return Step("healthy", target, swapped.detail, AT_ONCE)

    def _refused(self, target: str, rollout: Rollout | None, exc: TrustError) -> Step:
        """The release keys do not vouch for the target: the host stays as it is, and a rollout
        it follows counts it as a failed host (a revoked version spends the budget and pauses
        the rollout, instead of every host refusing it quietly, tick after tick)."""
        if rollout is not None and self.etcd is not None:
            failure = RolloutFailure(host_id=self.host_id, version=target, reason=exc.message, at=self.clock())
            self._safe(lambda: update_rollout(self.etcd, self.group,  # type: ignore[arg-type]
                                              lambda r: add_failure(r, failure, self.clock())
                                              if r.target == target else None))
        return Step("refused", target, exc.message, AT_ONCE)

    def _leave_queue(self) -> None:
        if self._queued is not None and self.etcd is not None:
            key, self._queued = self._queued[0], None
            FleetQueue(self.etcd, self.group).leave(key)

    def _mark_staging_done(self, step: Step) -> None:
        """While the rollout stages, say once that this host is done with it (staged, or nothing
        to download: already on it, pinned, manual, failed), and end staging if it was the last."""
        rollout = self._seen_rollout
        if (self.etcd is None or rollout is None or rollout.state != "staging" or step.phase == "staging"
                or self.lease is None):
            return
        if self._marked != (rollout.seed, self.lease):
            mark = StagedMark(host_id=self.host_id, version=rollout.target, outcome=step.phase)
            mark_staged(self.etcd, self.group, rollout, mark, self.lease)
            self._marked = (rollout.seed, self.lease)
        if end_staging_if_done(self.etcd, self.group, rollout, self.clock()):
            self.events(AgentEvent("staged", f"every host of group {self.group} has {rollout.target}: swaps start"))

    # ------------------------------------------------------------------ etcd: lease and state

    def _lease(self) -> int:
        """The host's lease; a new one when there is none (the keeper drops one that expired)."""
        assert self.etcd is not None
        if self.lease is None:
            self.lease = self.etcd.grant(self.lease_ttl)
        return self.lease

    def _keep_lease(self) -> None:
        """Refresh the lease every third of its TTL, also while the main thread swaps."""
        keeper = self.keeper_etcd
        assert keeper is not None
        try:
            while not self._stop.wait(self.lease_ttl / 3):
                lease = self.lease
                if lease is None:
                    continue
                try:
                    if not keeper.keepalive(lease):
                        self.events(AgentEvent("lease", "the lease expired; a new one is taken at the next check"))
                        if self.lease == lease:
                            self.lease = None
                            self._nudge.set()
                except OsctlError:
                    pass  # etcd unreachable: the main loop reports it; the lease may still live
        finally:
            keeper.close()

    def _publish(self, settings: Settings, step: Step) -> None:
        """Say a new phase, and publish it; an unchanged one is only written again under a new lease
        (the old one expired with the key) or after a failed write, so a quiet fleet writes nothing."""
        self._say_changed(step)
        if self.etcd is None:
            return
        lease = self._safe(self._lease)
        if (step, lease) == self._published:
            return
        rollout = self._seen_rollout
        state = HostState(
            host_id=self.host_id, phase=step.phase, running=self.host.running(), next_boot=self.host.next_boot(),
            target=step.target, last_result=step.detail, failed_versions=tuple(sorted(self.failed)),
            wave_position=updatepolicy.wave_position(rollout.seed, self.host_id) if rollout else None,
            updated_at=self.clock(),
        )
        if lease is None:
            return
        try:
            publish_host(self.etcd, self.group, state, lease)
        except EtcdLeaseGone:
            self.lease = None  # written again under a new lease at the next check
        except OsctlError:
            pass  # etcd away: the host's own work goes on; written again at the next check
        else:
            self._published = (step, lease)

    def _say_changed(self, step: Step) -> None:
        if (step.phase, step.detail, step.target) != (self.last.phase, self.last.detail, self.last.target):
            self.events(AgentEvent(step.phase, step.detail))
        self.last = step

    @staticmethod
    def _safe(call: Callable[[], object]) -> object:
        """Publishing is best effort: etcd being away must not stop the host's own work."""
        try:
            return call()
        except OsctlError:
            return None

    def _leave(self) -> None:
        """Stop cleanly: free the slot, the place in the queue and the state at once rather than
        after the lease."""
        if self.etcd is None:
            return
        if self.lease is not None:
            self._safe(lambda: self.etcd.revoke(self.lease))  # type: ignore[union-attr,arg-type]
        if self._keeper is not None:
            self._stop.set()
            self._keeper.join(timeout=5)
        self.etcd.close()

    # ------------------------------------------------------------------ this host's memory

    def _recover(self) -> None:
        """Finish what a crash interrupted (a swap cut short), as ``osctl boot`` would."""
        recovered = self.host.recover()
        if recovered:
            self.events(AgentEvent("recovered", recovered))
