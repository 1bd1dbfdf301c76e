"""What ``osctl supervise`` and ``osctl agent`` export to Prometheus (docs/metrics.md).

Collectors, not instruments sprinkled through the code: ``HostCollector`` reads the host's own
records at each scrape (the boot pointer, services.json, supervisor.json, the journal's
history) and asks the engine which containers run, so what Prometheus sees is what
``osctl status`` would say at that moment, whichever process serves it. ``AgentMetrics`` is fed
by the agent's ``on_tick`` hook, since where a check stopped lives only in the agent.

A scrape takes no lock: every file it reads is replaced whole by a rename, so a read sees the
old or the new one, never half of either. A part that cannot be read (the engine away, a
damaged journal) is left out of that scrape and counted in ``osctl_metrics_errors_total``; the
other parts are still served, and nothing of it reaches the supervisor or the agent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from osctl.constants import LABEL_SERVICE
from osctl.domain import bootpointer, servicestate
from osctl.domain.journal import Journal
from osctl.domain.naming import system_labels
from osctl.errors import OsctlError
from osctl.models.events import AgentEvent, Event
from osctl.models.fleet import HostPhase, Rollout
from osctl.models.journal import Kind, Result
from osctl.models.services import ServicesState
from osctl.operations import serviceset

if TYPE_CHECKING:
    from osctl.adapters.engine import Engine
    from osctl.domain.settings import Settings
    from osctl.operations.agent import Step

KINDS: tuple[str, ...] = get_args(Kind)
RESULTS: tuple[str, ...] = tuple(r for r in get_args(Result) if r != "in-progress")  # a finished one's
PHASES: tuple[str, ...] = get_args(HostPhase)
PARTS = ("versions", "transactions", "services", "engine")
_RUNNING = frozenset({"running", "paused", "restarting"})  # as the engine's listing says it (hoststatus too)


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class HostCollector(Collector):
    """The host as its records and the engine say it is, read at every scrape.

    ``engine_factory`` makes the collector's own engine client (scrapes come from the server's
    threads; the supervisor's client belongs to its loop): made at the first scrape, dropped
    after a failure and made again at the next.
    """

    def __init__(self, settings: Settings, engine_factory: Callable[[], Engine]) -> None:
        self.settings = settings
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._lock = threading.Lock()  # one scrape at a time: they share the engine and the counts
        self._transactions: Counter[tuple[str, str]] = Counter()
        self._seen: set[str] = set()  # ids of history entries already counted
        self._errors: Counter[str] = Counter()

    def describe(self) -> Iterable[Metric]:
        return []  # nothing collected at registration: the host may not even have its files yet

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            found: list[Metric] = []
            for part, read in (("versions", self._versions), ("transactions", self._history),
                               ("services", self._services)):
                try:
                    found += read()
                except (OsctlError, OSError):
                    self._errors[part] += 1
            errors = CounterMetricFamily("osctl_metrics_errors", "Scrapes that could not read a part of the host's "
                                         "state (the part is left out of that scrape)", labels=["part"])
            for part in PARTS:
                errors.add_metric([part], self._errors[part])
            return [*found, errors]

    def close(self) -> None:
        with self._lock:
            self._drop_engine()

    # ------------------------------------------------------------------ parts

    def _versions(self) -> list[Metric]:
        root = self.settings.root
        pointer = bootpointer.read(root)
        state = servicestate.read_services(root)
        info = InfoMetricFamily("osctl_host", "The host: the version whose services run (osctl status: active) "
                                "and the version the next boot starts", labels=["host_id", "running", "next_boot"])
        info.add_metric([self.settings.host_id, state.version or "", pointer.next_boot or ""], {})
        return [info]

    def _history(self) -> list[Metric]:
        """Counters from the journal's history, which keeps the last 100 entries: each entry is
        counted once, when this process first sees it, so the counters only grow as old entries
        leave the history (a restart starts them from the entries still in it)."""
        journal = Journal(self.settings.root)
        entries = journal.history().entries
        for entry in entries:
            if entry.id not in self._seen:
                self._transactions[(entry.kind, entry.result)] += 1
        self._seen = {entry.id for entry in entries}
        total = CounterMetricFamily("osctl_transactions", "Version changes finished on this host, by kind "
                                    "(upgrade, downgrade, rollback, install, stage, boot) and result (committed, "
                                    "rolled-back, aborted)", labels=["kind", "result"])
        for kind in KINDS:
            for result in RESULTS:
                total.add_metric([kind, result], self._transactions[(kind, result)])
        found: list[Metric] = [total]
        if entries:
            last = entries[-1]
            info = InfoMetricFamily("osctl_last_transaction", "The last version change that finished on this host",
                                    labels=["kind", "result", "from_version", "to_version"])
            info.add_metric([last.kind, last.result, last.from_version or "", last.to_version], {})
            found.append(info)
            finished = _timestamp(last.finished_at)
            if finished is not None:
                found.append(GaugeMetricFamily("osctl_last_transaction_timestamp_seconds",
                                               "When the last version change finished (Unix time)", value=finished))
        current = journal.current()
        found.append(GaugeMetricFamily("osctl_transaction_in_progress", "1 while a version change is under way "
                                       "(or was cut short and awaits recovery)", value=1 if current else 0))
        return found

    def _services(self) -> list[Metric]:
        root, host_id = self.settings.root, self.settings.host_id
        state = servicestate.read_services(root)
        status = servicestate.read_supervisor(root)
        version = state.version
        if version is None:
            return []
        try:
            services = serviceset.load_service_set(host_id, root, version).manifest.services
            long_running = {name for name, spec in services.items() if not spec.oneshot}
            names = set(services)
        except OsctlError:  # not stored any more, or unreadable: the containers still say what runs
            long_running, names = set(), set()
        running = self._running(version)
        found: list[Metric] = []
        if running is not None:
            found += self._up(state, running, long_running | (set(running) - names))
        names |= set(running or ()) | set(status.services)
        restarts = CounterMetricFamily("osctl_service_restarts", "Restarts of the service by the supervisor "
                                       "(kept in supervisor.json across supervisor restarts)", labels=["service"])
        failed = GaugeMetricFamily("osctl_service_failed", "1 when the supervisor gave up on the service after "
                                   "too many failures in a row (osctl service start clears it)", labels=["service"])
        for name in sorted(names):
            record = status.services.get(name)
            restarts.add_metric([name], record.restarts if record else 0)
            failed.add_metric([name], 1 if record and record.failed else 0)
        return [*found, restarts, failed]

    def _running(self, version: str) -> dict[str, bool] | None:
        """Service -> whether its container of ``version`` runs, from one listing; None (and the
        error counted) when the engine cannot say: the restarts are still served."""
        try:
            listed = self._engine_client().containers(system_labels(self.settings.host_id, version))
        except (OsctlError, OSError):
            self._errors["engine"] += 1
            self._drop_engine()
            return None
        return {c.labels.get(LABEL_SERVICE, "?"): c.state in _RUNNING for c in listed}

    @staticmethod
    def _up(state: ServicesState, running: dict[str, bool], long_running: set[str]) -> list[Metric]:
        """Up and wanted for each long-running service (a one-shot is done when it is not running)."""
        up = GaugeMetricFamily("osctl_service_up", "1 when the service's container runs (long-running services "
                               "of the active version)", labels=["service"])
        wanted = GaugeMetricFamily("osctl_service_wanted", "1 when osctl keeps the service running: the set is up, "
                                   "and the service is neither stopped nor disabled", labels=["service"])
        for name in sorted(long_running):
            up.add_metric([name], 1 if running.get(name) else 0)
            keep = state.desired == "up" and name not in state.stopped and name not in state.disabled
            wanted.add_metric([name], 1 if keep else 0)
        return [up, wanted]

    def _engine_client(self) -> Engine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    def _drop_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - a client that failed may fail to close too; it is dropped anyway
                pass


class AgentMetrics(Collector):
    """The agent's last check, fed by its ``on_tick`` hook (called in the agent's thread, read in
    the server's: a lock keeps the two views whole).

    A check that swaps lasts minutes, and ``on_tick`` comes only at its end: ``on_event`` (the
    agent's events, which name each phase it enters) moves the phase meanwhile, so a scrape
    during a swap says ``swapping``, not the phase of the check before.
    """

    def __init__(self, group: str | None, clock: Callable[[], float] = time.time) -> None:
        self.group = group  # None: the agent runs alone, without a fleet
        self._clock = clock
        self._lock = threading.Lock()
        self._step: Step | None = None
        self._phase: str | None = None  # the phase entered last (an event, or the end of a check)
        self._rollout: Rollout | None = None
        self._checked_at: float | None = None
        self._checks: Counter[str] = Counter()

    def on_tick(self, step: Step, rollout: Rollout | None) -> None:
        with self._lock:
            self._step, self._rollout, self._checked_at = step, rollout, self._clock()
            self._phase = step.phase
            self._checks[step.phase] += 1

    def on_event(self, event: Event) -> None:
        """An agent event that names a phase (``staging``, ``swapping``, ...) is where it is now."""
        if isinstance(event, AgentEvent) and event.what in PHASES:
            with self._lock:
                self._phase = event.what

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            step, rollout, checked_at, checks = self._step, self._rollout, self._checked_at, Counter(self._checks)
            current = self._phase
        phase = GaugeMetricFamily("osctl_agent_phase", "1 for the agent's phase (where its last check stopped, or "
                                  "the one a check in progress entered), 0 for the others", labels=["phase"])
        for name in PHASES:
            phase.add_metric([name], 1 if current == name else 0)
        total = CounterMetricFamily("osctl_agent_checks", "The agent's checks, by the phase where each one stopped "
                                    "(its outcome)", labels=["phase"])
        for name in PHASES:
            total.add_metric([name], checks[name])
        found: list[Metric] = [phase, total]
        if checked_at is not None:
            found.append(GaugeMetricFamily("osctl_agent_last_check_timestamp_seconds",
                                           "When the agent's last check ended (Unix time)", value=checked_at))
        if step is not None and step.target is not None:
            target = InfoMetricFamily("osctl_agent_target", "The version the agent converges to",
                                      labels=["target"])
            target.add_metric([step.target], {})
            found.append(target)
        if rollout is not None:
            info = InfoMetricFamily("osctl_agent_rollout", "The group's rollout, as the agent last read it",
                                    labels=["group", "target", "state"])
            info.add_metric([self.group or "", rollout.target, rollout.state], {})
            failures = GaugeMetricFamily("osctl_agent_rollout_failures", "Hosts the rollout counts as failed")
            failures.add_metric([], len(rollout.failures))
            budget = GaugeMetricFamily("osctl_agent_rollout_failure_budget",
                                       "Failed hosts after which the rollout pauses for everyone")
            budget.add_metric([], rollout.failure_budget)
            found += [info, failures, budget]
        return found


def host_registry(settings: Settings, engine_factory: Callable[[], Engine],
                  agent: AgentMetrics | None = None) -> tuple[CollectorRegistry, HostCollector]:
    """A registry of osctl's own (never the library's global one, which would also carry the
    Python process's metrics under no ``osctl_`` name and be shared by every test in a process)."""
    registry = CollectorRegistry(auto_describe=False)
    host = HostCollector(settings, engine_factory)
    registry.register(host)
    if agent is not None:
        registry.register(agent)
    return registry, host
