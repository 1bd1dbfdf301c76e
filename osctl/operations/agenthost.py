"""What the update agent does to its own host, behind one small interface.

The agent's own logic (gates, rollout, queue, slots, what it publishes) is the same whether the
host is this machine or a stand-in: ``LocalHost`` does the real work (pull, transaction, boot
pointer, the agent's memory), and the fleet simulator (bench/fleetsim.py) passes its own timed
stand-in to run a thousand agents' real loops against a real etcd without a thousand engines.
The interface is what the agent needs and nothing more, so a stand-in cannot drift from it
unnoticed: the type checker holds both to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from osctl.adapters.locking import host_lock
from osctl.adapters.statefile import Damage, StateFile
from osctl.domain import bootpointer
from osctl.domain.journal import Journal
from osctl.domain.store import Store
from osctl.models.events import Events, ignore
from osctl.models.fleet import AgentMemory
from osctl.models.version import OsVersion
from osctl.operations import transaction
from osctl.operations.pull import pull_version

if TYPE_CHECKING:
    from osctl.adapters.engine import Engine
    from osctl.domain.settings import Settings

AGENT_STATE = "var/lib/osctl/agent.json"  # the versions that rolled back on this host


@dataclass(frozen=True)
class Swapped:
    """How a swap ended: ``committed`` (the target runs and is healthy) or ``rolled-back`` (the
    previous version runs again; ``detail`` says why)."""

    result: str
    detail: str
    seconds: float = 0.0


class HostWork(Protocol):
    """The host as the agent sees it."""

    def running(self) -> str | None:
        """The version the host runs (the boot pointer's default), or None on a fresh host."""

    def next_boot(self) -> str | None:
        """The version the next boot starts, when it differs from a plain boot of ``running``."""

    def stored(self, version: str) -> bool:
        """Whether the version is stored here (a swap to it needs no download)."""

    def stage(self, version: str) -> None:
        """Download and store the version; ``TrustError`` when the release keys do not vouch for
        it, another ``OsctlError`` when it cannot be had now."""

    def swap(self, version: str) -> Swapped:
        """Replace the running version by a stored one; ``TrustError`` (nothing changed) when it
        is no longer vouched for."""

    def recover(self) -> str | None:
        """Finish what a crash interrupted; a line saying what, or None."""

    def failed_versions(self) -> set[str]:
        """Versions that failed here before: never taken again by the agent itself."""

    def remember_failed(self, version: str) -> None:
        """Add one to ``failed_versions``, durably."""


class LocalHost:
    """This host: its root, its engine."""

    def __init__(self, settings: Settings, engine: Engine, events: Events = ignore) -> None:
        self.settings, self.engine, self.events = settings, engine, events

    def running(self) -> str | None:
        return transaction.current_version(self.settings)

    def next_boot(self) -> str | None:
        return bootpointer.read(self.settings.root).next_boot

    def stored(self, version: str) -> bool:
        return Store(self.settings.root).get(version) is not None

    def stage(self, version: str) -> None:
        pull_version(self.settings, self.engine, version)

    def swap(self, version: str) -> Swapped:
        running = self.running()
        kind = "upgrade" if running is None or OsVersion.parse(version) > OsVersion.parse(running) else "downgrade"
        plan = transaction.decide(self.settings, kind, version)  # TrustError: stored, then revoked
        try:
            outcome = transaction.run(self.settings, self.engine, plan,
                                      health_timeout=self.settings.file.boot.health_timeout)
        except transaction.TransactionFailed as exc:
            return Swapped("rolled-back", exc.message)
        return Swapped(outcome.result, f"{running or 'nothing'} -> {version}: {outcome.result} "
                                       f"in {outcome.seconds:.1f} s", outcome.seconds)

    def recover(self) -> str | None:
        with host_lock(self.settings.root, "agent: recover"):
            return transaction.recover(self.settings, self.engine, self.events)

    def failed_versions(self) -> set[str]:
        """Versions that rolled back under the agent, and trials a boot gave up on (the loader
        abandoned them, or they were unhealthy)."""
        trials = {e.to_version for e in Journal(self.settings.root).history().entries
                  if e.kind == "boot" and e.result == "rolled-back" and e.to_version}
        return set(self._memory().load().failed_versions) | trials

    def remember_failed(self, version: str) -> None:
        failed = set(self._memory().load().failed_versions) | {version}
        self._memory().write(AgentMemory(failed_versions=sorted(failed)))

    def _memory(self) -> StateFile[AgentMemory]:
        return StateFile(self.settings.root / AGENT_STATE, AgentMemory, Damage.RAISE, "the agent's state",
                         hint="delete it: the agent then forgets which versions rolled back here")
