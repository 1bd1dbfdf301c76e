"""An in-memory stand-in for ``osctl.adapters.engine.Engine``, and stored versions to go with it.

Why it exists: the plan of a transaction and the supervisor's restart policy are decisions, and
a unit test of a decision should not need a Docker engine (``pytest tests/unit`` runs on
machines without one). ``FakeEngine`` keeps containers in a dict and answers the calls those
code paths make, with the same plain dataclasses the real adapter returns.

It is not a simulation of Docker: nothing runs, no event is emitted, ``wait`` never waits.
A container is only what the test makes of it: it runs once started and stays running until
the test says it exited (``exit``) or osctl stops it. Anything the real engine would do on its
own (health checks, one-shots finishing) is the test's to say, with ``healthy``,
``exits_when_started`` and ``start_delay``. A stop that the engine is still carrying out
(the service got SIGTERM and takes its time) is ``stop_in_flight``: the container runs until
osctl waits for it or stops it, or the test ends the stop (``finish_stops_in_flight``).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osctl.constants import LABEL_SERVICE
from osctl.domain.store import Store
from osctl.errors import EngineError, EngineUnavailable, NotFoundError
from osctl.models.engine import ContainerInfo, ContainerSpec, ContainerState, ImageInfo, VolumeInfo
from osctl.models.store import StoreRecord

NEVER = "0001-01-01T00:00:00Z"  # the engine's zero time


# A small release for the decisions tests make: a one-shot (network), syslog that ntp waits on to
# be healthy and console to be started, and each restart policy.
CHAIN_RELEASE = """\
version: v1.0
services:
  network: {command: [/bin/network-check], oneshot: true}
  syslog:
    command: [/bin/syslogd, -n]
    depends_on: {network: {condition: service_completed_successfully}}
    healthcheck: {test: [CMD, /bin/pidof, syslogd]}
    restart: always
  ntp:
    command: [/bin/ntpd, -n]
    depends_on: {syslog: {condition: service_healthy}}
    restart: on-failure
  console: {command: [/bin/sh], depends_on: [syslog], restart: "no"}
