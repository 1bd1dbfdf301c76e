"""Bringing a version's service set up and down on the engine.

``up`` first decides, for every container of the version on the engine and every service of
its manifest, what to do (``plan``: create, recreate, keep, or remove a stray), the way a
compose convergence plan does, and then acts: it starts every service as soon as what it
depends on is ready, independent services in parallel. ``service_started`` waits for the
container to run, ``service_healthy`` for its probe to pass (osctl runs the probe itself, so
nothing waits out the engine's interval), ``service_completed_successfully`` for a one-shot to
exit 0. A service whose dependency failed is not started. Named volumes are never removed.
``down`` stops in the reverse order.
"""

from __future__ import annotations

import enum
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from osctl.adapters.engine import Engine
from osctl.constants import CONFIG_FILE, LABEL_ROLE, LABEL_SERVICE, LABEL_SPEC_HASH, LABEL_VERSION, ROLE_SERVICE
from osctl.domain import servicegraph
from osctl.domain.containerspec import container_spec
from osctl.domain.manifest import parse_manifest
from osctl.domain.naming import host_labels
from osctl.domain.servicemerge import merge_services
from osctl.domain.settings import read_settings_file
from osctl.domain.store import Store
from osctl.errors import NotFoundError, OsctlError, ServiceFailed
from osctl.models.engine import ContainerSpec, ContainerState
from osctl.models.events import Events, ServiceOutcome, ServiceResult, SkipReason, ignore
from osctl.models.manifest import ReleaseManifest

HEALTH_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

Skip = dict[str, SkipReason]  # services not to start, and why


@dataclass(frozen=True)
class ServiceSet:
    """The containers one version needs on one host."""

    host_id: str
    version: str
    manifest: ReleaseManifest
    specs: dict[str, ContainerSpec]

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


class ServicesFailed(ServiceFailed):
    """``up`` could not bring every service up; the outcome of each is attached."""

    def __init__(self, outcomes: list[ServiceOutcome]) -> None:
        self.outcomes = outcomes
        failed = [o for o in outcomes if not o.ok]
        super().__init__(failed[0].service, failed[0].detail, failed[0].logs, others=len(failed) - 1)


def load_service_set(host_id: str, root: Path, version: str) -> ServiceSet:
    """The service set of a stored version, from the manifest the store kept."""
    record = Store(root).get(version)
    if record is None:
        raise NotFoundError(f"{version} is not stored on this host", hint=f"osctl pull {version}")
    path = Store(root).version_dir(version) / "release.yaml"
    manifest = parse_manifest(path.read_bytes(), str(path), expected_version=version)
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
    return ServiceSet(host_id, version, manifest, specs)


def stored_manifest(host_id: str, root: Path, version: str | None) -> ReleaseManifest | None:
    """The (merged) manifest of a stored version, or None when there is no such version stored."""
    if not version or Store(root).get(version) is None:
        return None
    return load_service_set(host_id, root, version).manifest


def observe(engine: Engine, host_id: str, version: str) -> dict[str, ContainerState]:
    """One version's system containers on this host, by service name, as the engine says now."""
    return {key.service: state for key, state in observe_host(engine, host_id, version).items()}


def observe_host(engine: Engine, host_id: str, version: str | None = None) -> dict[ServiceKey, ContainerState]:
    """The host's system containers (of every version, or of one), as the engine says now.

    Each is inspected (a listing does not carry exit codes or health); one removed between the
    listing and its inspection is left out.
    """
    labels = {**host_labels(host_id), LABEL_ROLE: ROLE_SERVICE}
    if version is not None:
        labels[LABEL_VERSION] = version
    out: dict[ServiceKey, ContainerState] = {}
    for info in engine.containers(labels):
        state = engine.inspect(info.id)
        if state is not None:
            out[ServiceKey(state.labels.get(LABEL_SERVICE, "?"), state.labels.get(LABEL_VERSION, "?"))] = state
    return out


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


class _Progress:
    """Per-service readiness that dependents wait on."""

    def __init__(self, names: list[str]) -> None:
        self.started = {n: threading.Event() for n in names}
        self.healthy = {n: threading.Event() for n in names}
        self.completed = {n: threading.Event() for n in names}
        self.failed: dict[str, str] = {}

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
       wait_healthy: bool = True, timeout: float = HEALTH_TIMEOUT) -> list[ServiceOutcome]:
    """Bring the set up; raise ``ServicesFailed`` (after trying everything) if any failed.

    ``skip`` names services not to start (disabled, stopped by the operator) with the reason;
    a skipped service that already runs is left running: stopping it is the operator's call.
    """
    skip = skip or {}
    names = servicegraph.start_order(sset.manifest.services)
    observed = observe(engine, sset.host_id, sset.version)
    actions = plan(sset, observed)
    for name, action in actions.items():
        if action is Action.REMOVE:
            engine.stop_and_remove(observed.pop(name).id, STOP_TIMEOUT, host_id=sset.host_id)
    progress = _Progress(names)
    deadline = time.monotonic() + timeout
    needs_health = {dep for n in names for dep, cond in sset.depends_on(n).items() if cond == "service_healthy"}

    def bring(name: str) -> ServiceOutcome:
        try:
            outcome = _bring_one(engine, sset, name, actions[name], observed.get(name), progress, skip, deadline,
                                 wait_healthy or name in needs_health)
        except OsctlError as exc:
            outcome = ServiceOutcome(name, ServiceResult.FAILED, exc.message)
        if outcome.result is ServiceResult.FAILED:
            progress.fail(name, outcome.detail)
        elif outcome.result is ServiceResult.SKIPPED:
            progress.fail(name, f"is not running ({outcome.detail})")
        events(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="up") as pool:
        outcomes = list(pool.map(bring, names))
    if not all(o.ok for o in outcomes):
        raise ServicesFailed(outcomes)
    return outcomes


