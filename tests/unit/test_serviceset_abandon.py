"""A set that is being brought up is abandoned at once when its caller is interrupted.

Why it matters: SIGTERM or Ctrl-C during an upgrade's health gate must roll back now, not after
the health timeout: the workers that wait for health must notice that nobody waits for them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from osctl.operations import serviceset
from tests.support.fake_engine import CHAIN_RELEASE, FakeEngine, store_version



@pytest.fixture
def interrupt_after() -> Iterator[None]:
    """SIGALRM in 0.3 s raises KeyboardInterrupt in the main thread, as the CLI's SIGTERM handler does."""
    def raise_interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, raise_interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("waiting_on", ["health", "one-shot"])
def test_an_interrupted_up_ends_without_waiting_out_the_timeout(tmp_path: Path, interrupt_after: None,
                                                                 waiting_on: str) -> None:
    store_version(tmp_path, CHAIN_RELEASE)
    sset = serviceset.load_service_set("unit-abandon", tmp_path, "v1.0")
    engine = FakeEngine(healthy=waiting_on != "health")  # syslog never healthy, or the one-shot never ends
    if waiting_on == "health":
        engine.exits_when_started("network")
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        serviceset.up(engine, sset, timeout=60.0)  # type: ignore[arg-type]
    assert time.monotonic() - started < 15, "up waited for its workers' timeouts before giving up"
    assert [t for t in threading.enumerate() if t.name.startswith("up")] == []
    assert "ntp" not in engine.started  # it waits for syslog to be healthy, which never came
