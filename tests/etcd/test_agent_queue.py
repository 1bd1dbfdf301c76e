"""Real agents (their loop, the etcd adapter, a real three-member cluster) on stand-in hosts:
a rollout stages first, then hosts take slots in queue order, never more than the limit, each
waking on an etcd change rather than asking again and again. Checked from etcd's history."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from osctl.adapters.etcd import Etcd
from osctl.domain import fleetkeys, fleetstate
from osctl.domain.settings import Settings
from osctl.errors import EtcdUnavailable
from osctl.models.fleet import Rollout
from osctl.operations.agent import Agent
from tests.support import fleet_sim
from tests.support.etcd_cluster import EtcdCluster
from tests.support.standin_host import StandInHost
from tests.support.waiting import wait_for


class Group:
    """In-process agents of one group, each on its own thread with a stand-in host."""

    def __init__(self, cluster: EtcdCluster, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.group = f"osctltest-{uuid.uuid4().hex[:8]}"
        self.etcd = Etcd(cluster.endpoints)
        self.stop = threading.Event()
        self.agents: list[Agent] = []
        self.hosts: list[StandInHost] = []
        self.threads: list[threading.Thread] = []

    def start(self, count: int, *, stage: Callable[[int], float], swap: float, policy: str = "auto") -> None:
        for i in range(count):
            root = self.root / f"h{i:02d}"
            (root / "etc/osctl").mkdir(parents=True)
            (root / "etc/osctl/config.yaml").write_text(
                f"update: {{policy: {policy}, check_interval: 10m}}\n"
                f"fleet: {{etcd: [{', '.join(self.cluster.endpoints)}], group: {self.group}}}\n")
            settings = Settings(env={"OSCTL_ROOT": str(root), "OSCTL_HOST_ID": f"{self.group}-h{i:02d}"})
            host = StandInHost("v1.4", stage_seconds=stage(i), swap_seconds=swap, stop=self.stop)
            agent = Agent(settings, host, lease_ttl=10)
            thread = threading.Thread(target=agent.run, args=(self.stop,), daemon=True)
            self.agents.append(agent)
            self.hosts.append(host)
            self.threads.append(thread)
            thread.start()
        wait_for(lambda: len(fleetstate.read_hosts(self.etcd, self.group)) == count, 20, "every agent to publish")

    def roll_out(self, target: str, max_concurrent: int, *, stage_for: float | None = 60.0) -> int:
        now = datetime.now(UTC)
        rollout = Rollout(target=target, max_concurrent=max_concurrent, seed=7, failure_budget=2,
                          state="staging" if stage_for else "active", started_at=now, updated_at=now,
                          stage_deadline=now + timedelta(seconds=stage_for) if stage_for else None)
        return fleetstate.write_rollout(self.etcd, self.group, rollout)

    def on(self, version: str) -> int:
        return sum(1 for h in self.hosts if h.running_version == version)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        try:
            self.etcd.delete_prefix(fleetkeys.group_prefix(self.group))
        except EtcdUnavailable:
            pass
        self.etcd.close()


@pytest.fixture
def group(etcd_cluster: EtcdCluster, tmp_path: Path) -> Iterator[Group]:
    made = Group(etcd_cluster, tmp_path)
    yield made
    made.close()


def test_a_rollout_stages_everyone_first_then_swaps_in_queue_order(group: Group) -> None:
    group.start(12, stage=lambda i: 0.1 + 0.05 * i, swap=0.4)
    since = group.etcd.revision() + 1
    before = {id(a): sum(a.etcd.requests.values()) for a in group.agents}  # type: ignore[union-attr]
    group.roll_out("v1.5", 3)
    wait_for(lambda: group.on("v1.5") == 12, 60, lambda: f"{group.on('v1.5')} of 12 on v1.5")
    wait_for(lambda: not group.etcd.get_prefix(fleetkeys.slots_prefix(group.group)), 10, "every slot given back")

    events = group.etcd.history(fleetkeys.group_prefix(group.group), since)
    marks = [e.revision for e in events if e.key.startswith(fleetkeys.staged_prefix(group.group)) and e.kind == "put"]
    active = [e.revision for e in events if e.key == fleetkeys.rollout_key(group.group) and e.value.get("state") == "active"]
    swapping = [e.revision for e in events if e.kind == "put" and e.value.get("phase") == "swapping"]
    assert len(marks) == 12, "every host said it staged"
    assert active and active[0] > max(marks), "staging ended with the last host's mark, not before"
    assert min(swapping) > active[0], "nobody swapped while the rollout staged"
    record = fleet_sim.replay(group.etcd, group.group, since)
    assert 2 <= record.max_swapping <= 3, record.max_swapping
    assert record.swapping_without_slot == []
    assert set(record.swaps.values()) == {1} and len(record.swaps) == 12
    # waiting hosts were woken by etcd, not by asking: a host's whole rollout is a few dozen requests
    spent = [sum(a.etcd.requests.values()) - before[id(a)] for a in group.agents]  # type: ignore[union-attr]
    assert max(spent) < 30, spent


def test_a_pause_empties_the_queue_and_a_resume_fills_it_again(group: Group) -> None:
    group.start(6, stage=lambda i: 0.0, swap=1.0)
    group.roll_out("v1.5", 1, stage_for=None)
    queue_prefix = fleetkeys.queue_prefix(group.group)
    wait_for(lambda: len(group.etcd.get_prefix(queue_prefix)) >= 4, 20, "hosts queued behind the one slot")
    fleetstate.update_rollout(group.etcd, group.group, lambda r: r.model_copy(update={"state": "paused"}))
    wait_for(lambda: not group.etcd.get_prefix(queue_prefix), 20, "the queue emptied by the pause")
    on_pause = group.on("v1.5")
    assert on_pause <= 2, "at most the host swapping when it paused finished (and one already done)"
    fleetstate.update_rollout(group.etcd, group.group, lambda r: r.model_copy(update={"state": "active"}))
    wait_for(lambda: group.on("v1.5") == 6, 30, lambda: f"{group.on('v1.5')} of 6 on v1.5 after the resume")
