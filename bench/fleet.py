"""Fleet: the scale bench's hosts upgraded once more, this time by their own ``osctl agent``
through a rollout in etcd, against the ideal ceil(hosts / max-concurrent) x one host's upgrade.

Used by bench/scale.py (``--fleet``, on by default in bench/run): the hosts are already
installed there, and "one host's upgrade" is the median of its one-after-the-other upgrades,
measured minutes before on the same machine. A one-member etcd on loopback is started here and
removed at the end. Every host gets an agent (check interval 5 minutes: it waits on etcd watches);
``osctl fleet rollout --to V --max-concurrent N`` starts the rollout, and the figure is the time
from that command until ``fleet status`` shows every host on V with no slot taken. Like the
``osctl upgrade`` of the ideal, each agent pulls the version (the engine has its layers after
the first), but all of them at once while the rollout stages, before any slot is handed out;
the staging part is reported beside. The highest number of hosts swapping at once is read back from etcd's history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from common import BenchHost, Figure, Row, figure, say
from osctl.adapters.etcd import Etcd
from tests.support import fleet_sim
from tests.support.etcd_cluster import EtcdCluster

GROUP = "bench-fleet"
CHECK_INTERVAL = "5m"  # a safety net only: the agents wait on etcd watches


@dataclass
class FleetRollout:
    """Agents for ``hosts`` on a fresh etcd; ``run`` measures one rollout; ``close`` ends it all."""

    hosts: Sequence[BenchHost]
    logdir: object
    cluster: EtcdCluster | None = None
    agents: fleet_sim.Agents | None = None
    notes: list[str] = field(default_factory=list)

    def run(self, version: str, max_concurrent: int, one_host: Figure, at_a_time: Figure
            ) -> tuple[list[Figure], list[Row]]:
        """``one_host``: one host's upgrade (the ideal's unit); ``at_a_time``: the same hosts upgraded
        ``max_concurrent`` at once by plain ``osctl upgrade`` calls, the peer: the same concurrency
        with no coordination, so the ratio is what the agents and etcd add."""
        self.cluster = cluster = EtcdCluster(1).start()
        endpoints = cluster.endpoints
        for host in self.hosts:
            fleet_sim.write_config(host, endpoints, GROUP, check_interval=CHECK_INTERVAL, health_timeout="60s")
        self.agents = agents = fleet_sim.Agents(self.logdir, lease_ttl=10)  # type: ignore[arg-type]
        for host in self.hosts:
            agents.start(host)
        n, k = len(self.hosts), max_concurrent
        fleet_sim.wait_until(lambda: len(fleet_sim.fleet_status(endpoints, GROUP)["hosts"]) == n, 120,
                             "every agent to publish its state")
        say(f"scale: {n} hosts upgrade to {version} by their agents, one etcd rollout, at most {k} at once ...")
        with Etcd(endpoints) as etcd:
            since = etcd.revision() + 1
            started = time.perf_counter()
            proc = fleet_sim.fleet_cli(endpoints, GROUP, "rollout", "--to", version, "--max-concurrent", str(k),
                                       "--no-check")
            if proc.returncode != 0:
                raise SystemExit(f"osctl fleet rollout: {proc.stderr.strip()}")

            staged_at: list[float] = []

            def done() -> bool:
                status = fleet_sim.fleet_status(endpoints, GROUP)
                if not staged_at and status["rollout"]["state"] != "staging":
                    staged_at.append(time.perf_counter() - started)
                return status["progress"]["on_target"] == n and not status["slots"]

            fleet_sim.wait_until(done, 900, "every host on the target", every=0.25)
            total = time.perf_counter() - started
            record = fleet_sim.replay(etcd, GROUP, since)
        ideal = figure(f"  ideal: ceil({n}/{k}) x one host's upgrade", [math.ceil(n / k) * one_host.median])
        f_total = figure(f"{n} hosts by their agents, etcd rollout, max {k}: total", [total])
        most = figure("  hosts swapping at once, most (etcd's history)", [record.max_swapping], unit="hosts")
        staging = figure("  of which staging: every host pulls, nobody swaps", staged_at or [total])
        self.notes.append(f"  fleet: the rollout took {total / ideal.median:.2f}x the ideal and "
                          f"{total / at_a_time.median:.2f}x {k} plain upgrades at a time; at most "
                          f"{record.max_swapping} hosts swapped at once (limit {k}); the rollout staged first "
                          f"({staging.median:.1f} s: every host pulled before any swapped), and a freed slot "
                          "wakes the next host in the queue through an etcd watch")
        peer = figure(f"  peer: {n} hosts, {k} plain upgrades at a time", [at_a_time.median])
        row = Row(f"{n} hosts, etcd rollout max {k}: total", f_total, peer=peer, floor=ideal)
        return [f_total, staging, ideal, most], [row]

    def close(self) -> None:
        if self.agents is not None:
            self.agents.stop_all()
        if self.cluster is not None:
            self.cluster.close()
