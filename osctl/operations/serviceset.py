"""Bringing a version's service set up and down on the engine.

``up`` first decides, for every container of the version on the engine and every service of
its manifest, what to do (``plan``: create, recreate, keep, or remove a stray), the way a
compose convergence plan does, and then acts: it starts every service as soon as what it
depends on is ready, independent services in parallel. ``service_started`` waits for the
container to run, ``service_healthy`` for its probe to pass (osctl runs the probe itself, so
nothing waits out the engine's interval), ``service_completed_successfully`` for a one-shot to
exit 0; waits end on the engine's events (``_Watch``), not at a polling interval. A service
whose dependency failed is not started. Named volumes are never removed. ``down`` stops every
service at once. Bind sources are resolved immediately before each create and each start
(``create_container``, ``start_container``); ``down`` and ``observe`` resolve nothing, so a
host whose bind now leads outside its root can still be listed and stopped.

Who holds the host lock: commands hold it around the whole of ``up``. The supervisor does not
(a wait for health may last long, and an operator's ``service stop`` must not wait behind it):
it passes a ``guard`` that takes the lock around each change alone; inside it ``up`` checks
that the containers are still the ones it decided on and waited on.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from osctl.adapters.engine import Engine, EventStream
from osctl.constants import CONFIG_FILE, LABEL_SERVICE, LABEL_SPEC_HASH, LABEL_VERSION
from osctl.domain import binds, servicegraph
from osctl.domain.containerspec import container_spec
from osctl.domain.manifest import parse_manifest
from osctl.domain.naming import system_labels
from osctl.domain.servicemerge import merge_services
from osctl.domain.settings import read_settings_file
from osctl.domain.store import Store
from osctl.errors import NotFoundError, OsctlError, ServiceFailed, UsageError
from osctl.models.engine import ContainerInfo, ContainerSpec, ContainerState
from osctl.models.events import Events, ServiceOutcome, ServiceResult, SkipReason, ignore
from osctl.models.journal import Stop
from osctl.models.manifest import ReleaseManifest
from osctl.models.store import StoreRecord

HEALTH_TIMEOUT = 60.0
STOP_MARGIN = 2.0  # seconds the engine may take beyond a stop's timeout to kill and reap

Skip = dict[str, SkipReason]  # services not to start, and why
Guard = Callable[[str], AbstractContextManager[None]]  # held around each change to one service's containers


@dataclass(frozen=True)
class ServiceSet:
    """The containers one version needs on one host."""

    host_id: str
    version: str
    manifest: ReleaseManifest
    specs: dict[str, ContainerSpec]
    root: Path  # where bind sources must stay, at every create and start
    unsafe: dict[str, str] = field(default_factory=dict)  # services refused a start, and why

    def depends_on(self, name: str) -> dict[str, str]:
        return {dep: rule.condition for dep, rule in self.manifest.services[name].depends_on.items()}


class ServiceKey(NamedTuple):
    """One system container of a host: which service, of which version."""

    service: str
    version: str


class Action(enum.Enum):
    """What ``up`` does with one service's container, decided before anything is touched."""

    CREATE = "create"  # no container yet
    RECREATE = "recreate"  # its spec changed: the old container goes, a new one is made
    KEEP = "keep"  # as specified: started if it is not running
    REMOVE = "remove"  # a container of this version for a service the manifest no longer has


