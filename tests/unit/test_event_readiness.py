"""Waiting for a service's health on the engine's events (issue #16, item 4): a death or the
engine's own healthy status ends the wait at once, and ``inspect`` is asked once, not at every
pause; without an event stream the wait falls back to asking ``inspect``."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from osctl.errors import EngineUnavailable
from osctl.models.engine import ContainerSpec, ContainerState, Probe
from osctl.operations.serviceset import _Watch, wait_until_healthy

SPEC = ContainerSpec(name="c", image="sha256:" + "0" * 64, labels={}, probe=Probe(["CMD", "true"], 1.0, 1.0, 3, 0.0))


class Stream:
    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (event := self.events.get()) is not None:
            yield event

    def close(self) -> None:
        self.events.put(None)


class Engine:
    """Probes that never pass, a container that runs until its events say otherwise."""

    def __init__(self, stream: Stream | None) -> None:
        self.stream, self.inspections, self.probes = stream, 0, 0

    def events(self, labels: dict[str, str]) -> Stream:
        if self.stream is None:
            raise EngineUnavailable("no events here")
        return self.stream

    def run_probe(self, container_id: str, test: list[str], timeout: float) -> bool:
        self.probes += 1
        return False

    def inspect(self, container_id: str) -> ContainerState:
        self.inspections += 1
        return ContainerState(id=container_id, name="c", labels={}, status="running", running=True, exit_code=0,
                              started_at="", finished_at="", health=None, image="")


def wait_in_thread(engine: Engine, watch: _Watch | None) -> tuple[threading.Thread, list[str | None]]:
    answer: list[str | None] = []
    thread = threading.Thread(target=lambda: answer.append(
        wait_until_healthy(engine, "abc", SPEC, time.monotonic() + 30, None, watch)))  # type: ignore[arg-type]
    thread.start()
    return thread, answer


def test_a_death_ends_the_wait_at_once_with_its_exit_code() -> None:
    stream = Stream()
    engine = Engine(stream)
    watch = _Watch(engine, {})  # type: ignore[arg-type]
    thread, answer = wait_in_thread(engine, watch)
    time.sleep(0.6)  # several pauses
    stream.events.put({"action": "die", "id": "abc", "labels": {"exitCode": "3"}})
    thread.join(2)
    watch.close()
    assert answer == ["stopped (exit code 3) before becoming healthy"]
    assert engine.inspections == 1, "inspect is asked once; the events say the rest"
    assert engine.probes >= 3


def test_the_engines_own_healthy_status_counts() -> None:
    stream = Stream()
    engine = Engine(stream)
    watch = _Watch(engine, {})  # type: ignore[arg-type]
    thread, answer = wait_in_thread(engine, watch)
    time.sleep(0.2)
    stream.events.put({"action": "health_status: healthy", "id": "abc", "labels": {}})
    thread.join(2)
    watch.close()
    assert answer == [None]


def test_without_an_event_stream_inspect_is_asked_at_every_pause() -> None:
    engine = Engine(None)
    watch = _Watch(engine, {})  # type: ignore[arg-type]
    assert not watch.alive
    deadline = time.monotonic() + 0.8
    why = wait_until_healthy(engine, "abc", SPEC, deadline, None, watch)  # type: ignore[arg-type]
    assert why == "did not become healthy in time" and engine.inspections >= 3
