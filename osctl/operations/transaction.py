"""Upgrade, downgrade and rollback: replace the whole service set and the boot pointer, or nothing.

resolve -> pull -> verify -> stage -> prepare -> swap -> health -> commit -> cleanup, each step
journaled before it starts. Everything that can be done before the first old service stops is
done before it (pull, verify, stage, creating the new containers, starting the new set's
start-first services beside the old ones), so the downtime is the swap itself: the old set
stops, every container at once, while the new one starts in dependency order, each service
the moment its own old container is gone and what it depends on qualifies (osctl's own
probes). Before commit any failure rolls back by itself: the new containers go, the old set
runs again, the boot pointer is untouched.
Commit is the boot pointer's atomic rename; after it, a crash rolls forward.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from osctl.adapters.engine import Engine
from osctl.adapters.locking import check_unlocked, host_lock
from osctl.adapters.registry import Registry
from osctl.domain import bootloader, bootpointer, servicegraph, servicestate
from osctl.domain.current import make_current, prepare_boot
from osctl.domain.imagefacts import ImageFacts
from osctl.domain.journal import Journal, crash_point
from osctl.domain.naming import host_labels
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import OsctlError, ServiceFailed, StateError, TrustError, UsageError
from osctl.models.engine import ContainerSpec, ContainerState
from osctl.models.events import Events, SkipReason, Step, StepEvent, ignore
from osctl.models.journal import Kind, Stop, Transaction
from osctl.models.manifest import ReleaseManifest
from osctl.models.store import BootPointer, StoreRecord
from osctl.models.version import OsVersion
from osctl.operations import serviceset
from osctl.operations.pull import pull_version
from osctl.operations.releases import newest_valid_release
from osctl.operations.services import skipped
from osctl.operations.serviceset import Skip
from osctl.operations.trust import for_settings, signed_hint

DEFAULT_HEALTH_TIMEOUT = 120.0
DEFAULT_TRIES = 3
UNTOUCHED = ("begin", "resolve", "pull", "verify", "stage")  # steps that leave the running set as it is


@dataclass
class Plan:
    kind: Kind
    from_version: str | None
    to_version: str
    stage: bool = False
    stored: bool = False
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    space: dict[str, object] | None = None  # the preflight's figures, when a dry run measured them

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Outcome:
    plan: Plan
    result: str  # committed, staged, rolled-back, nothing-to-do
    reason: str | None = None
    seconds: float = 0.0
    downtime: float | None = None  # first old service stopped -> every new service healthy

    def as_dict(self) -> dict[str, object]:
        return {**self.plan.as_dict(), "result": self.result, "reason": self.reason,
                "seconds": round(self.seconds, 3), "downtime": None if self.downtime is None else round(self.downtime, 3)}


class TransactionFailed(ServiceFailed):
    """The new version did not come up; the host runs the old one again."""

    def __init__(self, failure: ServiceFailed, plan: Plan) -> None:
        super().__init__(failure.service, failure.detail, failure.logs)
        back = f"{plan.from_version} runs again" if plan.from_version else "nothing was installed"
        self.message = f"{plan.to_version} rolled back: {self.message}; {back}"
        self.args = (self.message,)


def current_version(settings: Settings) -> str | None:
    """What this host runs as its committed version: the boot pointer's default."""
    return bootpointer.read(settings.root).default


def decide(settings: Settings, kind: Kind, target: str | None, *, registry: Registry | None = None) -> Plan:
    """Which transaction the command asks for; refuses the wrong direction with the right command."""
    check_unlocked(settings.root)
    current = current_version(settings)
    pointer = bootpointer.read(settings.root)
    if kind == "rollback":
        if not pointer.previous:
            raise UsageError("there is no previous version to roll back to",
                             hint="osctl downgrade --to V switches to any stored version")
        target = pointer.previous
    elif target is None:
        if kind == "downgrade":
            raise UsageError("downgrade needs --to V")
        target = newest_release(settings, registry)
    tag = OsVersion.parse(target).tag
    if current is None:
        if kind == "downgrade":
            raise UsageError("nothing is installed yet, so there is nothing to downgrade",
                             hint=f"osctl upgrade --to {tag} installs it")
        kind = "install"
    elif kind in ("upgrade", "downgrade") and tag != current:
        newer = OsVersion.parse(tag) > OsVersion.parse(current)
        if kind == "upgrade" and not newer:
            raise UsageError(f"{tag} is older than the running {current}", hint=f"osctl downgrade --to {tag}")
        if kind == "downgrade" and newer:
            raise UsageError(f"{tag} is newer than the running {current}", hint=f"osctl upgrade --to {tag}")
    record = Store(settings.root).get(tag)
    _trust_gate(settings, tag, record)
    plan = Plan(kind=kind, from_version=current, to_version=tag, stored=record is not None)
    if plan.stored:
        _compare(settings, plan)
    return plan


