"""The update agent: a host that updates itself, alone or as one of a fleet coordinated in etcd.

Every check (``update.check_interval``, with jitter so a fleet does not ask in lockstep) is one
``tick``, which walks the same gates in the same order and stops at the first closed one:

    policy manual -> target (pinned version, else the group's rollout, else the newest release)
    -> already running? -> rolled back here before? (never retried) -> rollout active?
    -> the host's wave open? -> stage (pull; ``download-only`` stops here)
    -> maintenance window open? -> a slot of the group's semaphore -> swap -> give the slot back

The slot is taken last, so a host holds it only while it swaps, and it is given back only after
the host published its result (healthy or rolled back): what etcd records never shows more hosts
"swapping" than slots. A rollback is reported to the rollout, which pauses for everyone once its
failure budget is spent. Each host's state is published under its lease, refreshed by a thread
during long swaps: a host that dies stops being listed, and its slot frees itself.

Without etcd settings the agent runs alone: no slots, no rollout, the same gates otherwise.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from osctl.adapters.etcd import Etcd
from osctl.adapters.statefile import Damage, StateFile
from osctl.adapters.locking import host_lock
from osctl.domain import bootpointer, updatepolicy
from osctl.domain.fleetslots import FleetSemaphore
from osctl.domain.fleetstate import add_failure, publish_host, read_rollout, update_rollout
from osctl.domain.journal import Journal
from osctl.domain.store import Store
from osctl.errors import EtcdUnavailable, OsctlError, TrustError
from osctl.models.events import AgentEvent, Events, ignore
from osctl.models.fleet import AgentMemory, HostPhase, HostState, Rollout, RolloutFailure
from osctl.models.version import OsVersion
from osctl.operations import transaction
from osctl.operations.pull import pull_version

if TYPE_CHECKING:
    from osctl.adapters.engine import Engine
    from osctl.domain.settings import Settings

AGENT_STATE = "var/lib/osctl/agent.json"  # the versions that rolled back on this host
JITTER = 0.1  # +-10 % of the check interval
SLOT_RETRY = 1.0  # seconds between asks for a slot (or a wave, a window) once staged


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Step:
    """Where one tick stopped, and why (one line for humans and for ``fleet status``)."""

    phase: HostPhase
    target: str | None
    detail: str
    retry_soon: bool = False  # a gate that opens by itself (slot, wave, window): ask again soon


class Agent:
    """One host's agent. ``settings`` is re-read at every tick (user data may change it)."""

    def __init__(self, settings: Settings, engine: Engine, *, lease_ttl: int = 10, events: Events = ignore,
                 rng: random.Random | None = None, clock: Callable[[], datetime] = _utcnow,
                 on_tick: Callable[[Step, Rollout | None], None] | None = None) -> None:
        self.base, self.engine, self.lease_ttl = settings, engine, lease_ttl
        self.events = events
        # Called after every check with where it stopped and the rollout it saw (metrics, tests).
        self.on_tick = on_tick or (lambda _step, _rollout: None)
        self.rng, self.clock = rng or random.Random(), clock
        self.host_id = settings.host_id
        # One attempt per call: the loop itself asks again soon, and must not sit for a minute in
        # retries while etcd has no quorum.
        self.etcd: Etcd | None = Etcd(settings.etcd_endpoints, timeout=2.0, attempts=1, deadline=5.0) \
            if settings.etcd_endpoints else None
        self.group = settings.group
        self.lease: int | None = None
        self._published: tuple[Step, object] | None = None  # the state last written, and its lease
        self._seen_rollout: Rollout | None = None  # as last read: for the wave position it publishes
        self.failed = self._load_failed()
        self.last = Step("idle", None, "starting")
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Recover what a crash left, then tick until ``stop`` is set."""
        self._stop = stop
        self._recover()
        if self.etcd is not None:
            self._keeper = threading.Thread(target=self._keep_lease, name="lease", daemon=True)
            self._keeper.start()
        try:
            while not stop.is_set():
                step = self.tick()
                if once:
                    return
                settings = dataclasses.replace(self.base)
                interval = settings.file.update.check_interval
                wait = SLOT_RETRY if step.retry_soon else updatepolicy.next_check(interval, JITTER, self.rng)
                stop.wait(min(wait, interval) if step.retry_soon else wait)
        finally:
            self._leave()

    def tick(self) -> Step:
        """Walk the gates once; publish where the host stopped."""
        settings = dataclasses.replace(self.base)  # a fresh read of the settings file
        try:
            step = self._gates(settings)
        except EtcdUnavailable as exc:
            step = Step("waiting-slot", self.last.target, f"etcd unavailable, waiting: {exc.message}", retry_soon=True)
            self._say_changed(step)  # nothing to publish to
            self.on_tick(step, self._seen_rollout)
            return step
        except OsctlError as exc:
            step = Step("failed", self.last.target, exc.message)
        self._publish(settings, step)
        self.on_tick(step, self._seen_rollout)
        return step

    # ------------------------------------------------------------------ the gates

    def _gates(self, settings: Settings) -> Step:
        policy = settings.file.update
        if policy.policy == "manual":
            return Step("idle", None, "update policy is manual")
        running = transaction.current_version(settings)
        rollout = self._rollout()
        target, source = self._target(settings, rollout)
        if target is None:
            return Step("idle", None, source)
        if target == running:
            return Step("idle", target, f"runs {target} ({source})")
        if target in self.failed:
            return Step("rolled-back", target, f"{target} failed on this host before (it rolled back, or a boot gave up on its trial); "
                                                  "it is not tried again")
        following = rollout if source == "rollout" else None  # a pinned host ignores the rollout's target
        if following is not None:
            if following.state != "active":
                return Step("idle", target, f"rollout {following.state}"
                            + (f": {following.reason}" if following.reason else ""))
            position = updatepolicy.wave_position(following.seed, self.host_id)
            if not updatepolicy.wave_open(following.waves, following.started_at, self.clock(), position):
                opens = updatepolicy.wave_opens_at(following.waves, following.started_at, position)
                return Step("waiting-wave", target, f"this host's wave opens at {opens:%Y-%m-%d %H:%M}Z",
                            retry_soon=True)
        if Store(settings.root).get(target) is None:
            self._publish(settings, Step("staging", target, f"pulling {target}"))
            try:
                pull_version(settings, self.engine, target)
            except TrustError as exc:
                return self._refused(target, following, exc)
            self.events(AgentEvent("staged", target))
        if policy.policy == "download-only":
            return Step("staged", target, f"{target} is stored; policy download-only never swaps")
        if not updatepolicy.window_open(policy.window, self.clock()):
            opens = updatepolicy.next_window_start(policy.window, self.clock())
            return Step("waiting-window", target, f"maintenance window opens at {opens:%Y-%m-%d %H:%M}Z",
                        retry_soon=True)
        return self._swap_in_slot(settings, target, following, rollout.max_concurrent if rollout else 1)

    def _target(self, settings: Settings, rollout: Rollout | None) -> tuple[str | None, str]:
        """What the host converges to, and where that came from."""
        if settings.file.version:
            return settings.file.version, "pinned in the settings"
        if self.etcd is not None:
            if rollout is None:
                return None, f"no rollout for group {self.group}"
            return rollout.target, "rollout"
        return transaction.newest_release(settings, None), "newest release"

    def _rollout(self) -> Rollout | None:
        if self.etcd is None:
            return None
        found = read_rollout(self.etcd, self.group)
        self._seen_rollout = found[0] if found else None
        return self._seen_rollout

    def _swap_in_slot(self, settings: Settings, target: str, rollout: Rollout | None, limit: int) -> Step:
        """Take one of ``limit`` slots, swap, publish the result, give the slot back (in that order).

        ``rollout``: the rollout the host follows (None for a pinned or lone host); it is read
        again once the slot is taken, since it may have been paused meanwhile."""
        if self.etcd is None:
            return self._swap(settings, target, rollout)
        lease = self._lease()
        semaphore = FleetSemaphore(self.etcd, self.group)
        slot = semaphore.acquire(self.host_id, target, lease, limit)
        if slot is None:
            return Step("waiting-slot", target, "every slot of the group is taken", retry_soon=True)
        try:
            now = self._rollout() if rollout is not None else None
            if rollout is not None and (now is None or now.state != "active" or now.target != target):
                return Step("idle", target, "the rollout changed while waiting for a slot")
            if not self.etcd.lease_alive(lease):
                return Step("waiting-slot", target, "this host's lease expired; taking a new one", retry_soon=True)
            self.events(AgentEvent("slot", f"slot {slot.index} for {target}"))
            step = self._swap(settings, target, now)
            self._publish(settings, step)  # the result is on record before the slot is free
            return step
        finally:
            semaphore.release(self.host_id)

    def _swap(self, settings: Settings, target: str, rollout: Rollout | None) -> Step:
        running = transaction.current_version(settings)
        self._publish(settings, Step("swapping", target, f"{running or 'nothing'} -> {target}"))
        kind = "upgrade" if running is None or OsVersion.parse(target) > OsVersion.parse(running) else "downgrade"
        try:
            plan = transaction.decide(settings, kind, target)
        except TrustError as exc:  # stored, then revoked: never swapped to
            return self._refused(target, rollout, exc)
        try:
            outcome = transaction.run(settings, self.engine, plan, health_timeout=settings.file.boot.health_timeout)
        except transaction.TransactionFailed as exc:
            self._remember_failed(target)
            if rollout is not None and self.etcd is not None:
                failure = RolloutFailure(host_id=self.host_id, version=target, reason=exc.message, at=self.clock())
                update_rollout(self.etcd, self.group,
                               lambda r: add_failure(r, failure, self.clock()) if r.target == target else None)
            self.events(AgentEvent("rolled-back", exc.message))
            return Step("rolled-back", target, f"rolled back to {running}: {exc.message}")
        done = f"{running or 'nothing'} -> {target}: {outcome.result} in {outcome.seconds:.1f} s"
        self.events(AgentEvent("swapped", done))
        return Step("healthy", target, done)

    def _refused(self, target: str, rollout: Rollout | None, exc: TrustError) -> Step:
        """The release keys do not vouch for the target: the host stays as it is, and a rollout
        it follows counts it as a failed host (a revoked version spends the budget and pauses
        the rollout, instead of every host refusing it quietly, tick after tick)."""
        if rollout is not None and self.etcd is not None:
            failure = RolloutFailure(host_id=self.host_id, version=target, reason=exc.message, at=self.clock())
            self._safe(lambda: update_rollout(self.etcd, self.group,  # type: ignore[arg-type]
                                              lambda r: add_failure(r, failure, self.clock())
                                              if r.target == target else None))
        return Step("refused", target, exc.message)

    # ------------------------------------------------------------------ etcd: lease and state

    def _lease(self) -> int:
        """The host's lease; a new one when there is none (the keeper drops one that expired)."""
        assert self.etcd is not None
        if self.lease is None:
            self.lease = self.etcd.grant(self.lease_ttl)
        return self.lease

    def _keep_lease(self) -> None:
        """Refresh the lease every third of its TTL, also while the main thread swaps."""
        keeper = Etcd(self.base.etcd_endpoints)  # a client of its own: the main one may be busy
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
        pointer = bootpointer.read(settings.root)
        rollout = self._seen_rollout
        state = HostState(
            host_id=self.host_id, phase=step.phase, running=pointer.default, next_boot=pointer.next_boot,
            target=step.target, last_result=step.detail, failed_versions=tuple(sorted(self.failed)),
            wave_position=updatepolicy.wave_position(rollout.seed, self.host_id) if rollout else None,
            updated_at=self.clock(),
        )
        if lease is not None and self._safe(lambda: publish_host(self.etcd, self.group, state, lease)) is not None:
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
        """Stop cleanly: free the slot and the state at once rather than after the lease."""
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
        with host_lock(self.base.root, "agent: recover"):
            recovered = transaction.recover(self.base, self.engine, self.events)
        if recovered:
            self.events(AgentEvent("recovered", recovered))

    def _memory(self) -> StateFile[AgentMemory]:
        return StateFile(self.base.root / AGENT_STATE, AgentMemory, Damage.RAISE, "the agent's state",
                         hint="delete it: the agent then forgets which versions rolled back here")

    def _load_failed(self) -> set[str]:
        """Versions that rolled back under this agent, and trials a boot gave up on (the loader
        abandoned them, or they were unhealthy): none is tried again by itself."""
        trials = {e.to_version for e in Journal(self.base.root).history().entries
                  if e.kind == "boot" and e.result == "rolled-back" and e.to_version}
        return set(self._memory().load().failed_versions) | trials

    def _remember_failed(self, version: str) -> None:
        self.failed.add(version)
        self._memory().write(AgentMemory(failed_versions=sorted(self.failed)))