def _bring_one(engine: Engine, sset: ServiceSet, name: str, action: Action, current: ContainerState | None,
               progress: _Progress, skip: Skip, deadline: float, wait_health: bool) -> ServiceOutcome:
    for dep, condition in sset.depends_on(name).items():
        why = progress.wait(dep, condition, deadline)
        if why is not None:
            return ServiceOutcome(name, ServiceResult.SKIPPED, f"not started: {why}", SkipReason.DEPENDENCY)
    if name in skip:
        return ServiceOutcome(name, ServiceResult.SKIPPED, skip[name].describe(), skip[name])
    spec = sset.specs[name]
    service = sset.manifest.services[name]
    result = ServiceResult.UNCHANGED
    if action is Action.RECREATE and current is not None:
        engine.stop_and_remove(current.id, STOP_TIMEOUT, host_id=sset.host_id)
        current, result = None, ServiceResult.RECREATED
    if current is None:
        if not spec.image.startswith("sha256:") and engine.image(spec.image) is None:
            engine.pull(spec.image)  # an extra service's image, named by the host's settings
        container_id = engine.create(spec)
        if result is ServiceResult.UNCHANGED:
            result = ServiceResult.CREATED
    else:
        container_id = current.id
    if current is not None and service.oneshot and current.exited_ok:
        progress.started[name].set()
        progress.completed[name].set()
        return ServiceOutcome(name, ServiceResult.COMPLETED, "already completed")
    if current is None or not current.running:
        engine.start(container_id)
        if result is ServiceResult.UNCHANGED:
            result = ServiceResult.STARTED
    progress.started[name].set()

    if service.oneshot:
        code = engine.wait(container_id, max(1.0, deadline - time.monotonic()))
        if code is None:
            return ServiceOutcome(name, ServiceResult.FAILED, "did not complete in time",
                                  logs=engine.last_lines(container_id))
        if code != 0:
            return ServiceOutcome(name, ServiceResult.FAILED, f"exited with code {code}",
                                  logs=engine.last_lines(container_id))
        progress.completed[name].set()
        return ServiceOutcome(name, ServiceResult.COMPLETED, f"{result}, exited 0")
    if service.healthcheck is not None and wait_health:
        why = wait_until_healthy(engine, container_id, spec, deadline)
        if why is not None:
            return ServiceOutcome(name, ServiceResult.FAILED, why, logs=engine.last_lines(container_id))
        progress.healthy[name].set()
    elif service.healthcheck is None:
        progress.healthy[name].set()  # nothing to wait for: running is as healthy as it gets
    return ServiceOutcome(name, result)


def wait_until_healthy(engine: Engine, container_id: str, spec: ContainerSpec, deadline: float) -> str | None:
    """Run the service's own probe until it passes; None when healthy, else why not.

    Polling the probe directly, a few times a second, notices health as soon as it is there
    instead of at the engine's next interval.
    """
    probe = spec.probe
    assert probe is not None
    pause = min(0.25, probe.interval)
    while True:
        if engine.run_probe(container_id, probe.test, probe.timeout):
            return None
        state = engine.inspect(container_id)
        if state is None:
            return "the container disappeared"
        if not state.running:
            return f"stopped (exit code {state.exit_code}) before becoming healthy"
        if time.monotonic() + pause > deadline:
            return "did not become healthy in time"
        time.sleep(pause)


def down(engine: Engine, host_id: str, version: str | None, *, manifest: ReleaseManifest | None = None,
         remove: bool = True, events: Events = ignore) -> list[str]:
    """Stop (and remove) a set's containers, dependents first; named volumes always stay.

    With the manifest, the set stops level by level (a service's dependents before it, each
    level in parallel); without it (a version no longer stored), all at once.
    """
    if version is None:  # every version's containers of this host
        groups = [[(key.service, state) for key, state in observe_host(engine, host_id).items()]]
    else:
        observed = observe(engine, host_id, version)
        order = [list(observed)]
        if manifest is not None:
            order = [[n for n in observed if n not in manifest.services],
                     *([n for n in level if n in observed] for level in reversed(servicegraph.levels(manifest.services)))]
        groups = [[(name, observed[name]) for name in names] for names in order]
    done: list[str] = []

    def stop_one(item: tuple[str, ContainerState]) -> str:
        name, container = item
        if remove:
            engine.stop_and_remove(container.id, STOP_TIMEOUT, host_id=host_id)
        else:
            engine.stop(container.id, STOP_TIMEOUT)
        events(ServiceOutcome(name, ServiceResult.REMOVED if remove else ServiceResult.STOPPED))
        return name

    for group in groups:
        with ThreadPoolExecutor(max_workers=max(1, len(group)), thread_name_prefix="down") as pool:
            done.extend(pool.map(stop_one, group))
    return done
