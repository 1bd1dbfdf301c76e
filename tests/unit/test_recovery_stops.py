"""Recovery after a process that died inside the stop phase of a swap, with the fake engine.

The engine carries out a stop after its caller died: the service got SIGTERM and is on its way
down, still "running" for a while. The swap journals every batch of stops before it issues
them; recovery sees those stops through before it decides what to start, and ``boot`` reports
success only for a complete set (issue #19, item 7).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from osctl.constants import LABEL_SERVICE, LABEL_VERSION
from osctl.domain.journal import Journal
from osctl.domain.settings import Settings
from osctl.errors import ExitCode, ServiceFailed
from osctl.models.journal import Stop, Transaction
from osctl.operations import transaction
from osctl.operations.boot import boot
from tests.support.fake_engine import FakeEngine, store_version

# app depends on worker: a swap starts worker first, and stops both at once (unless worker asks
# to outlive its dependents: ``{worker_stop}``).
MANIFEST = """\
version: {version}
services:
  setup: {{command: [/bin/setup], oneshot: true}}
  worker:
    command: [/bin/worker, "{version}"]
    depends_on: {{setup: {{condition: service_completed_successfully}}}}
    stop_after_dependents: {worker_stop}
  app: {{command: [/bin/app], depends_on: [worker]}}
boot: {{kernel: /boot/vmlinuz}}
"""


class Killed(BaseException):
    """osctl dies here, as by SIGKILL: nothing of it runs after this (no rollback, no finish)."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root_option=str(tmp_path), host_id_option="unit-recovery", env={})


@pytest.fixture
def engine(settings: Settings) -> FakeEngine:
    return engine_for(settings, worker_stop=False)


def engine_for(settings: Settings, *, worker_stop: bool) -> FakeEngine:
    engine = FakeEngine()
    engine.exits_when_started("setup")
    for version in ("v1.0", "v2.0"):
        text = MANIFEST.format(version=version, worker_stop="true" if worker_stop else "false")
        engine.holds_images_of(store_version(settings.root, text))
    return engine


def install(settings: Settings, engine: FakeEngine, version: str) -> None:
    transaction.run(settings, engine, transaction.decide(settings, "upgrade", version))  # type: ignore[arg-type]


def service_of(engine: FakeEngine, container_id: str) -> tuple[str, str]:
    labels = engine.by_id[container_id].spec.labels
    return labels[LABEL_SERVICE], labels[LABEL_VERSION]


def running(engine: FakeEngine) -> set[tuple[str, str]]:
    return {service_of(engine, c.id) for c in engine.by_id.values() if c.status == "running"}


def journal_seen_at_each_stop(settings: Settings, engine: FakeEngine) -> list[tuple[str, list[str]]]:
    """(service whose stop is issued, services the journal said were stopping then), for a swap;
    fails the test if a stop is issued before the journal holds it."""
    journal = Journal(settings.root)
    seen: list[tuple[str, list[str]]] = []

    def check(container_id: str) -> None:
        state = engine.inspect(container_id)
        txn = journal.current()
        if state is not None and state.running and txn is not None:
            seen.append((service_of(engine, container_id)[0], sorted(s.service for s in txn.stopping)))
            assert container_id in {s.container for s in txn.stopping}, "a stop issued before it was journaled"

    engine.before_stop = check
    return seen


def test_a_swap_journals_every_stop_and_then_issues_them_all_at_once(settings: Settings, engine: FakeEngine) -> None:
    install(settings, engine, "v1.0")
    seen = journal_seen_at_each_stop(settings, engine)
    install(settings, engine, "v2.0")
    assert sorted(seen) == [("app", ["app", "worker"]), ("worker", ["app", "worker"])], "one record, both stops"
    last = Journal(settings.root).file.read()
    assert last is not None and last.result == "committed" and last.stopping == []
    assert running(engine) == {("worker", "v2.0"), ("app", "v2.0")}


def test_a_service_that_outlives_its_dependents_is_journaled_and_stopped_after_them(settings: Settings) -> None:
    engine = engine_for(settings, worker_stop=True)
    install(settings, engine, "v1.0")
    seen = journal_seen_at_each_stop(settings, engine)
    install(settings, engine, "v2.0")
    assert seen == [("app", ["app"]), ("worker", ["worker"])], "app's stop first, worker's once app is down"
    assert running(engine) == {("worker", "v2.0"), ("app", "v2.0")}


def die_inside_the_stop_of(engine: FakeEngine, service: str) -> None:
    """The next stop of ``service``'s running container is issued, and osctl dies while the
    engine is still carrying it out."""

    def stop(container_id: str) -> None:
        state = engine.inspect(container_id)
        if state is not None and state.running and service_of(engine, container_id)[0] == service:
            engine.stop_in_flight(container_id)
            raise Killed

    engine.before_stop = stop


def test_boot_after_a_death_inside_a_slow_stop_brings_the_whole_set_back(settings: Settings,
                                                                         engine: FakeEngine) -> None:
    install(settings, engine, "v1.0")
    die_inside_the_stop_of(engine, "worker")
    with pytest.raises(Killed):
        install(settings, engine, "v2.0")
    engine.before_stop = lambda container_id: None
    txn = Journal(settings.root).current()
    assert txn is not None and sorted(s.service for s in txn.stopping) == ["app", "worker"]
    assert ("worker", "v1.0") in running(engine), "the engine still shows worker running: its stop is in flight"

    result = boot(settings, engine)  # type: ignore[arg-type]
    engine.finish_stops_in_flight()  # whatever the engine was still doing for the dead process is over

    assert result.version == "v1.0" and result.recovered and "rolled back" in result.recovered
    assert running(engine) == {("worker", "v1.0"), ("app", "v1.0")}, "boot said v1.0 booted: all of it runs"
    assert Journal(settings.root).current() is None


def test_recovery_stops_what_the_journal_says_was_stopping_when_the_stop_is_no_longer_carried_out(
        settings: Settings, engine: FakeEngine) -> None:
    """A stop journaled but never issued (or abandoned): the container runs on, and recovery
    stops it itself before it decides, so what it then starts is a fresh run."""
    install(settings, engine, "v1.0")
    worker = engine.id_of("worker")
    journal = Journal(settings.root)
    txn = journal.step(journal.begin("upgrade", "v1.0", "v2.0"), "swap")
    journal.stopping(txn, [Stop(container=worker, service="worker", timeout=10.0)])
    engine.started.clear()

    transaction.recover(settings, engine)  # type: ignore[arg-type]

    assert engine.by_id[worker].status == "running" and engine.started == ["worker"], "stopped, then started anew"


def test_boot_fails_when_a_service_is_down_once_the_set_is_up(settings: Settings, engine: FakeEngine) -> None:
    install(settings, engine, "v1.0")
    engine.exits_when_started("app", 0)  # app exits as soon as it starts: the set is not complete
    engine.stop(engine.id_of("app"))
    with pytest.raises(ServiceFailed) as caught:
        boot(settings, engine)  # type: ignore[arg-type]
    assert caught.value.exit_code == ExitCode.FAILURE
    assert caught.value.message.startswith("service app failed: is not running"), caught.value.message


def test_a_journal_written_before_stops_were_recorded_still_reads() -> None:
    txn = Transaction.model_validate_json('{"id": "a", "kind": "upgrade", "from_version": "v1.0", '
                                          '"to_version": "v2.0", "step": "swap", "started_at": "x", "pid": 1}')
    assert txn.stopping == []
