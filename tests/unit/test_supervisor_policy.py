"""The supervisor's restart policy, branch by branch, against a fake engine.

A container's death reaches the supervisor as the engine's "die" event; what a user sees of
the decision is the service's record in ``osctl status`` (restarts, failures, failed) and
whether its container runs again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from osctl.domain import servicestate
from osctl.domain.settings import Settings
from osctl.models.services import ServiceRecord, ServicesState
from osctl.operations.supervisor import Policy, Supervisor
from tests.support.fake_engine import CHAIN_RELEASE as MANIFEST
from tests.support.fake_engine import FakeEngine, store_version

MAX_FAILURES = 3


def supervisor(root: Path, **policy: float) -> tuple[Supervisor, FakeEngine]:
    store_version(root, MANIFEST)
    servicestate.write_services(root, ServicesState(version="v1.0", desired="up"))
    fake = FakeEngine()
    fake.exits_when_started("network", 0)
    settings = Settings(root_option=str(root), host_id_option="unit-supervise", env={})
    limits = {"stable_after": 60.0, "max_failures": MAX_FAILURES, "backoff_min": 0.02, "backoff_max": 0.05,
              **policy}
    return Supervisor(settings, policy=Policy(**limits), engine_factory=lambda: fake), fake  # type: ignore[arg-type]


def brought_up(root: Path, **policy: float) -> tuple[Supervisor, FakeEngine]:
    """A supervisor whose first reconcile brought the set up."""
    sup, fake = supervisor(root, **policy)
    sup.reconcile(fake, fresh=True)  # type: ignore[arg-type]
    assert {s: fake.status_of(s) for s in ("network", "syslog", "ntp", "console")} == {
        "network": "exited", "syslog": "running", "ntp": "running", "console": "running"}
    return sup, fake


@pytest.fixture
def up(tmp_path: Path) -> tuple[Supervisor, FakeEngine]:
    return brought_up(tmp_path)


def dies(sup: Supervisor, fake: FakeEngine, service: str, code: int) -> None:
    """The service's container exits with ``code`` and the supervisor gets the engine's event."""
    sup._on_event(fake, fake.exit(fake.id_of(service), code))  # type: ignore[arg-type]


def record(sup: Supervisor, service: str) -> ServiceRecord:
    return sup.status.services.get(service, ServiceRecord())


def scheduled(sup: Supervisor) -> dict[str, float]:
    """Service -> seconds until its restart is due."""
    now = time.monotonic()
    return {name: when - now for name, when in sup._due.items()}


def restarts_now(sup: Supervisor, fake: FakeEngine) -> None:
    sup._restart_due(fake)  # type: ignore[arg-type]


def restarts_when_due(sup: Supervisor, fake: FakeEngine) -> None:
    time.sleep(max([0.0, *scheduled(sup).values()]))
    restarts_now(sup, fake)


def test_reconcile_starts_the_missing_services_in_dependency_order(tmp_path: Path) -> None:
    sup, fake = supervisor(tmp_path)
    fake.start_delay["network"] = 0.2  # slow: whoever does not wait for it starts first
    sup.reconcile(fake)  # type: ignore[arg-type]
    order = fake.started
    assert sorted(order) == ["console", "network", "ntp", "syslog"]
    assert order.index("network") < order.index("syslog") < min(order.index("ntp"), order.index("console"))
    assert fake.status_of("syslog") == fake.status_of("ntp") == fake.status_of("console") == "running"
    assert sup.status.version == "v1.0"


def test_reconcile_recreates_a_container_removed_behind_its_back(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    fake.remove_container(fake.id_of("ntp"))
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("ntp") == "running"
    assert fake.started.count("network") == 1, "a one-shot that completed is not run again"


def test_restart_no_marks_a_crash_failed_and_never_restarts_it(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    dies(sup, fake, "console", 1)
    rec = record(sup, "console")
    assert rec.failed and rec.consecutive_failures == 1 and rec.restarts == 0
    assert rec.last_failure == "exited with code 1 (restart: no)"
    assert "console" not in scheduled(sup)
    restarts_now(sup, fake)
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("console") == "exited"
    assert record(sup, "console").consecutive_failures == 1, "a failed service is not counted again"


def test_on_failure_leaves_a_clean_exit_alone(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    dies(sup, fake, "ntp", 0)
    assert record(sup, "ntp") == ServiceRecord() and scheduled(sup) == {}
    restarts_now(sup, fake)
    assert fake.status_of("ntp") == "exited"


def test_on_failure_leaves_a_clean_exit_alone_at_the_next_reconcile_too(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    dies(sup, fake, "ntp", 0)
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("ntp") == "exited"


def test_after_the_engine_comes_back_a_clean_exit_is_started_again(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    fake.exit(fake.id_of("ntp"), 0)  # the engine stopped with it: SIGTERM, and ntpd exits 0
    sup.reconcile(fake, fresh=True)  # type: ignore[arg-type]
    assert fake.status_of("ntp") == "running"
    assert fake.started.count("network") == 1, "a one-shot that completed is still not run again"


def test_a_clean_exit_as_the_engine_stops_is_started_once_its_dependency_is_back(
        up: tuple[Supervisor, FakeEngine]) -> None:
    """dockerd stops: ntp (on-failure) exits 0 on its SIGTERM, syslog 143; both die events arrive
    while the supervisor still watches. Once the engine is back, the first pass cannot start ntp
    (syslog waits for its restart), so a later pass must: ntp's exit 0 was the engine's doing."""
    sup, fake = up
    dies(sup, fake, "ntp", 0)
    dies(sup, fake, "syslog", 143)
    time.sleep(0.002)  # the engine's own clock moves on before it answers again
    sup.reconcile(fake, fresh=True)  # type: ignore[arg-type]
    restarts_when_due(sup, fake)
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("syslog") == "running" and fake.status_of("ntp") == "running"
    assert record(sup, "ntp").consecutive_failures == 0, "not counted as a failure"


def test_restart_no_takes_a_clean_exit_as_done_not_failed(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    dies(sup, fake, "console", 0)
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert record(sup, "console") == ServiceRecord() and fake.status_of("console") == "exited"


def test_on_failure_restarts_a_crash_at_once_then_with_backoff(tmp_path: Path) -> None:
    sup, fake = brought_up(tmp_path, backoff_min=0.5, backoff_max=1.0)  # a delay no slow machine skips by
    dies(sup, fake, "ntp", 1)
    assert scheduled(sup)["ntp"] <= 0, "the first restart is immediate"
    restarts_now(sup, fake)
    assert fake.status_of("ntp") == "running"
    assert (record(sup, "ntp").restarts, record(sup, "ntp").consecutive_failures) == (1, 1)
    assert record(sup, "ntp").last_failure == "exited with code 1"

    dies(sup, fake, "ntp", 2)
    assert scheduled(sup)["ntp"] > 0, "the second waits"
    restarts_now(sup, fake)
    assert fake.status_of("ntp") == "exited", "not before its delay"
    restarts_when_due(sup, fake)
    assert fake.status_of("ntp") == "running"
    assert (record(sup, "ntp").restarts, record(sup, "ntp").consecutive_failures) == (2, 2)
    assert not record(sup, "ntp").failed


def test_always_restarts_even_a_clean_exit(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    dies(sup, fake, "syslog", 0)
    restarts_now(sup, fake)
    assert fake.status_of("syslog") == "running" and record(sup, "syslog").restarts == 1


def test_a_oneshot_that_exits_0_has_finished(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    dies(sup, fake, "network", 0)  # its die event, arriving after the reconcile saw it complete
    assert record(sup, "network") == ServiceRecord() and scheduled(sup) == {}
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.started.count("network") == 1


def test_too_many_failures_in_a_row_mark_the_service_failed(up: tuple[Supervisor, FakeEngine]) -> None:
    sup, fake = up
    for _ in range(MAX_FAILURES):
        dies(sup, fake, "syslog", 1)
        restarts_when_due(sup, fake)
        assert fake.status_of("syslog") == "running"
    dies(sup, fake, "syslog", 1)
    rec = record(sup, "syslog")
    assert rec.failed and rec.consecutive_failures == MAX_FAILURES + 1 and rec.restarts == MAX_FAILURES
    assert "syslog" not in scheduled(sup)
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("syslog") == "exited", "left alone until the operator starts it"
    assert record(sup, "syslog").consecutive_failures == MAX_FAILURES + 1


def test_a_service_that_stayed_up_a_while_starts_counting_again(tmp_path: Path) -> None:
    sup, fake = brought_up(tmp_path, stable_after=0.05)
    dies(sup, fake, "syslog", 1)
    restarts_now(sup, fake)
    time.sleep(0.1)  # up for longer than stable_after
    dies(sup, fake, "syslog", 1)
    assert record(sup, "syslog").consecutive_failures == 1
    restarts_now(sup, fake)
    assert fake.status_of("syslog") == "running", "restarted at once, like a first failure"


@pytest.mark.parametrize("state", [ServicesState(version="v1.0", desired="up", stopped=["syslog"]),
                                   ServicesState(version="v1.0", desired="up", disabled=["syslog"]),
                                   ServicesState(version="v1.0", desired="down")],
                         ids=["stopped", "disabled", "set-down"])
def test_a_service_the_operator_took_down_is_left_alone(up: tuple[Supervisor, FakeEngine],
                                                        state: ServicesState) -> None:
    sup, fake = up
    servicestate.write_services(sup.settings.root, state)
    dies(sup, fake, "syslog", 1)
    assert record(sup, "syslog") == ServiceRecord() and scheduled(sup) == {}
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("syslog") == "exited"