class Superseded(Exception):
    """Raised inside a ``Guard``: what ``up`` decided for a service no longer holds (a command
    changed the host, or is changing it, while ``up`` waited). The service is skipped."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class ServicesFailed(ServiceFailed):
    """``up`` could not bring every service up; the outcome of each is attached."""

    def __init__(self, outcomes: list[ServiceOutcome]) -> None:
        self.outcomes = outcomes
        failed = [o for o in outcomes if not o.ok]
        super().__init__(failed[0].service, failed[0].detail, failed[0].logs, others=len(failed) - 1)


_LOADED: dict[tuple[object, ...], ServiceSet] = {}  # this process's service sets, by what they were made of
_LOADED_MAX = 16


def load_service_set(host_id: str, root: Path, version: str) -> ServiceSet:
    """The service set of a stored version, from the manifest the store kept.

    A transaction asks for the same sets several times (to plan, to verify, to swap, to roll
    back); each is parsed and validated once per process, and again whenever its store record,
    its manifest or the host's settings file is no longer the file it was made from.
    """
    record = Store(root).get(version)
    if record is None:
        raise NotFoundError(f"{version} is not stored on this host", hint=f"osctl pull {version}")
    path = Store(root).version_dir(version) / "release.yaml"
    key = (host_id, str(root), version, record.model_dump_json(), _file_key(path), _file_key(root / CONFIG_FILE))
    if (known := _LOADED.get(key)) is not None:
        return known
    sset = _load_service_set(host_id, root, version, record, path)
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()
    _LOADED[key] = sset
    return sset


def _file_key(path: Path) -> tuple[int, int, int, int] | None:
    """What tells one version of a file from another without reading it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _load_service_set(host_id: str, root: Path, version: str, record: StoreRecord, path: Path) -> ServiceSet:
    # Binds were checked when the version was stored; one stored before today's bind rules is
    # still loaded (``unsafe`` refuses to start what breaks them), so the host stays manageable.
    manifest = parse_manifest(path.read_bytes(), str(path), expected_version=version, check_binds=False)
    extra = read_settings_file(root).services
    if extra:
        merged = merge_services(manifest.services, extra, str(root / CONFIG_FILE))
        manifest = manifest.model_copy(update={"services": merged})
    image_ids: dict[str | None, str] = {None: record.image_id, **record.service_images}
    for svc in manifest.services.values():  # an extra service's image is used by its reference
        if svc.image is not None:
            image_ids.setdefault(svc.image, svc.image)
    specs = {name: container_spec(host_id, root, version, name, svc, image_ids)
             for name, svc in manifest.services.items()}
    return ServiceSet(host_id, version, manifest, specs, root, binds.conflicts(manifest.services))


def stored_manifest(host_id: str, root: Path, version: str | None) -> ReleaseManifest | None:
    """The (merged) manifest of a stored version, or None when there is no such version stored."""
    if not version or Store(root).get(version) is None:
        return None
    return load_service_set(host_id, root, version).manifest


def create_container(engine: Engine, sset: ServiceSet, name: str) -> str:
    """Create ``name``'s container with its bind sources resolved now, inside the root."""
    _refuse_unsafe(sset, name)
    spec = sset.specs[name]
    if not spec.image.startswith("sha256:") and engine.image(spec.image) is None:
        engine.pull(spec.image)  # an extra service's image, named by the host's settings
    mounts = [m if m.volume else replace(m, source=binds.resolve_now(sset.root, m.source)) for m in spec.mounts]
    return engine.create(replace(spec, mounts=mounts))


def start_container(engine: Engine, sset: ServiceSet, name: str, container_id: str, *,
                    made_from_spec: bool = False) -> None:
    """Start ``name``'s existing container once every path it binds, resolved now, is inside the
    root: the engine follows symbolic links again at each start, and a link may have been swapped
    in since the container was created.

    ``made_from_spec``: the caller knows the container was made from ``name``'s spec (created
    from it, or carrying its spec hash); when that spec binds nothing, neither does the
    container, and the inspection (a round trip inside a swap's downtime) is skipped.
    """
    _refuse_unsafe(sset, name)
    if made_from_spec and all(mount.volume for mount in sset.specs[name].mounts):
        engine.start(container_id)
        return
    state = engine.inspect(container_id)
    for source in state.binds if state is not None else ():
        binds.resolve_now(sset.root, source)
    engine.start(container_id)


