"""The supervisor holds the host lock to decide and to change, never while it waits for health;
what it decided is checked again each time it takes the lock back (against a fake engine)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from osctl.adapters.locking import host_lock
from osctl.constants import STATE_DIR
from osctl.domain import servicestate
from osctl.domain.settings import Settings
from osctl.models.services import ServicesState
from osctl.operations import serviceset
from osctl.operations.supervisor import Policy, Supervisor
from tests.support.fake_engine import FakeEngine, store_version

MANIFEST = """\
version: v1.0
services:
  syslog:
    command: [/bin/syslogd, -n]
    healthcheck: {test: [CMD, /bin/pidof, syslogd]}
  ntp:
    command: [/bin/ntpd, -n]
    depends_on: {syslog: {condition: service_healthy}}
boot: {kernel: /boot/vmlinuz}
"""


class ProbingEngine(FakeEngine):
    """A fake engine whose probes note whether the host lock was free while they ran, and may
    do something meanwhile (what a command run by the operator would do)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.lock_path = root / STATE_DIR / "lock"
        self.lock_free: list[bool] = []
        self.meanwhile = lambda: None

    def run_probe(self, container_id: str, test: list[str], timeout: float) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.lock_free.append(True)
        except BlockingIOError:
            self.lock_free.append(False)
        finally:
            os.close(fd)
        self.meanwhile()
        return super().run_probe(container_id, test, timeout)


def supervisor(root: Path) -> tuple[Supervisor, ProbingEngine]:
    store_version(root, MANIFEST)
    servicestate.write_services(root, ServicesState(version="v1.0", desired="up"))
    fake = ProbingEngine(root)
    settings = Settings(root_option=str(root), host_id_option="unit-lock", env={})
    return Supervisor(settings, policy=Policy(), engine_factory=lambda: fake), fake  # type: ignore[arg-type]


def test_the_health_wait_runs_without_the_host_lock(tmp_path: Path) -> None:
    sup, fake = supervisor(tmp_path)
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.lock_free == [True], "syslog was probed (ntp waits for its health) with the lock free"
    assert fake.status_of("syslog") == fake.status_of("ntp") == "running"


def test_a_service_stopped_during_the_wait_is_not_started(tmp_path: Path) -> None:
    sup, fake = supervisor(tmp_path)

    def operator_stops_ntp() -> None:
        with host_lock(tmp_path, "service stop ntp"):
            servicestate.write_services(tmp_path, ServicesState(version="v1.0", desired="up", stopped=["ntp"]))

    fake.meanwhile = operator_stops_ntp
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("syslog") == "running" and fake.status_of("ntp") is None
    assert "ntp" not in sup.status.services, "skipped, not a failure"


def test_a_set_taken_down_during_the_wait_stays_down(tmp_path: Path) -> None:
    sup, fake = supervisor(tmp_path)
    fake.meanwhile = lambda: servicestate.write_services(tmp_path, ServicesState(version="v1.0", desired="down"))
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("ntp") is None


def test_a_dependency_replaced_during_the_wait_holds_its_dependent_back(tmp_path: Path) -> None:
    sup, fake = supervisor(tmp_path)
    sset = serviceset.load_service_set("unit-lock", tmp_path, "v1.0")

    def syslog_recreated() -> None:
        old = fake.id_of("syslog")
        fake.remove_container(old)
        fake.start(fake.create(sset.specs["syslog"]))

    fake.meanwhile = syslog_recreated
    try:
        sup._bring_up(fake, sup._reconcile(fake))  # type: ignore[arg-type]
    finally:
        fake.meanwhile = lambda: None
    assert fake.status_of("ntp") is None, "not started next to a syslog it did not wait for"
    sup.reconcile(fake)  # type: ignore[arg-type]
    assert fake.status_of("ntp") == "running", "the next look starts it"


def test_while_a_command_holds_the_lock_nothing_is_started_and_nothing_counts_as_failed(tmp_path: Path) -> None:
    sup, fake = supervisor(tmp_path)
    start = sup._reconcile(fake)  # type: ignore[arg-type]
    assert start is not None
    with host_lock(tmp_path, "upgrade v1.1"):
        sup._bring_up(fake, start)  # type: ignore[arg-type]
    assert fake.status_of("syslog") is None and fake.status_of("ntp") is None
    assert sup.status.services == {}
    outcomes = serviceset.up(fake, start.sset, guard=sup._guard("v1.0"))  # type: ignore[arg-type]
    assert all(o.skip is None for o in outcomes) and fake.status_of("ntp") == "running"