def newest_release(settings: Settings, registry: Registry | None) -> str:
    """The newest release that is a valid OS version: an invalid newest tag is passed over.

    With a trusted root, the newest released version the release keys sign and do not revoke:
    the registry's tags do not choose then. With ``--from``, the newest release in the bundle.
    """
    trust = for_settings(settings)
    if settings.bundle is not None:
        from osctl.operations.bundle import newest_in_bundle

        return newest_in_bundle(settings)
    if trust.enforced:
        released = [v for v in trust.index().installable() if not OsVersion.parse(v).is_prerelease]
        if not released:
            raise TrustError("the release keys sign no released version that may be installed",
                             hint="osctl list-versions shows what is signed and what is revoked")
        return released[0]
    return newest_valid_release(registry or Registry(settings.require_image()), ImageFacts(settings.root))


def _trust_gate(settings: Settings, tag: str, record: StoreRecord | None) -> None:
    """Refuse, before anything is journaled, a target the release keys do not vouch for.

    A stored target follows the offline rule (``HostTrust.check_stored``); new content needs
    fresh metadata that signs it. The pull checks again, with the manifest itself.
    """
    trust = for_settings(settings)
    if not trust.enforced:
        return  # the pull says that what it stores is not verified
    if record is not None:
        trust.check_stored(record)
    elif (refusal := (index := trust.index()).refusal(tag)) is not None:
        raise TrustError(f"{tag} is {refusal}; refused", hint=signed_hint(index, tag))


def _compare(settings: Settings, plan: Plan) -> None:
    """Which services the swap adds, removes, changes or leaves as they are.

    Names and labels always differ between versions; a service is "changed" when anything
    else does (its image included: a new OS image is a new service).
    """
    new = serviceset.load_service_set(settings.host_id, settings.root, plan.to_version).specs
    old: dict[str, ContainerSpec] = {}
    if plan.from_version and Store(settings.root).get(plan.from_version):
        old = serviceset.load_service_set(settings.host_id, settings.root, plan.from_version).specs
    same = {n for n in set(new) & set(old)
            if replace(new[n], name="", labels={}) == replace(old[n], name="", labels={})}
    plan.added = sorted(set(new) - set(old))
    plan.removed = sorted(set(old) - set(new))
    plan.changed = sorted(set(new) & set(old) - same)
    plan.unchanged = sorted(same)


def run(settings: Settings, engine: Engine, plan: Plan, *, health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
        force: bool = False, tries: int = DEFAULT_TRIES, events: Events = ignore) -> Outcome:
    """Carry the plan out under the host lock; on failure before commit, roll back and raise."""
    started = time.monotonic()
    with host_lock(settings.root, f"{plan.kind} {plan.to_version}"):
        recovered = recover(settings, engine, events)
        if recovered:
            events(StepEvent(Step.RECOVER, recovered))
        if (now := current_version(settings)) != plan.from_version:
            raise StateError(f"this host changed while the command was planned: it runs {now or 'nothing'} now, "
                             f"not {plan.from_version}", hint="run the command again")
        if plan.to_version == now and not plan.stage:
            return Outcome(plan, "nothing-to-do", f"{plan.to_version} is already running", time.monotonic() - started)
        journal = Journal(settings.root)
        volumes_before = _volume_names(engine, settings.host_id)
        txn = journal.begin("stage" if plan.stage else plan.kind, plan.from_version, plan.to_version)
        try:
            return _run(settings, engine, plan, journal, txn, health_timeout, force, tries, events, started)
        except (OsctlError, KeyboardInterrupt) as exc:
            txn = journal.current() or txn
            reason = exc.message if isinstance(exc, OsctlError) else "interrupted"
            if txn.step in ("commit", "cleanup") and bootpointer.read(settings.root).default == plan.to_version:
                raise  # committed: the next command rolls forward (recover)
            if txn.step in UNTOUCHED:  # nothing of the running set was touched: nothing to undo
                journal.finish(txn, "aborted", reason)
                raise
            events(StepEvent(Step.ROLLBACK, reason))
            ran = _ran(engine, settings.host_id, plan.to_version)  # asked before the attempt's containers go
            _roll_back(settings, engine, txn, events)
            if ran is not None:
                _drop_new_volumes(settings, engine, plan.to_version, volumes_before, ran)
            journal.finish(txn, "rolled-back", reason)
            if isinstance(exc, KeyboardInterrupt):
                raise
            if isinstance(exc, ServiceFailed):
                raise TransactionFailed(exc, plan) from exc
            raise


