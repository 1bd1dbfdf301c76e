"""Bringing a version's service set up and down on the engine.

``up`` starts every service as soon as what it depends on is ready, independent services in
parallel: ``service_started`` waits for the container to run, ``service_healthy`` for its
probe to pass (osctl runs the probe itself, so nothing waits out the engine's interval),
``service_completed_successfully`` for a one-shot to exit 0. A service whose dependency failed
is not started. Containers whose spec hash matches are left alone; changed ones are
recreated; named volumes are never removed. ``down`` stops in the reverse order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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
from osctl.models.manifest import ReleaseManifest

ONESHOT_TIMEOUT = 120.0
HEALTH_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

Report = Callable[[str, str, str], None]  # service, what happened, detail


@dataclass(frozen=True)
class ServiceSet:
    """The containers one version needs on one host."""

    host_id: str
    version: str
    manifest: ReleaseManifest
    specs: dict[str, ContainerSpec]

    def depends_on(self, name: str) -> dict[str, str]:
        return {dep: rule.condition for dep, rule in self.manifest.services[name].depends_on.items()}


@dataclass
class Outcome:
    service: str
    result: str  # created, recreated, started, unchanged, completed, skipped, failed
    detail: str = ""
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result not in ("failed",)


class ServicesFailed(ServiceFailed):
    """``up`` could not bring every service up; the outcome of each is attached."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        failed = [o for o in outcomes if o.result == "failed"]
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


def observe(engine: Engine, host_id: str, version: str | None = None) -> dict[str, ContainerState]:
    """The host's system containers (of one version, or all) by service name, as the engine says."""
    labels = {**host_labels(host_id), LABEL_ROLE: ROLE_SERVICE}
    if version is not None:
        labels[LABEL_VERSION] = version
    out: dict[str, ContainerState] = {}
    for info in engine.containers(labels):
        state = engine.inspect(info.id)
        if state is not None:
            out[f"{state.labels.get(LABEL_SERVICE)}@{state.labels.get(LABEL_VERSION)}" if version is None
                else state.labels.get(LABEL_SERVICE, "?")] = state
    return out


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


def up(engine: Engine, sset: ServiceSet, *, skip: dict[str, str] | None = None, report: Report | None = None,
       wait_healthy: bool = True, timeout: float = HEALTH_TIMEOUT) -> list[Outcome]:
    """Bring the set up; raise ``ServicesFailed`` (after trying everything) if any failed.

    ``skip`` names services not to start (disabled, stopped by the operator) with the reason.
    """
    skip = skip or {}
    report = report or (lambda *_args: None)
    names = servicegraph.start_order(sset.manifest.services)
    observed = observe(engine, sset.host_id, sset.version)
    _remove_strays(engine, observed, sset, skip)
    progress = _Progress(names)
    deadline = time.monotonic() + timeout
    needs_health = {dep for n in names for dep, cond in sset.depends_on(n).items() if cond == "service_healthy"}

    def bring(name: str) -> Outcome:
        try:
            outcome = _bring_one(engine, sset, name, observed.get(name), progress, skip, deadline,
                                 wait_healthy or name in needs_health)
        except OsctlError as exc:
            outcome = Outcome(name, "failed", exc.message)
        if outcome.result in ("failed", "skipped"):
            progress.fail(name, outcome.detail if outcome.result == "failed" else f"is not running ({outcome.detail})")
        report(name, outcome.result, outcome.detail)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="up") as pool:
        outcomes = list(pool.map(bring, names))
    if any(o.result == "failed" for o in outcomes):
        raise ServicesFailed(outcomes)
    return outcomes


def _bring_one(engine: Engine, sset: ServiceSet, name: str, current: ContainerState | None,
               progress: _Progress, skip: dict[str, str], deadline: float, wait_health: bool) -> Outcome:
    for dep, condition in sset.depends_on(name).items():
        why = progress.wait(dep, condition, deadline)
        if why is not None:
            return Outcome(name, "skipped", f"not started: {why}")
    if name in skip:
        return Outcome(name, "skipped", skip[name])
    spec = sset.specs[name]
    service = sset.manifest.services[name]
    result = "unchanged"
    if current is not None and current.labels.get(LABEL_SPEC_HASH) != spec.labels[LABEL_SPEC_HASH]:
        engine.stop(current.id, STOP_TIMEOUT)
        engine.remove_container(current.id)
        current, result = None, "recreated"
    if current is None:
        if not spec.image.startswith("sha256:") and engine.image(spec.image) is None:
            engine.pull(spec.image)  # an extra service's image, named by the host's settings
        container_id = engine.create(spec)
        result = "created" if result == "unchanged" else result
    else:
        container_id = current.id
    already_done = current is not None and service.oneshot and current.status == "exited" and current.exit_code == 0
    if already_done:
        progress.started[name].set()
        progress.completed[name].set()
        return Outcome(name, "completed", "already completed")
    if current is None or not current.running:
        engine.start(container_id)
        result = "started" if result == "unchanged" else result
    progress.started[name].set()

    if service.oneshot:
        code = engine.wait(container_id, max(1.0, deadline - time.monotonic()))
        if code is None:
            return Outcome(name, "failed", "did not complete in time", engine.last_lines(container_id))
        if code != 0:
            return Outcome(name, "failed", f"exited with code {code}", engine.last_lines(container_id))
        progress.completed[name].set()
        return Outcome(name, "completed", f"{result}, exited 0")
    if service.healthcheck is not None and wait_health:
        why = wait_until_healthy(engine, container_id, spec, deadline)
        if why is not None:
            return Outcome(name, "failed", why, engine.last_lines(container_id))
        progress.healthy[name].set()
    elif service.healthcheck is None:
        progress.healthy[name].set()  # nothing to wait for: running is as healthy as it gets
    return Outcome(name, result)


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


def _remove_strays(engine: Engine, observed: dict[str, ContainerState], sset: ServiceSet,
                   skip: dict[str, str]) -> None:
    """Containers of this version for services its manifest does not have.

    Services in ``skip`` are only not started: stopping one is the operator's call
    (``osctl service stop``), never a side effect of bringing the others up.
    """
    for name, state in list(observed.items()):
        if name not in sset.specs:
            engine.stop(state.id, STOP_TIMEOUT)
            engine.remove_container(state.id)
            del observed[name]


def down(engine: Engine, host_id: str, version: str | None, *, manifest: ReleaseManifest | None = None,
         remove: bool = True, report: Report | None = None) -> list[str]:
    """Stop (and remove) a set's containers, dependents first; named volumes always stay."""
    report = report or (lambda *_args: None)
    observed = observe(engine, host_id, version)
    if manifest is not None:
        groups = [[n for n in level if n in observed] for level in reversed(servicegraph.levels(manifest.services))]
        rest = [n for n in observed if n not in manifest.services]
        groups = [rest, *groups]
    else:
        groups = [list(observed)]
    done: list[str] = []
    for group in groups:
        def stop_one(name: str) -> str:
            state = observed[name]
            engine.stop(state.id, STOP_TIMEOUT)
            if remove:
                engine.remove_container(state.id)
            report(name, "removed" if remove else "stopped", "")
            return name

        with ThreadPoolExecutor(max_workers=max(1, len(group)), thread_name_prefix="down") as pool:
            done.extend(pool.map(stop_one, group))
    return done
