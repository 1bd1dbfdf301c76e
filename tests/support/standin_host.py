"""A host whose engine work is a timed stand-in, for running many real agents in one process.

The agent's loop, its etcd adapter and etcd itself are real; only ``HostWork`` is simulated:
``stage`` and ``swap`` sleep for a while (a stop event cuts the sleep short), and a swap to a
version in ``broken`` rolls back. Used by tests/etcd/test_agent_queue.py; bench/fleetsim.py has
its own, with the timings of a benchmark.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from osctl.operations.agenthost import Swapped


@dataclass
class StandInHost:
    running_version: str | None
    stage_seconds: float = 0.0
    swap_seconds: float = 0.0
    broken: frozenset[str] = frozenset()
    stop: threading.Event = field(default_factory=threading.Event)
    stored_versions: set[str] = field(default_factory=set)
    swaps: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)

    def running(self) -> str | None:
        return self.running_version

    def next_boot(self) -> str | None:
        return None

    def stored(self, version: str) -> bool:
        return version in self.stored_versions

    def stage(self, version: str) -> None:
        self.stop.wait(self.stage_seconds)
        self.stored_versions.add(version)

    def swap(self, version: str) -> Swapped:
        self.swaps.append(version)
        self.stop.wait(self.swap_seconds)
        if version in self.broken:
            return Swapped("rolled-back", f"{version} rolled back: service web unhealthy")
        self.running_version = version
        return Swapped("committed", f"-> {version}: committed in {self.swap_seconds:.1f} s", self.swap_seconds)

    def recover(self) -> str | None:
        return None

    def failed_versions(self) -> set[str]:
        return set(self.failed)

    def remember_failed(self, version: str) -> None:
        self.failed.add(version)