def _refuse_unsafe(sset: ServiceSet, name: str) -> None:
    if name in sset.unsafe:
        raise UsageError(f"not started: {sset.unsafe[name]}", hint="this version breaks the bind rules of "
                         "docs/image-format.md; switch to another version")


def observe(engine: Engine, host_id: str, version: str) -> dict[str, ContainerState]:
    """One version's system containers on this host, by service name, as the engine says now."""
    return {key.service: state for key, state in observe_host(engine, host_id, version).items()}


def observe_host(engine: Engine, host_id: str, version: str | None = None) -> dict[ServiceKey, ContainerState]:
    """The host's system containers (of every version, or of one), as the engine says now.

    Each is inspected (a listing does not carry exit codes or health); one removed between the
    listing and its inspection is left out.
    """
    listed = engine.containers(system_labels(host_id, version))
    if len(listed) > 1:  # side by side: a swap asks this inside its downtime
        with ThreadPoolExecutor(max_workers=min(len(listed), 16), thread_name_prefix="observe") as pool:
            states = list(pool.map(lambda info: engine.inspect(info.id), listed))
    else:
        states = [engine.inspect(info.id) for info in listed]
    return {ServiceKey(state.labels.get(LABEL_SERVICE, "?"), state.labels.get(LABEL_VERSION, "?")): state
            for state in states if state is not None}


def plan(sset: ServiceSet, observed: dict[str, ContainerState]) -> dict[str, Action]:
    """What ``up`` does with each service's container (and each stray), before it acts.

    A container whose spec hash differs from the manifest's is recreated; one whose service the
    manifest no longer has is removed. Services to skip are still planned: skipping is about
    starting, and a skipped service's container is left as it is.
    """
    actions: dict[str, Action] = {name: Action.REMOVE for name in observed if name not in sset.specs}
    for name, spec in sset.specs.items():
        current = observed.get(name)
        if current is None:
            actions[name] = Action.CREATE
        elif current.labels.get(LABEL_SPEC_HASH) != spec.labels[LABEL_SPEC_HASH]:
            actions[name] = Action.RECREATE
        else:
            actions[name] = Action.KEEP
    return actions


