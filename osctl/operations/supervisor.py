"""``osctl supervise``: keep the active version's service set running, and say how it goes.

It watches the engine's event stream for this host's containers and reconciles every few
seconds as a safety net:

- a service that dies is started again, at once the first time, then with exponential
  backoff and jitter; the count resets once it has stayed up for a while. One that keeps
  dying is marked failed and left alone (``osctl service start`` clears it); the others run on;
- a container removed behind osctl's back is recreated;
- a service whose health check keeps failing (the engine says "unhealthy") is restarted;
- when the engine goes away, it reconnects with backoff and brings everything up again;
- services the operator stopped or disabled, and a set that is down, are left alone;
- SIGTERM ends the supervisor and leaves the services running.

It decides under the host lock, and acts under it, but waits without it: starting a service
may mean waiting a while for another one's health, and an operator's ``service stop`` must not
wait behind that. ``serviceset.up`` takes the lock again around each change (``_guard``), and
each time it checks that the host still wants what was decided.

What it knows (restarts, last failure, failed services) goes to supervisor.json.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenacity import RetryCallState, wait_exponential, wait_random

from osctl.adapters.engine import Engine, EventStream
from osctl.adapters.locking import SUPERVISOR, host_lock, supervisor_lock
from osctl.constants import CONFIG_FILE, LABEL_ROLE, LABEL_SERVICE, LABEL_VERSION, ROLE_SERVICE
from osctl.domain import servicestate
from osctl.domain.naming import host_labels
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import EngineUnavailable, HostLocked, OsctlError
from osctl.models.engine import ContainerState
from osctl.models.events import ServiceResult, SkipReason
from osctl.models.services import ServiceRecord, ServicesState
from osctl.operations import serviceset
from osctl.operations.serviceset import Skip, Superseded
from osctl.operations.services import skipped

log = logging.getLogger(__name__)

_STOP = object()
HANDLED = ("die", "destroy", "start", "health_status")
LOCK_RETRY = 0.25  # seconds before trying again when a command holds the host lock


class Policy:
    """How hard the supervisor tries; the defaults suit a server, tests shrink them."""

    def __init__(self, *, reconcile_every: float = 5.0, stable_after: float = 30.0, max_failures: int = 5,
                 backoff_min: float = 0.5, backoff_max: float = 30.0, reconnect_max: float = 10.0) -> None:
        self.reconcile_every = reconcile_every
        self.stable_after = stable_after
        self.max_failures = max_failures
        # The first restart is immediate; then min, 2*min, 4*min ... up to max, plus jitter.
        self._backoff = wait_exponential(multiplier=backoff_min, max=backoff_max) + wait_random(0, backoff_min)
        self._reconnect = wait_exponential(multiplier=0.2, max=reconnect_max) + wait_random(0, 0.2)

    def restart_delay(self, failures: int) -> float:
        return 0.0 if failures <= 1 else float(self._backoff(_attempt(failures - 1)))

    def reconnect_delay(self, attempt: int) -> float:
        return float(self._reconnect(_attempt(attempt)))


@dataclass
class _Start:
    """What a look under the lock decided to start; ``_bring_up`` does it after the lock is let go."""

    sset: serviceset.ServiceSet
    leave: Skip  # services not to start, and why
    wanted: list[str]  # the services found not running that should run
    restarts: set[str] = field(default_factory=set)  # started again after a death: counted, and retried when failing


def _attempt(number: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = number
    return state


class Supervisor:
    def __init__(self, settings: Settings, *, policy: Policy | None = None,
                 engine_factory: Callable[[], Engine] = Engine, say: Callable[[str], None] = lambda _m: None) -> None:
        self.settings = settings
        self.policy = policy or Policy()
        self._engine_factory = engine_factory
        self._say = say
        self._events: queue.Queue[Any] = queue.Queue()
        self._stopping = threading.Event()
        self._stream: EventStream | None = None
        self._due: dict[str, float] = {}  # service -> when to restart it
        self._started: dict[str, float] = {}  # service -> when we last saw it start
        self._expected: dict[str, bool] = {}  # container ids we stopped ourselves
        self._unhealthy: set[str] = set()  # restarts due because the health check kept failing
        self._cache: dict[str, tuple[tuple[int, ...], serviceset.ServiceSet]] = {}
        self._connected_at: datetime | None = None  # since when every exit is watched
        self._acting = threading.Lock()  # one change at a time: ``up`` starts services from threads
        self.status = servicestate.read_supervisor(settings.root)
        self.status.pid = os.getpid()

    # -- life cycle ------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stopping.set()
        self._events.put(_STOP)
        stream = self._stream
        if stream is not None:
            stream.close()

    def run(self, *, ready: Callable[[], None] = lambda: None) -> None:
        """Supervise until ``stop()``; refuses to run beside another supervisor of this host.

        ``ready`` is called once the host is this supervisor's, before its first look (the CLI
        opens the metrics endpoint there; an error it raises ends the run).
        """
        with supervisor_lock(self.settings.root):
            ready()
            self._run()

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            engine = self._engine_factory()
            try:
                self._serve(engine)
                attempt = 0
            except EngineUnavailable as exc:
                attempt += 1
                self._set_connected(False)
                delay = self.policy.reconnect_delay(attempt)
                self._say(f"engine unavailable ({exc.message}); retrying in {delay:.1f}s")
                self._stopping.wait(delay)
            finally:
                engine.close()
        self.status.pid = None
        self._save()

    def _serve(self, engine: Engine) -> None:
        self._stream = engine.events(host_labels(self.settings.host_id))
        threading.Thread(target=self._pump, args=(self._stream,), daemon=True, name="events").start()
        self._set_connected(True)
        self.reconcile(engine, fresh=True)
        next_reconcile = time.monotonic() + self.policy.reconcile_every
        while not self._stopping.is_set():
            wake = min([next_reconcile, *self._due.values()])
            try:
                item = self._events.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if isinstance(item, EngineUnavailable):
                raise item
            if item is not None:
                self._on_event(engine, item)
            self._restart_due(engine)
            if time.monotonic() >= next_reconcile:
                self.reconcile(engine)
                next_reconcile = time.monotonic() + self.policy.reconcile_every

    def _pump(self, stream: EventStream) -> None:
        try:
            for event in stream:
                self._events.put(event)
        except EngineUnavailable as exc:
            self._events.put(exc)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[bool]:
        """Act only while no osctl command is changing the host; yields whether we may act.

        A command holding the lock (an upgrade, a service stop) causes container events of its
        own; they are its business, and the next reconcile catches whatever is left over.
        """
        try:
            with host_lock(self.settings.root, SUPERVISOR):
                yield True
        except HostLocked:
            yield False

    # -- what should run -------------------------------------------------------------------
    def _wanted(self) -> tuple[ServicesState, serviceset.ServiceSet | None]:
        state = servicestate.read_services(self.settings.root)
        if state.desired != "up" or not state.version:
            return state, None
        try:
            return state, self._service_set(state.version)
        except OsctlError as exc:
            self._say(f"cannot load {state.version}: {exc.message}")
            return state, None

    def _service_set(self, version: str) -> serviceset.ServiceSet:
        """The version's service set, parsed again only when its stored files change."""
        store = Store(self.settings.root)
        files = (store.record_path(version), store.version_dir(version) / "release.yaml",
                 self.settings.root / CONFIG_FILE)  # the host's extra services live there
        stamp = tuple(_mtime(p) for p in files)
        cached = self._cache.get(version)
        if cached is None or cached[0] != stamp:
            cached = (stamp, serviceset.load_service_set(self.settings.host_id, self.settings.root, version))
            self._cache = {version: cached}
        return cached[1]

    def _leave_alone(self, state: ServicesState) -> Skip:
        reasons = skipped(state)
        for name, record in self.status.services.items():
            if record.failed:
                reasons.setdefault(name, SkipReason.FAILED)
        for name in self._due:
            reasons.setdefault(name, SkipReason.RESTART_PENDING)
        return reasons

    def reconcile(self, engine: Engine, *, fresh: bool = False) -> None:
        """Start what should run and does not (in dependency order), recreate what is gone.

        ``fresh``: the first look after (re)connecting; from now on, every exit is watched. A
        container found exited that stopped before this moment stopped with the engine (or while
        nobody watched), not by itself: it is started again, without counting a failure, even
        when its exit code was 0 (a daemon given SIGTERM by a stopping engine exits 0).
        """
        if fresh:
            self._connected_at = datetime.now(UTC)
        with self._turn() as mine:
            start = self._reconcile(engine) if mine else None
        if start is not None:
            self._bring_up(engine, start)

    def _exited_while_watched(self, container: ContainerState) -> bool:
        finished = container.finished
        return self._connected_at is not None and finished is not None and finished >= self._connected_at

    def _done(self, sset: serviceset.ServiceSet, name: str, container: ContainerState | None) -> bool:
        """Whether a container that is not running has done its work: a one-shot that exited 0,
        or a service whose policy keeps a clean exit down (``on-failure``, ``"no"``) that exited
        0 by itself, while this supervisor watched."""
        if container is None or not container.exited_ok:
            return False
        service = sset.manifest.services[name]
        return service.oneshot or (service.restart_policy != "always" and self._exited_while_watched(container))

    def _reconcile(self, engine: Engine) -> _Start | None:
        """What to start or recreate (None: nothing), for ``_bring_up`` once the lock is let go."""
        state, sset = self._wanted()
        if sset is None:
            return None
        self.status.version = sset.version
        for name in [n for n in self.status.services if n not in sset.manifest.services]:
            del self.status.services[name]
        observed = serviceset.observe(engine, self.settings.host_id, sset.version)
        for name, record in self.status.services.items():
            if record.failed and name in observed and observed[name].running:
                record.failed, record.consecutive_failures = False, 0  # the operator started it again
        # A container that exited while watched and nobody has dealt with died on its own: its
        # policy decides, as if its die event (which may still be on its way) had arrived.
        for name, container in observed.items():
            if (name in sset.specs and container.status == "exited" and self._exited_while_watched(container)
                    and name not in self._leave_alone(state) and not self._done(sset, name, container)):
                self._on_exit(sset, name, container.exit_code)
        leave = self._leave_alone(state)
        wanted = [n for n in sset.specs if (n not in observed or not observed[n].running)
                  and n not in leave and not self._done(sset, n, observed.get(n))]
        self._save()
        return _Start(sset, leave, wanted) if wanted else None

    def _bring_up(self, engine: Engine, start: _Start) -> None:
        """Start what was decided, the lock taken only around each change (``_guard``): the
        health waits between them happen without it."""
        try:
            outcomes = serviceset.up(engine, start.sset, skip=start.leave, wait_healthy=False, timeout=30.0,
                                     guard=self._guard(start.sset.version))
        except serviceset.ServicesFailed as exc:
            outcomes = exc.outcomes
        now = time.monotonic()
        for outcome in outcomes:
            name = outcome.service
            if not outcome.ok:
                self._failure(name, outcome.detail)
                if name in start.restarts:
                    self._schedule(name)
            if name in start.wanted and outcome.result is not ServiceResult.SKIPPED:
                self._started[name] = now
                if outcome.ok and name in start.restarts:
                    self.status.services.setdefault(name, ServiceRecord()).restarts += 1
        self._save()

    def _guard(self, version: str) -> serviceset.Guard:
        """Around each change ``up`` makes for ``_bring_up``: the host lock, and a fresh look at
        whether the host still wants ``version`` up with that service in it."""

        @contextlib.contextmanager
        def guard(name: str) -> Iterator[None]:
            with self._acting, self._turn() as mine:
                if not mine:
                    raise Superseded(SkipReason.CHANGED, "not started: an osctl command is changing the host")
                state, sset = self._wanted()
                if sset is None or sset.version != version:
                    raise Superseded(SkipReason.CHANGED, f"not started: {version} is no longer the set to run")
                reason = self._leave_alone(state).get(name)
                if reason is not None:
                    raise Superseded(reason, reason.describe())
                yield

        return guard

    # -- events ----------------------------------------------------------------------------
    def _on_event(self, engine: Engine, event: dict[str, Any]) -> None:
        labels = event["labels"]
        # Health probes alone make three exec_* events each: drop what needs no action first.
        if labels.get(LABEL_ROLE) != ROLE_SERVICE or not event["action"].startswith(HANDLED):
            return
        if event["action"] == "die" and self._expected.pop(event["id"], False):
            return  # our own stop, for a restart
        with self._turn() as mine:
            start = self._handle(engine, event) if mine else None
        if start is not None:
            self._bring_up(engine, start)

    def _handle(self, engine: Engine, event: dict[str, Any]) -> _Start | None:
        """React to one event; what to start once the lock is let go (None: nothing)."""
        labels = event["labels"]
        name, version, action = labels.get(LABEL_SERVICE, ""), labels.get(LABEL_VERSION), event["action"]
        state, sset = self._wanted()
        if sset is None or version != sset.version or name not in sset.specs:
            return None
        if action == "start":
            self._started[name] = time.monotonic()
        elif action == "die":
            self._on_death(engine, state, sset, name, event)
        elif action == "destroy" and name not in skipped(state):
            self._say(f"{name}: container removed; recreating it")
            self._due.pop(name, None)  # its death was the removal: recreating is the restart
            start = self._reconcile(engine)
            if start is not None and name in start.wanted:
                start.restarts.add(name)
            return start
        elif action.startswith("health_status") and "unhealthy" in action and name not in skipped(state):
            self._failure(name, "health check failing")
            self._unhealthy.add(name)
            self._schedule(name)
        return None

    def _on_death(self, engine: Engine, state: ServicesState, sset: serviceset.ServiceSet, name: str,
                  event: dict[str, Any]) -> None:
        if name in skipped(state):
            return
        code = event["labels"].get("exitCode")
        if code is None:  # older engines: ask, while the container is still stopped
            info = engine.inspect(event["id"])
            if info is None:
                return  # removed: the destroy event follows
            code = info.exit_code
        self._on_exit(sset, name, int(code))

    def _on_exit(self, sset: serviceset.ServiceSet, name: str, code: int) -> None:
        """Apply the service's restart policy to an exit (once per death)."""
        if name in self._due or self.status.services.get(name, ServiceRecord()).failed:
            return
        service = sset.manifest.services[name]
        policy = service.restart_policy
        if code == 0 and policy != "always":
            return  # finished as it should
        if policy == "no":
            self._failure(name, f"exited with code {code} (restart: no)", restart=False)
            return
        self._failure(name, f"exited with code {code}")
        self._schedule(name)

    def _failure(self, name: str, why: str, *, restart: bool = True) -> None:
        record = self.status.services.setdefault(name, ServiceRecord())
        started = self._started.get(name)
        if started is not None and time.monotonic() - started >= self.policy.stable_after:
            record.consecutive_failures = 0  # it had been fine for a while: a fresh start
        record.consecutive_failures += 1
        record.last_failure = why
        record.last_failure_at = datetime.now(UTC).isoformat(timespec="seconds")
        if not restart or record.consecutive_failures > self.policy.max_failures:
            record.failed = True
            self._due.pop(name, None)
            self._say(f"{name}: {why}; marked failed after {record.consecutive_failures} failure(s)")
        self._save()

    def _schedule(self, name: str) -> None:
        record = self.status.services[name]
        if record.failed or name in self._due:
            return
        delay = self.policy.restart_delay(record.consecutive_failures)
        self._due[name] = time.monotonic() + delay
        self._say(f"{name}: {record.last_failure}; restarting in {delay:.1f}s")

    def _restart_due(self, engine: Engine) -> None:
        now = time.monotonic()
        due = [n for n, when in self._due.items() if when <= now]
        if not due:
            return
        with self._turn() as mine:
            if not mine:  # a command is at work: try again shortly, without spinning meanwhile
                for name in due:
                    self._due[name] = now + LOCK_RETRY
                return
            for name in due:
                del self._due[name]
            starts = [start for name in due if (start := self._restart(engine, name)) is not None]
        for start in starts:
            self._bring_up(engine, start)

    def _restart(self, engine: Engine, name: str) -> _Start | None:
        """Start a service again in its container; one whose container is gone is recreated by
        ``_bring_up``, once the lock is let go (returned)."""
        state, sset = self._wanted()
        if sset is None or name in skipped(state):
            return None
        current = serviceset.observe(engine, self.settings.host_id, sset.version).get(name)
        unhealthy = name in self._unhealthy
        self._unhealthy.discard(name)
        if current is not None and current.running and not unhealthy:
            return None  # someone (the operator, a reconcile) already started it
        if current is None:
            return _Start(sset, self._leave_alone(state), [name], {name})
        try:
            if current.running:
                self._expected[current.id] = True
                engine.stop(current.id, current.stop_timeout)  # unhealthy: a clean restart
            serviceset.start_container(engine, sset, name, current.id)
        except OsctlError as exc:
            self._failure(name, exc.message)
            self._schedule(name)
            return None
        self._started[name] = time.monotonic()
        self.status.services.setdefault(name, ServiceRecord()).restarts += 1
        self._save()
        return None

    # -- status ----------------------------------------------------------------------------
    def _set_connected(self, connected: bool) -> None:
        self.status.engine_connected = connected
        self._save()

    def _save(self) -> None:
        self.status.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            servicestate.write_supervisor(self.settings.root, self.status)
        except OsctlError as exc:
            self._say(f"cannot record the supervisor's state: {exc.message}")


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1