def _run(settings: Settings, engine: Engine, plan: Plan, journal: Journal, txn: Transaction,
         health_timeout: float, force: bool, tries: int, events: Events, started: float) -> Outcome:
    txn = journal.step(txn, "resolve")
    txn = journal.step(txn, "pull")
    events(StepEvent(Step.PULL, plan.to_version))
    record = pull_version(settings, engine, plan.to_version, locked=True, bootable=True).record
    txn = journal.step(txn, "verify")
    new = serviceset.load_service_set(settings.host_id, settings.root, plan.to_version)
    minimum = new.manifest.min_upgrade_from
    if (minimum and plan.from_version and plan.kind == "upgrade" and not force
            and OsVersion.parse(plan.from_version) < OsVersion.parse(minimum)):
        raise UsageError(f"{plan.to_version} can only be installed over {minimum} or newer, "
                         f"and this host runs {plan.from_version}", hint="upgrade in steps, or pass --force")
    if not plan.stored:
        plan.stored = True
        _compare(settings, plan)
    txn = journal.step(txn, "stage")
    if plan.stage:
        pointer = bootpointer.read(settings.root)
        staged = pointer.model_copy(update={"trial": plan.to_version, "trial_tries": tries})
        prepare_boot(settings, staged)  # a full ESP refuses here, before anything changed
        bootloader.forget_trial(settings.esp, plan.to_version)  # a new trial counts from its first try
        txn = journal.step(txn, "commit")
        make_current(settings, pointer=staged)
        journal.finish(txn, "committed", f"staged: the next boot tries {plan.to_version} ({tries} tries)")
        return Outcome(plan, "staged", None, time.monotonic() - started)
    assert record.version == plan.to_version

    prepare_boot(settings, BootPointer(default=plan.to_version, previous=plan.from_version))
    state = servicestate.read_services(settings.root)
    # A swap starts the new set over: the operator's stops end with the old set, disabled stays.
    skip = {n: why for n, why in skipped(state).items() if why is SkipReason.DISABLED}
    txn = journal.step(txn, "prepare")
    prepare(engine, new, skip)
    old_manifest = serviceset.stored_manifest(settings.host_id, settings.root, plan.from_version)

    txn = journal.step(txn, "swap")
    old_set: dict[str, ContainerState] = {}
    if plan.from_version:
        _hand_over(engine, new, skip, health_timeout, events)
        old_set = serviceset.observe(engine, settings.host_id, plan.from_version)
    swap_started = time.monotonic()
    events(StepEvent(Step.SWAP, f"stopping {plan.from_version or 'nothing'}, starting {plan.to_version}"))
    txn = _swap_sets(settings, engine, journal, txn, old_manifest, old_set, new, skip, health_timeout, events)
    txn = journal.step(txn, "health")
    serviceset.check_running(engine, new, skip)
    downtime = time.monotonic() - swap_started

    txn = journal.step(txn, "commit")
    make_current(settings, pointer=BootPointer(default=plan.to_version, previous=plan.from_version),
                 services=state.model_copy(update={"version": plan.to_version, "desired": "up", "stopped": []}))
    txn = journal.step(txn, "cleanup")
    if plan.from_version:
        serviceset.down(engine, settings.host_id, plan.from_version, remove=True)
    journal.finish(txn, "committed")
    return Outcome(plan, "committed", None, time.monotonic() - started, downtime)


def _volume_names(engine: Engine, host_id: str) -> set[str]:
    return {volume.name for volume in engine.volumes(host_labels(host_id))}


def _ran(engine: Engine, host_id: str, version: str) -> set[str] | None:
    """The services of ``version`` whose container ever started; None when the engine cannot say."""
    try:
        observed = serviceset.observe(engine, host_id, version)
    except OsctlError:
        return None
    return {name for name, state in observed.items() if state.started is not None}