class _Watch:
    """The engine's events for one set's containers, so a wait ends the moment its container
    dies or turns healthy instead of at the next poll.

    One event stream (a connection of its own) per ``up``, opened before any container starts
    so no event is missed. When the engine cannot give one, ``alive`` is False and the waits
    fall back to asking ``inspect``.
    """

    def __init__(self, engine: Engine, labels: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self._changed: dict[str, threading.Event] = {}
        self._exit: dict[str, int] = {}  # container -> exit code of its last die, until it starts again
        self._gone: set[str] = set()
        self._healthy: set[str] = set()
        try:
            self._stream: EventStream | None = engine.events(labels)
        except OsctlError:
            self._stream = None
        self.alive = self._stream is not None
        if self._stream is not None:
            threading.Thread(target=self._pump, args=(self._stream,), daemon=True, name="up-events").start()

    def _pump(self, stream: EventStream) -> None:
        try:
            for event in stream:
                self._seen(event)
        except OsctlError:
            pass
        finally:
            with self._lock:
                self.alive = False
                changed = list(self._changed.values())
            for flag in changed:
                flag.set()  # a waiter asks inspect from now on

    def _seen(self, event: dict[str, Any]) -> None:
        action, container = str(event.get("action", "")), str(event.get("id", ""))
        with self._lock:
            if action == "start":
                self._exit.pop(container, None)
                self._healthy.discard(container)
            elif action == "die":
                self._exit[container] = _exit_code(event.get("labels", {}).get("exitCode"))
                self._healthy.discard(container)
            elif action == "destroy":
                self._gone.add(container)
            elif action == "health_status: healthy":
                self._healthy.add(container)
            elif action.startswith("health_status"):
                self._healthy.discard(container)
            else:
                return
            flag = self._changed.get(container)
        if flag is not None:
            flag.set()

    def why_not_running(self, container: str) -> str | None:
        """Why the container is not running any more, from its events; None while it runs."""
        with self._lock:
            if container in self._gone:
                return "the container disappeared"
            if container in self._exit:
                return f"stopped (exit code {self._exit[container]}) before becoming healthy"
        return None

    def healthy(self, container: str) -> bool:
        """The engine's own probe passed last (its interval may beat osctl's probe)."""
        with self._lock:
            return container in self._healthy

    def pause(self, container: str, seconds: float, abandoned: threading.Event) -> None:
        """Sleep up to ``seconds``, waking at once when the container has an event or the
        set is abandoned."""
        with self._lock:
            flag = self._changed.setdefault(container, threading.Event())
        end = time.monotonic() + seconds
        while not abandoned.is_set() and (left := end - time.monotonic()) > 0:
            if flag.wait(min(left, 0.05)):
                flag.clear()
                return

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def _exit_code(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


class _Progress:
    """Per-service readiness that dependents wait on, and the set's abandonment.

    ``abandoned`` is set when the caller stops waiting for the set (Ctrl-C, SIGTERM, an error in
    the calling thread): every worker then ends at its next wait instead of waiting out the
    health timeout, so that a transaction can roll back at once.
    """

    def __init__(self, names: list[str]) -> None:
        self.started = {n: threading.Event() for n in names}
        self.healthy = {n: threading.Event() for n in names}
        self.completed = {n: threading.Event() for n in names}
        self.failed: dict[str, str] = {}
        self.abandoned = threading.Event()
        self.containers: dict[str, str] = {}  # service -> the container that met (or meets) its dependents' conditions

    def abandon(self) -> None:
        self.abandoned.set()
        for name in self.started:
            self.fail(name, "was abandoned")

    def fail(self, name: str, why: str) -> None:
        self.failed[name] = why
        for events in (self.started, self.healthy, self.completed):
            events[name].set()

    def wait(self, dep: str, condition: str, deadline: float) -> str | None:
        """None when ``dep`` meets ``condition``; else why not."""
        event = {"service_started": self.started, "service_healthy": self.healthy,
                 "service_completed_successfully": self.completed}[condition][dep]
        if not event.wait(max(0.0, deadline - time.monotonic())):
            return f"{dep} was not {condition.removeprefix('service_').replace('_', ' ')} in time"
        if dep in self.failed:
            return f"{dep} {self.failed[dep]}"
        return None


def up(engine: Engine, sset: ServiceSet, *, skip: Skip | None = None, events: Events = ignore,
       wait_healthy: bool = True, timeout: float = HEALTH_TIMEOUT, guard: Guard | None = None,
       only: list[str] | None = None, after: dict[str, threading.Event] | None = None) -> list[ServiceOutcome]:
    """Bring the set up; raise ``ServicesFailed`` (after trying everything) if any failed.

    ``skip`` names services not to start (disabled, stopped by the operator) with the reason;
    a skipped service that already runs is left running: stopping it is the operator's call.
    ``guard``: for a caller that does not hold the host lock meanwhile (see the module's words).
    ``only``: bring up just these services (they must depend on nothing else, as a swap's
    start-first services do), leaving the others, and strays, as they are.
    ``after``: a service named here is started only once its event is set (a swap sets it when
    the service's old container has stopped), besides waiting for what it depends on.
    """
    skip = skip or {}
    names = servicegraph.start_order(sset.manifest.services)
    if only is not None:
        names = [name for name in names if name in only]
    observed = observe(engine, sset.host_id, sset.version)
    actions = plan(sset, observed)
    for name, action in actions.items():
        if action is Action.REMOVE and only is None:
            stray = observed.pop(name)
            with contextlib.suppress(Superseded), _changing(engine, sset, guard, name, stray.id, {}):
                engine.stop_and_remove(stray.id, stray.stop_timeout, host_id=sset.host_id)
    progress = _Progress(names)
    deadline = time.monotonic() + timeout
    needs_health = {dep for n in names for dep, cond in sset.depends_on(n).items() if cond == "service_healthy"}
    waits = any(sset.manifest.services[n].healthcheck is not None and (wait_healthy or n in needs_health)
                and n not in skip for n in names)
    watch = _Watch(engine, system_labels(sset.host_id, sset.version)) if waits else None

    def bring(name: str) -> ServiceOutcome:
        try:
            outcome = _bring_one(engine, sset, name, actions[name], observed.get(name), progress, skip, deadline,
                                 wait_healthy or name in needs_health, guard, watch, (after or {}).get(name))
        except Superseded as exc:
            outcome = ServiceOutcome(name, ServiceResult.SKIPPED, exc.detail, exc.reason)
        except OsctlError as exc:
            outcome = ServiceOutcome(name, ServiceResult.FAILED, exc.message)
        if outcome.result is ServiceResult.FAILED:
            progress.fail(name, outcome.detail)
        elif outcome.result is ServiceResult.SKIPPED:
            progress.fail(name, f"is not running ({outcome.detail})")
        events(outcome)
        return outcome

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="up") as pool:
            try:
                outcomes = list(pool.map(bring, names))
            except BaseException:  # the pool's exit waits for every worker: make them end first
                progress.abandon()
                raise
    finally:
        if watch is not None:
            watch.close()
    if not all(o.ok for o in outcomes):
        raise ServicesFailed(outcomes)
    return outcomes


def _bring_one(engine: Engine, sset: ServiceSet, name: str, action: Action, current: ContainerState | None,
               progress: _Progress, skip: Skip, deadline: float, wait_health: bool,
               guard: Guard | None, watch: _Watch | None, gate: threading.Event | None) -> ServiceOutcome:
    for dep, condition in sset.depends_on(name).items():
        why = progress.wait(dep, condition, deadline)
        if why is not None:
            return ServiceOutcome(name, ServiceResult.SKIPPED, f"not started: {why}", SkipReason.DEPENDENCY)
    if name in skip:
        return ServiceOutcome(name, ServiceResult.SKIPPED, skip[name].describe(), skip[name])
    spec = sset.specs[name]
    service = sset.manifest.services[name]
    keep = current if action is not Action.RECREATE else None
    if keep is not None and service.oneshot and keep.exited_ok:
        progress.containers[name] = keep.id
        progress.started[name].set()
        progress.completed[name].set()
        return ServiceOutcome(name, ServiceResult.COMPLETED, "already completed")
    if gate is not None and not (action is Action.KEEP and current is not None and current.running):
        while not gate.wait(0.05):  # the old container's stop ends (the engine kills at its grace period)
            if progress.abandoned.is_set():
                return ServiceOutcome(name, ServiceResult.SKIPPED, "not started: the set was abandoned",
                                      SkipReason.DEPENDENCY)
    waited = {dep: (progress.containers[dep], condition) for dep, condition in sset.depends_on(name).items()
              if dep in progress.containers}
    if action is Action.KEEP and current is not None and current.running:
        container_id, result = current.id, ServiceResult.UNCHANGED  # nothing to change
    else:
        with _changing(engine, sset, guard, name, current.id if current else None, waited):
            container_id, result = _make_running(engine, sset, name, action, current)
    progress.containers[name] = container_id
    progress.started[name].set()

    if service.oneshot:
        code = _wait_exit(engine, container_id, deadline, progress.abandoned)
        if code is None:
            return ServiceOutcome(name, ServiceResult.FAILED, "did not complete in time",
                                  logs=engine.last_lines(container_id))
        if code != 0:
            return ServiceOutcome(name, ServiceResult.FAILED, f"exited with code {code}",
                                  logs=engine.last_lines(container_id))
        progress.completed[name].set()
        return ServiceOutcome(name, ServiceResult.COMPLETED, f"{result}, exited 0")
    if service.healthcheck is not None and wait_health:
        why = wait_until_healthy(engine, container_id, spec, deadline, progress.abandoned, watch)
        if why is not None:
            return ServiceOutcome(name, ServiceResult.FAILED, why, logs=engine.last_lines(container_id))
        progress.healthy[name].set()
    elif service.healthcheck is None:
        progress.healthy[name].set()  # nothing to wait for: running is as healthy as it gets
    return ServiceOutcome(name, result)


def _make_running(engine: Engine, sset: ServiceSet, name: str, action: Action,
                  current: ContainerState | None) -> tuple[str, ServiceResult]:
    """(Re)create the service's container if it must be, and start it if it does not run."""
    result = ServiceResult.UNCHANGED
    if action is Action.RECREATE and current is not None:
        engine.stop_and_remove(current.id, current.stop_timeout, host_id=sset.host_id)
        current, result = None, ServiceResult.RECREATED
    if current is None:
        container_id = create_container(engine, sset, name)
        if result is ServiceResult.UNCHANGED:
            result = ServiceResult.CREATED
    else:
        container_id = current.id
    if current is None or not current.running:  # created here, or kept for its spec hash: made from the spec
        start_container(engine, sset, name, container_id, made_from_spec=True)
        if result is ServiceResult.UNCHANGED:
            result = ServiceResult.STARTED
    return container_id, result


@contextlib.contextmanager
def _changing(engine: Engine, sset: ServiceSet, guard: Guard | None, name: str, expected: str | None,
              waited: dict[str, tuple[str, str]]) -> Iterator[None]:
    """Hold ``guard(name)`` (when there is one) around a change to ``name``'s containers, and
    check inside it that what ``up`` decided on still holds: ``name``'s container is still
    ``expected`` (an id, or None for none), and each dependency in ``waited`` (service ->
    (container id, condition)) is still that container, still running unless it was a
    one-shot's completion that was waited for. Raises ``Superseded`` otherwise."""
    if guard is None:
        yield
        return
    with guard(name):
        now = _containers_now(engine, sset)
        mine = now.get(name)
        if (mine.id if mine else None) != expected:
            raise Superseded(SkipReason.CHANGED, "not started: its container changed meanwhile")
        for dep, (container_id, condition) in waited.items():
            there = now.get(dep)
            if there is None or there.id != container_id or (
                    condition != "service_completed_successfully" and there.state != "running"):
                raise Superseded(SkipReason.CHANGED, f"not started: {dep} changed while it was waited on")
        yield


def _containers_now(engine: Engine, sset: ServiceSet) -> dict[str, ContainerInfo]:
    """The set's containers by service, from one listing (no inspection: ids and states only)."""
    return {c.labels.get(LABEL_SERVICE, "?"): c for c in engine.containers(system_labels(sset.host_id, sset.version))}


def _wait_exit(engine: Engine, container_id: str, deadline: float, abandoned: threading.Event) -> int | None:
    """A one-shot's exit code, or None if it still runs at ``deadline`` or the set is abandoned.

    The engine's wait blocks and cannot be interrupted, so it is asked for a second at a time.
    """
    while True:
        code = engine.wait(container_id, max(0.1, min(1.0, deadline - time.monotonic())))
        if code is not None or abandoned.is_set() or time.monotonic() >= deadline:
            return code


def wait_until_healthy(engine: Engine, container_id: str, spec: ContainerSpec, deadline: float,
                       abandoned: threading.Event | None = None, watch: _Watch | None = None) -> str | None:
    """Run the service's own probe until it passes; None when healthy, else why not.

    Probing directly notices health as soon as it is there instead of at the engine's next
    interval: at once, then after pauses that grow from 50 ms to 250 ms (a service that is up
    in a moment qualifies in a moment; one that takes seconds is not probed 20 times a
    second). With the set's ``watch`` a pause ends at the container's next event, so a death
    (or the engine's own probe passing first) is known at once, without polling ``inspect``.
    ``abandoned`` ends the wait early.
    """
    probe = spec.probe
    assert probe is not None
    abandoned = abandoned or threading.Event()
    pause, inspected = 0.05, False
    while True:
        if (watch is not None and watch.healthy(container_id)) or engine.run_probe(container_id, probe.test,
                                                                                    probe.timeout):
            return None
        # Inspected once: a container that died before the watch was opened has no event for it.
        if watch is not None and watch.alive and inspected:
            why = watch.why_not_running(container_id)
            if why is not None:
                return why
        else:
            inspected = True
            state = engine.inspect(container_id)
            if state is None:
                return "the container disappeared"
            if not state.running:
                return f"stopped (exit code {state.exit_code}) before becoming healthy"
        if time.monotonic() + pause > deadline:
            return "did not become healthy in time"
        if watch is not None and watch.alive:
            watch.pause(container_id, pause, abandoned)
        else:
            abandoned.wait(pause)
        if abandoned.is_set():
            return "the wait was abandoned"
        pause = min(0.25, pause * 2, probe.interval)


def wait_engine_healthy(engine: Engine, sset: ServiceSet, names: list[str], timeout: float) -> None:
    """Wait until the engine itself reports each of ``names`` that has a healthcheck healthy;
    ``ServiceFailed`` for the first that stops, turns unhealthy or is not healthy in time.

    osctl's own probe passes first (it does not wait out the interval), but what other tools
    see (``docker ps``, a load balancer asking the engine) is the engine's status: a swap hands
    a start-first service over only once both agree, outside the downtime.
    """
    pending = [name for name in names if sset.manifest.services[name].healthcheck is not None]
    deadline = time.monotonic() + timeout
    while pending:
        observed = observe(engine, sset.host_id, sset.version)
        for name in list(pending):
            state = observed.get(name)
            if state is None or not state.running:
                code = f" (exit code {state.exit_code})" if state is not None else ""
                raise ServiceFailed(name, f"stopped{code} before the engine found it healthy",
                                    engine.last_lines(state.id) if state is not None else [])
            if state.health == "unhealthy":
                raise ServiceFailed(name, "the engine's own probe found it unhealthy", engine.last_lines(state.id))
            if state.health == "healthy":
                pending.remove(name)
        if pending and time.monotonic() >= deadline:
            raise ServiceFailed(pending[0], "the engine did not find it healthy in time", [])
        if pending:
            time.sleep(0.1)


def down(engine: Engine, host_id: str, version: str | None, *, manifest: ReleaseManifest | None = None,
         remove: bool = True, events: Events = ignore,
         before_stops: Callable[[list[Stop]], None] | None = None,
         observed: dict[str, ContainerState] | None = None,
         stopped: Callable[[str], None] | None = None) -> list[str]:
    """Stop (and remove) a set's containers; named volumes always stay.

    Every container gets its stop at the same moment, so stopping a set costs its slowest
    stop, not one slow stop per dependency level: nothing in a new set, nor in a stopped one,
    needs the old services to go in order. The exception is a service whose manifest says
    ``stop_after_dependents``: it is stopped as soon as the services depending on it have
    stopped (which needs the manifest; without it, e.g. a version no longer stored, all go at
    once). Each container is stopped with its own timeout, its service's ``stop_grace_period``.
    ``before_stops`` is told each batch of running containers before their stops are issued
    (a transaction journals them: see ``finish_stops``). ``observed``: the version's containers
    as the caller just saw them (else they are listed here). ``stopped`` is told each service
    whose stop is over, done or failed.
    """
    if version is None:  # every version's containers of this host
        items = [(key.service, state) for key, state in observe_host(engine, host_id).items()]
    else:
        items = list((observed if observed is not None else observe(engine, host_id, version)).items())
    waits = servicegraph.stop_waits(manifest.services) if manifest is not None and version is not None else {}
    return _stop_all(engine, host_id, items, waits, remove=remove, events=events, before_stops=before_stops,
                     stopped=stopped)


def _stop_all(engine: Engine, host_id: str, items: list[tuple[str, ContainerState]], waits: dict[str, set[str]], *,
              remove: bool, events: Events, before_stops: Callable[[list[Stop]], None] | None,
              stopped: Callable[[str], None] | None = None) -> list[str]:
    """Stop every container of ``items`` in parallel; one named in ``waits`` only once the
    stops of the services it lists (those present) have finished, failed or not."""
    present = {name for name, _ in items}
    finished = {name: threading.Event() for name in present}
    blocked = {name: waits.get(name, set()) & present for name in present}
    journal_lock = threading.Lock()

    def journal(group: list[tuple[str, ContainerState]]) -> None:
        stops = [Stop(container=state.id, service=name, timeout=state.stop_timeout) for name, state in group
                 if state.running]
        if before_stops is not None and stops:
            with journal_lock:
                before_stops(stops)

    def stop_one(item: tuple[str, ContainerState]) -> str:
        name, state = item
        try:
            if blocked[name]:
                for other in blocked[name]:
                    finished[other].wait()
                journal([item])
            if remove:
                engine.stop_and_remove(state.id, state.stop_timeout, host_id=host_id)
            else:
                engine.stop(state.id, state.stop_timeout)
        finally:
            finished[name].set()
            if stopped is not None:
                stopped(name)
        events(ServiceOutcome(name, ServiceResult.REMOVED if remove else ServiceResult.STOPPED))
        return name

    journal([item for item in items if not blocked[item[0]]])
    with ThreadPoolExecutor(max_workers=max(1, len(items)), thread_name_prefix="down") as pool:
        futures = [pool.submit(stop_one, item) for item in items]
        return [future.result() for future in futures]


def finish_stops(engine: Engine, stops: list[Stop]) -> None:
    """See through, to their end, stops that a process which died had asked the engine for.

    The engine goes on with a stop after its caller is gone: the service got SIGTERM and exits
    when it is done, seconds from now maybe, while it still shows as running. Recovery that
    took "running" at its word would keep it and watch it go down afterwards. So each one is
    waited for (the engine kills it at the timeout); one still running after that (its stop
    was never issued, or no longer carried out) is stopped here. What recovery sees next is
    then what stays, and recovery starts what it wants running.
    """
    if stops:
        with ThreadPoolExecutor(max_workers=len(stops), thread_name_prefix="finish-stop") as pool:
            list(pool.map(lambda stop: _finish_stop(engine, stop), stops))


def _finish_stop(engine: Engine, stop: Stop) -> None:
    try:
        if engine.wait(stop.container, stop.timeout + STOP_MARGIN) is not None:
            return  # it exited, as asked
    except NotFoundError:
        return
    engine.stop(stop.container, stop.timeout)  # a second SIGTERM, rather than none at all


def check_running(engine: Engine, sset: ServiceSet, skip: Skip) -> None:
    """Every service of the set that should run is running (one-shots completed), right now;
    else ``ServiceFailed`` for the first that is not, in start order."""
    observed = observe(engine, sset.host_id, sset.version)
    for name in servicegraph.start_order(sset.manifest.services):
        if name in skip:
            continue
        state = observed.get(name)
        oneshot = sset.manifest.services[name].oneshot
        if state is None:
            raise ServiceFailed(name, "its container is gone", [])
        if oneshot and not state.exited_ok:
            raise ServiceFailed(name, f"did not complete (exit code {state.exit_code})", engine.last_lines(state.id))
        if not oneshot and not state.running:
            raise ServiceFailed(name, f"is not running (exit code {state.exit_code})", engine.last_lines(state.id))