boot: {kernel: /boot/vmlinuz}
"""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeContainer:
    id: str
    spec: ContainerSpec
    status: str = "created"  # created | running | exited
    exit_code: int = 0
    started_at: str = NEVER
    finished_at: str = NEVER

    @property
    def service(self) -> str | None:
        return self.spec.labels.get(LABEL_SERVICE)


class FakeEngine:
    """The engine calls planning and supervising make, answered from ``by_id``."""

    def __init__(self, *, healthy: bool = True) -> None:
        self.healthy = healthy  # what every probe answers
        self.images: dict[str, ImageInfo] = {}  # ref or id -> image
        self.by_id: dict[str, FakeContainer] = {}
        self.started: list[str] = []  # service names, in the order their containers were started
        self.start_delay: dict[str, float] = {}  # service -> seconds its start takes (to show who waits)
        self._exits: dict[str, int] = {}  # service -> exit code at once when started
        self._stopping: set[str] = set()  # containers whose stop the engine is still carrying out
        self.before_stop: Callable[[str], None] = lambda container_id: None  # called as each stop is issued
        self.tags: dict[str, str] = {}  # ref -> image id
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # osctl starts the services of a level from threads

    # -- what tests say and ask ------------------------------------------------------------
    def exits_when_started(self, service: str, code: int = 0) -> None:
        """The service's container exits with ``code`` as soon as it starts (a one-shot's run)."""
        self._exits[service] = code

    def exit(self, container_id: str, code: int) -> dict[str, Any]:
        """The container stops with ``code``; returns the "die" event the engine would send."""
        with self._lock:
            container = self.by_id[container_id]
            self._exit(container, code)
            labels = dict(container.spec.labels)
        return {"action": "die", "id": container_id,
                "labels": {**labels, "name": container.spec.name, "exitCode": str(code)}}

    def stop_in_flight(self, container_id: str) -> None:
        """The container got its stop signal and is on its way down: it still runs (as the real
        engine shows it) until osctl waits for it or stops it, or the test says the stop is over."""
        with self._lock:
            assert self.by_id[container_id].status == "running"
            self._stopping.add(container_id)

    def finish_stops_in_flight(self) -> None:
        """The stops still in flight end: those containers exit (0, as after a SIGTERM)."""
        with self._lock:
            for container_id in sorted(self._stopping):
                self._exit(self.by_id[container_id], 0)

    def holds_images_of(self, record: StoreRecord) -> None:
        """The engine has every image of a stored version (as after ``osctl pull``)."""
        for image_id in record.image_ids:
            self.images[image_id] = ImageInfo(image_id, {}, [], [], 1, "")

    def id_of(self, service: str) -> str:
        """The id of the (one) container of ``service``."""
        found = [c.id for c in self.by_id.values() if c.service == service]
        assert len(found) == 1, f"{len(found)} containers of {service}"
        return found[0]

    def status_of(self, service: str) -> str | None:
        """created, running or exited; None when the service has no container."""
        found = [c.status for c in self.by_id.values() if c.service == service]
        return found[0] if found else None

    # -- the Engine calls ------------------------------------------------------------------
    def containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        with self._lock:
            return [ContainerInfo(c.id, c.spec.name, dict(c.spec.labels), c.status, c.spec.image)
                    for c in self.by_id.values()
                    if all(c.spec.labels.get(key) == value for key, value in labels.items())]

    def inspect(self, container_id: str) -> ContainerState | None:
        with self._lock:
            c = self.by_id.get(container_id)
            if c is None:
                return None
            return ContainerState(id=c.id, name=c.spec.name, labels=dict(c.spec.labels), status=c.status,
                                  running=c.status == "running", exit_code=c.exit_code, started_at=c.started_at,
                                  finished_at=c.finished_at, health=None, image=c.spec.image,
                                  binds=tuple(m.source for m in c.spec.mounts if not m.volume))

    def create(self, spec: ContainerSpec) -> str:
        with self._lock:
            if any(c.spec.name == spec.name for c in self.by_id.values()):
                raise EngineError(f"creating container {spec.name}: the name is already in use")
            container_id = hashlib.sha256(f"fake-{next(self._ids)}".encode()).hexdigest()
            self.by_id[container_id] = FakeContainer(container_id, spec)
            return container_id

    def start(self, container_id: str) -> None:
        container = self.by_id.get(container_id)
        time.sleep(self.start_delay.get(container.service or "", 0.0) if container else 0.0)
        with self._lock:
            c = self._get(container_id, "starting")
            if c.status == "running":
                return
            c.status, c.exit_code, c.started_at, c.finished_at = "running", 0, _now(), NEVER
            self.started.append(c.service or c.spec.name)
            if c.service in self._exits:
                self._exit(c, self._exits[c.service])

    def stop(self, container_id: str, timeout: float = 10.0) -> None:
        self.before_stop(container_id)
        with self._lock:
            c = self.by_id.get(container_id)
            if c is not None and c.status == "running":
                self._exit(c, 0)

    def events(self, labels: dict[str, str]) -> Any:
        """No event stream: waits for health fall back to asking ``inspect``, as against an
        engine that cannot give one."""
        raise EngineUnavailable("the fake engine has no event stream")

    def volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        """No volumes: the fake keeps none (a spec's named volumes are not created here)."""
        return []

    def remove_container(self, container_id: str, *, host_id: str = "") -> None:
        with self._lock:
            self.by_id.pop(container_id, None)

    def stop_and_remove(self, container_id: str, timeout: float = 10.0, *, host_id: str = "") -> None:
        self.stop(container_id, timeout)
        self.remove_container(container_id, host_id=host_id)

    def wait(self, container_id: str, timeout: float) -> int | None:
        """The exit code of a stopped container (one being stopped stops now); None for a running
        one, after a short pause (as on a timeout, without making a caller that waits in a loop spin)."""
        with self._lock:
            c = self._get(container_id, "waiting for")
            if container_id in self._stopping:
                self._exit(c, 0)
            if c.status != "running":
                return c.exit_code
        time.sleep(min(timeout, 0.05))
        return None

    def run_probe(self, container_id: str, test: list[str], timeout: float) -> bool:
        with self._lock:
            c = self.by_id.get(container_id)
            return self.healthy and c is not None and c.status == "running"

    def last_lines(self, container_id: str, count: int = 10) -> list[str]:
        return []

    def image(self, ref: str) -> ImageInfo | None:
        return self.images.get(ref)

    def tag(self, image_id: str, ref: str) -> None:
        self.tags[ref] = image_id

    def close(self) -> None:
        pass

    # -- inside ----------------------------------------------------------------------------
    def _get(self, container_id: str, doing: str) -> FakeContainer:
        c = self.by_id.get(container_id)
        if c is None:
            raise NotFoundError(f"{doing} container {container_id[:12]}: no such container")
        return c

    def _exit(self, c: FakeContainer, code: int) -> None:
        c.status, c.exit_code, c.finished_at = "exited", code, _now()
        self._stopping.discard(c.id)


# -- stored versions -----------------------------------------------------------------------
REPOSITORY = "127.0.0.1:5000/osctl/os"


def store_version(root: Path, manifest: str, *, service_images: dict[str, str] | None = None) -> StoreRecord:
    """Store the version ``manifest`` (release.yaml text) declares, as ``osctl pull`` leaves it:
    its boot folder (manifest and kernel) and its record. Each version gets an OS image id of
    its own, as real versions do; ``service_images`` maps a service's ``image:`` to its id."""
    version = next(line.split(":", 1)[1].strip() for line in manifest.splitlines() if line.startswith("version:"))
    store = Store(root)
    files = store.stage_boot_files(version, {"release.yaml": ("/usr/lib/osctl/release.yaml", manifest.encode()),
                                             "vmlinuz": ("/boot/vmlinuz", b"kernel " + version.encode())})
    record = StoreRecord(version=version, repository=REPOSITORY, digest="sha256:" + _digest("digest", version),
                         image_id="sha256:" + _digest("image", version), size=1,
                         stored_at="2026-11-26T00:00:00+00:00", service_images=service_images or {},
                         boot_files=files)
    store.save(record)
    return record


def _digest(*parts: str) -> str:
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()