def _drop_new_volumes(settings: Settings, engine: Engine, version: str, before: set[str], ran: set[str]) -> None:
    """After a failed attempt, remove the named volumes it created that no service of it ran
    with: nothing can be in them but what the image brought. A volume that existed before the
    attempt, or one that a service of it ran with (it may hold data), always stays."""
    try:
        specs = serviceset.load_service_set(settings.host_id, settings.root, version).specs
    except OsctlError:
        return  # not knowing who used what, keep everything
    used = {m.source for name in ran if name in specs for m in specs[name].mounts if m.volume}
    for name in sorted(_volume_names(engine, settings.host_id) - before - used):
        with contextlib.suppress(OsctlError):  # e.g. in use by the set that runs again: it stays
            engine.remove_volume(name, host_id=settings.host_id)


def _hand_over(engine: Engine, new: serviceset.ServiceSet, skip: Skip, health_timeout: float,
               events: Events) -> None:
    """Start the new set's start-first services, and wait for their health (osctl's probe, then
    the engine's own status, which can lag by an interval), while the old set still runs: when
    the old set stops, each of them already has its replacement serving and reported healthy,
    so its downtime is nothing. They depend only on one another (``servicegraph.check``). A
    failure here rolls back like any other, with the old set never stopped."""
    first = servicegraph.start_first(new.manifest.services)
    if not first:
        return
    events(StepEvent(Step.SWAP, f"starting {', '.join(first)} of {new.version} beside the running set (start-first)"))
    started = time.monotonic()
    serviceset.up(engine, new, skip=skip, wait_healthy=True, timeout=health_timeout, events=events, only=first)
    serviceset.wait_engine_healthy(engine, new, [name for name in first if name not in skip],
                                   max(1.0, health_timeout - (time.monotonic() - started)))
    crash_point("swap:handover")


def _swap_sets(settings: Settings, engine: Engine, journal: Journal, txn: Transaction,
               old_manifest: ReleaseManifest | None, old_set: dict[str, ContainerState],
               new: serviceset.ServiceSet, skip: Skip, health_timeout: float, events: Events) -> Transaction:
    """Stop the old set and start the new one, overlapped: a thread stops every old service at
    once while the new set starts in dependency order, each new service as soon as its own old
    container has stopped (stop-first, per service) and what it depends on qualifies. A new
    service whose old one stopped quickly does not wait for the slowest old stop; the old and
    the new container of one service never run at the same time (start-first ones excepted).

    The stops always run to their end before this returns or raises (also on Ctrl-C), so a
    rollback never finds an old service still on its way down."""
    gates = {name: threading.Event() for name in old_set}
    outcome: dict[str, Transaction | BaseException] = {}

    def stop() -> None:
        try:
            outcome["txn"] = _stop_old_set(settings, engine, journal, txn, old_manifest, old_set, gates)
            crash_point("swap:old-stopped")
        except BaseException as exc:  # handed to the calling thread
            outcome["error"] = exc
        finally:
            for gate in gates.values():
                gate.set()

    stopper = threading.Thread(target=stop, name="swap-stop", daemon=True)
    stopper.start()
    signalled: BaseException | None = None  # Ctrl-C or SIGTERM while the stops are still under way
    try:
        serviceset.up(engine, new, skip=skip, wait_healthy=True, timeout=health_timeout, events=events, after=gates)
    finally:
        while stopper.is_alive():
            try:
                stopper.join()
            except BaseException as exc:  # noqa: BLE001 - raised once the stops are over
                signalled = signalled or exc
    if signalled is not None:
        raise signalled
    if isinstance(error := outcome.get("error"), BaseException):
        raise error
    done = outcome.get("txn", txn)
    assert isinstance(done, Transaction)
    return done


def _stop_old_set(settings: Settings, engine: Engine, journal: Journal, txn: Transaction,
                  manifest: ReleaseManifest | None, old_set: dict[str, ContainerState],
                  gates: dict[str, threading.Event]) -> Transaction:
    """Stop the running set for the swap (all at once: ``serviceset.down``), journaling each
    batch of stops before it is issued, and opening each service's gate when its stop is over."""
    if not old_set:
        return txn
    journaled = txn

    def record(stops: list[Stop]) -> None:
        nonlocal journaled
        journaled = journal.stopping(journaled, stops)

    def stopped(event: object) -> None:
        crash_point("swap:stopping")  # the first stop is done; others may still be under way

    assert txn.from_version is not None
    serviceset.down(engine, settings.host_id, txn.from_version, manifest=manifest, remove=False,
                    before_stops=record, events=stopped, observed=old_set, stopped=lambda name: gates[name].set())
    return journal.stopping(journaled, []) if journaled.stopping else journaled


