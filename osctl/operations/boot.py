"""``osctl boot``: what runs at start-up, before anything else of osctl.

1. Finish whatever a crash interrupted (``transaction.recover``).
2. Learn what the loader booted (``domain.bootedentry``). A trial is counted by the loader
   itself (systemd-boot's boot counting, docs/boot.md): when the loader booted the trial, it is
   tried; when it booted something else while a trial was pending, the loader gave up on the
   trial (its tries were spent, or someone chose another entry): the trial is recorded as
   abandoned and never tried again by itself. When nothing says what booted (no loader
   variable, no ``osctl.version=`` on the kernel command line), osctl counts the tries itself:
   a try is spent before the attempt, so a boot that dies half-way counts.
3. Bring the version's set up, alone: containers of any other version go. Boot succeeds only if
   the whole set runs once it is up (one-shots completed).
4. A trial that becomes healthy is blessed (its entry loses the counter, as
   ``systemd-bless-boot`` does) and becomes the default (the old default becomes the previous);
   one that does not falls back to the default at once, and the reason is recorded in the
   history.
5. Apply the user data (``osctl cloud-init apply``), which may converge to a pinned version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from osctl.adapters.engine import Engine
from osctl.adapters.locking import host_lock
from osctl.domain import bootedentry, bootloader, bootpointer, servicestate
from osctl.domain.bootedentry import Booted
from osctl.domain.current import make_current
from osctl.domain.journal import Journal, crash_point
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import OsctlError
from osctl.models.events import Events, Step, StepEvent, ignore
from osctl.models.services import ServicesState
from osctl.models.store import BootPointer
from osctl.operations import cloudinit, serviceset
from osctl.operations.services import skipped
from osctl.operations.transaction import DEFAULT_HEALTH_TIMEOUT, converge, recover
from osctl.operations.trust import for_settings


@dataclass
class BootResult:
    version: str | None
    trial: str | None = None
    trial_result: str | None = None  # promoted, fell-back
    reason: str | None = None
    recovered: str | None = None
    user_data: str | None = None  # applied, applied with failures, not applied: why
    loader_entry: str | None = None  # the entry the loader says it booted (LoaderEntrySelected)
    note: str | None = None  # something the operator should know about this boot

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def boot(settings: Settings, engine: Engine, *, health_timeout: float = DEFAULT_HEALTH_TIMEOUT,
         events: Events = ignore) -> BootResult:
    """Boot the host, then apply its user data (which may converge it to a pinned version)."""
    result = _boot(settings, engine, health_timeout, events)
    try:
        report = cloudinit.apply(settings, engine,
                                 converge=lambda version: converge(settings, engine, version, events=events))
    except OsctlError as exc:  # bad user data must not keep a host from booting
        result.user_data = f"not applied: {exc.message}"
    else:
        if report is not None:
            failed = [f"{s.name}: {s.detail}" for s in report.failed]
            result.user_data = "applied" + (f" with failures: {'; '.join(failed)}" if failed else "")
    return result


def _boot(settings: Settings, engine: Engine, health_timeout: float, events: Events) -> BootResult:
    with host_lock(settings.root, "boot"):
        recovered = recover(settings, engine, events)
        Store(settings.root).adopt_legacy()
        pointer = bootpointer.read(settings.root)
        state = servicestate.read_services(settings.root)
        # A boot starts over: operator stops do not outlive it; disabled services stay disabled.
        state = state.model_copy(update={"stopped": []})
        booted = bootedentry.what_booted(settings)
        result = BootResult(version=pointer.default, recovered=recovered,
                            loader_entry=booted.entry if booted else None)

        if pointer.trial and _boot_trial(settings, engine, pointer, booted, state, health_timeout, events, result):
            return result
        pointer = bootpointer.read(settings.root)
        if pointer.default is None:
            make_current(settings, services=state)
            return result
        if booted is not None and booted.version not in (pointer.default, result.trial):
            # The pointer decides what runs; a version chosen at the loader's menu runs only
            # once it is the default again (osctl rollback / downgrade).
            result.note = (f"the loader booted {booted.version} ({booted.source}), not the default "
                           f"{pointer.default}: the services of {pointer.default} run")
            events(StepEvent(Step.FALLBACK, result.note))
        for_settings(settings).warn_if_revoked(pointer.default)
        _bring_alone(settings, engine, pointer.default, state, health_timeout, events)
        return result


def _boot_trial(settings: Settings, engine: Engine, pointer: BootPointer, booted: Booted | None,
                state: ServicesState, health_timeout: float, events: Events, result: BootResult) -> bool:
    """Try the pending trial; True when it was promoted (the boot is done), False when the
    default is to be brought up instead."""
    assert pointer.trial
    trial = result.trial = pointer.trial
    journal = Journal(settings.root)
    # systemd-boot names the entry it booted; a boot known only from the kernel command line
    # came from a loader that may not count tries: osctl counts them then.
    loader_counts = booted is not None and booted.entry is not None
    why = None
    if Store(settings.root).get(trial) is None:
        why = "it is no longer stored"
    elif booted is not None and booted.version != trial:
        why = _given_up_by_loader(settings, trial, booted)
    elif not loader_counts and pointer.trial_tries <= 0:
        why = "its tries are spent"
    if why is not None:
        _drop_trial(settings, pointer)
        said = why if why.startswith("abandoned") else f"abandoned: {why}"
        journal.finish(journal.begin("boot", pointer.default, trial), "rolled-back", f"trial of {trial} {said}")
        result.trial_result, result.reason = "fell-back", why
        return False

    if not loader_counts:  # the try is spent before it is made: a boot that dies half-way counts
        pointer = make_current(settings, pointer=pointer.model_copy(update={"trial_tries": pointer.trial_tries - 1}))
        left = f"{pointer.trial_tries} tries left after this one"
    else:
        found = bootloader.trial_entry(settings.esp, trial)
        left = f"counted by the loader: {found[1].left} tries left" if found else "counted by the loader"
    txn = journal.begin("boot", pointer.default, trial)
    crash_point("boot:trial-started")
    events(StepEvent(Step.TRIAL, f"booting {trial} ({left})"))
    try:
        _trusted_offline(settings, trial)
        _bring_alone(settings, engine, trial, state, health_timeout, events)
    except OsctlError as exc:
        events(StepEvent(Step.FALLBACK, exc.message))
        serviceset.down(engine, settings.host_id, trial, remove=True)
        _drop_trial(settings, pointer)
        journal.finish(txn, "rolled-back", f"trial of {trial} failed: {exc.message}")
        result.trial_result, result.reason = "fell-back", exc.message
        return False
    bootloader.bless(settings.esp, trial)
    promoted = pointer.model_copy(update={"default": trial, "previous": pointer.default, "trial": None, "trial_tries": 0})
    make_current(settings, pointer=promoted, services=state.model_copy(update={"version": trial, "desired": "up"}))
    journal.finish(txn, "committed", f"trial of {trial} became the default")
    result.version, result.trial_result = trial, "promoted"
    return True


def _given_up_by_loader(settings: Settings, trial: str, booted: Booted) -> str:
    """Why the loader booted something else than the pending trial, as its entry shows it."""
    found = bootloader.trial_entry(settings.esp, trial)
    if found is not None and found[1].left == 0:
        return f"abandoned by the loader after {found[1].done} tries (it booted {booted.version})"
    return f"the loader booted {booted.version} instead ({booted.entry or booted.source})"


def _bring_alone(settings: Settings, engine: Engine, version: str, state: ServicesState, health_timeout: float,
                 events: Events) -> None:
    """Bring ``version``'s set up and make it the only one of this host; raise ``ServiceFailed``
    unless the whole set runs when this returns (a service that went down meanwhile included:
    a boot reports success only for a complete set)."""
    for other in sorted({key.version for key in serviceset.observe_host(engine, settings.host_id)} - {version}):
        serviceset.down(engine, settings.host_id, other, remove=True)
    sset = serviceset.load_service_set(settings.host_id, settings.root, version)
    make_current(settings, services=state.model_copy(update={"version": version, "desired": "up"}))
    skip = skipped(state)
    serviceset.up(engine, sset, skip=skip, wait_healthy=True, timeout=health_timeout, events=events)
    serviceset.check_running(engine, sset, skip)


def _trusted_offline(settings: Settings, version: str) -> None:
    """A trial boots only if no revocation the host has seen names it: boot never waits for the
    network, so what the host last trusted decides (``HostTrust.check_known``)."""
    trust = for_settings(settings)
    record = Store(settings.root).get(version)
    if trust.enforced and record is not None:
        trust.check_known(record, trust.known())


def _drop_trial(settings: Settings, pointer: BootPointer) -> BootPointer:
    return make_current(settings, pointer=pointer.model_copy(update={"trial": None, "trial_tries": 0}))