def prepare(engine: Engine, sset: serviceset.ServiceSet, skip: Skip) -> None:
    """Create the new set's containers (not started), so the swap itself only starts them.

    Each service's container is made by a thread of its own: creates are independent, and
    one after the other they would cost a tenth of a second per service before the swap.
    """
    observed = serviceset.observe(engine, sset.host_id, sset.version)

    def make(name: str) -> None:
        current = observed.get(name)
        if current is not None:  # from an earlier, failed attempt: start clean
            engine.stop_and_remove(current.id, current.stop_timeout, host_id=sset.host_id)
        if name not in skip:
            # One that cannot be created (a bind leading outside the root) is left to ``up``,
            # which fails that service, by name, with the reason.
            with contextlib.suppress(UsageError):
                serviceset.create_container(engine, sset, name)

    with ThreadPoolExecutor(max_workers=max(1, len(sset.specs)), thread_name_prefix="prepare") as pool:
        list(pool.map(make, sset.specs))


def _roll_back(settings: Settings, engine: Engine, txn: Transaction, events: Events) -> None:
    """Undo an uncommitted transaction: its new containers go, the old set runs again."""
    try:  # the new set's own stop order, when its manifest can still be read
        manifest = serviceset.stored_manifest(settings.host_id, settings.root, txn.to_version)
    except OsctlError:
        manifest = None
    serviceset.down(engine, settings.host_id, txn.to_version, manifest=manifest, remove=True)
    if txn.from_version and txn.kind != "stage":
        old = serviceset.load_service_set(settings.host_id, settings.root, txn.from_version)
        state = servicestate.read_services(settings.root)
        _up_as_far_as_it_goes(engine, old, skipped(state), events)


def _up_as_far_as_it_goes(engine: Engine, sset: serviceset.ServiceSet, skip: Skip, events: Events) -> None:
    """Bring a set back up after a rollback or a crash: a service of it that cannot start (its
    outcome event says why; a bind that now leads outside the root, say) must not keep the
    transaction open, or every later command would fail in its recovery, and the host could
    never be swapped away from that version."""
    with contextlib.suppress(serviceset.ServicesFailed):
        serviceset.up(engine, sset, skip=skip, wait_healthy=False, events=events)


def recover(settings: Settings, engine: Engine, events: Events = ignore) -> str | None:
    """Finish what a crash interrupted, so exactly one version's set runs; None if nothing was.

    The boot pointer decides: if it already names the new version, the transaction had
    committed and is rolled forward; otherwise it is rolled back. Must be called under the
    host lock.
    """
    journal = Journal(settings.root)
    txn = journal.current()
    if txn is None:
        return None
    serviceset.finish_stops(engine, txn.stopping)  # the engine may still be stopping what the dead process stopped
    pointer = bootpointer.read(settings.root)
    if txn.kind == "stage":
        done = pointer.trial == txn.to_version
        journal.finish(txn, "committed" if done else "rolled-back",
                       None if done else f"interrupted at {txn.step}", recovered=True)
        return f"finished the interrupted staging of {txn.to_version}" if done else \
            f"dropped the interrupted staging of {txn.to_version}"
    if pointer.default == txn.to_version:
        if txn.from_version:
            serviceset.down(engine, settings.host_id, txn.from_version, remove=True)
        new = serviceset.load_service_set(settings.host_id, settings.root, txn.to_version)
        state = servicestate.read_services(settings.root)
        make_current(settings, services=state.model_copy(update={"version": txn.to_version, "desired": "up"}))
        _up_as_far_as_it_goes(engine, new, skipped(state), events)
        journal.finish(txn, "committed", f"completed after an interruption at {txn.step}", recovered=True)
        return f"completed the interrupted {txn.kind} to {txn.to_version} (it had committed)"
    _roll_back(settings, engine, txn, events)
    state = servicestate.read_services(settings.root)
    make_current(settings, services=state.model_copy(
        update={"version": txn.from_version, "desired": "up" if txn.from_version else "down"}))
    journal.finish(txn, "rolled-back", f"interrupted at {txn.step}", recovered=True)
    return f"rolled back the interrupted {txn.kind} to {txn.to_version} (cut short at {txn.step})"


def converge(settings: Settings, engine: Engine, version: str, *, events: Events = ignore) -> str:
    """Bring the host to ``version`` (the pinned version of its user data), whichever way that is."""
    current = current_version(settings)
    if current == version:
        return f"{version} already runs"
    kind: Kind = "upgrade" if current is None or OsVersion.parse(version) > OsVersion.parse(current) else "downgrade"
    outcome = run(settings, engine, decide(settings, kind, version), events=events)
    return f"{outcome.plan.kind} to {version}: {outcome.result}"
