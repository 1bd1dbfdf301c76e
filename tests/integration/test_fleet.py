"""Fleets: simulated hosts with their own ``osctl agent`` roll out versions through a real
three-member etcd cluster. What happened is checked from etcd's recorded history and from the
engine, not from what the agents say."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from osctl.adapters.etcd import Etcd
from osctl.domain import fleetkeys
from tests.support import fleet_sim, registry_tools
from tests.support.etcd_cluster import EtcdCluster
from tests.support.hosts import OS_REPO, Host, shipped_manifest
from tests.support.services import LONG_RUNNING

# Dozens of agent processes and timing they assert (leases, health gates): never beside other tests.
pytestmark = pytest.mark.alone


def running_set(client: docker.DockerClient, host: Host) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for c in client.containers.list(filters={"label": f"io.osctl.host={host.host_id}"}):
        if c.labels.get("io.osctl.role") == "service":
            found.setdefault(c.labels["io.osctl.version"], set()).add(c.labels["io.osctl.service"])
    return found


class Fleet:
    """A group of simulated hosts on the session's etcd cluster."""

    def __init__(self, cluster: EtcdCluster, make_host: Callable[[], Host], logdir: Path, size: int, image: str,
                 lease_ttl: int = 3, health_timeout: str = "20s") -> None:
        self.cluster, self.group = cluster, f"g{uuid.uuid4().hex[:8]}"
        self.hosts = [make_host() for _ in range(size)]
        for host in self.hosts:
            host.image = image
            fleet_sim.write_config(host, cluster.endpoints, self.group, health_timeout=health_timeout)
        self.agents = fleet_sim.Agents(logdir, lease_ttl=lease_ttl)
        self.etcd = Etcd(cluster.endpoints)

    def cli(self, *args: str) -> str:
        proc = fleet_sim.fleet_cli(self.cluster.endpoints, self.group, *args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def status(self) -> dict[str, object]:
        return fleet_sim.fleet_status(self.cluster.endpoints, self.group)

    def hosts_on(self, version: str) -> int:
        hosts = self.status()["hosts"]
        assert isinstance(hosts, list)
        return sum(1 for h in hosts if h["running"] == version and h["phase"] in ("idle", "healthy"))

    def describe(self) -> str:
        status = self.status()
        return f"by_version={status['by_version']} by_phase={status['by_phase']} slots={status['slots']}"

    def close(self) -> None:
        self.agents.stop_all()
        self.etcd.close()


@pytest.fixture(scope="module")
def quiet_os(docker_client: docker.DockerClient, registry: str) -> Iterator[str]:
    """The shipped versions, each built FROM itself with the engine's background health probes
    once a minute (``fleet_sim.quiet_probes``), in a repository of this module's own. The service
    sets, images and osctl's health gates are the shipped ones; dozens of hosts probing every
    second would keep two cores busy with ``docker exec`` alone."""
    repo = f"{registry}/osctl-test/{uuid.uuid4().hex[:8]}/os"
    refs = [registry_tools.os_version_variant(docker_client, f"{OS_REPO}:{v}", repo, v,
                                              fleet_sim.quiet_probes(shipped_manifest(v)))
            for v in ("v1.3", "v1.4", "v1.5", "v1.6")]
    yield repo
    registry_tools.remove_variants(docker_client, registry, repo, refs)


@pytest.fixture
def fleet(etcd_cluster: EtcdCluster, make_host: Callable[[], Host], tmp_path: Path,
          quiet_os: str) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(size: int, **options: object) -> Fleet:
        made.append(Fleet(etcd_cluster, make_host, tmp_path, size, quiet_os, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for f in made:
        f.close()


@pytest.mark.timeout(900)  # 20 agents and 20 swaps on 2 cores: about 5 minutes in CI
def test_twenty_hosts_roll_out_three_at_a_time_through_a_member_outage(
        fleet: Callable[..., Fleet], docker_client: docker.DockerClient) -> None:
    f = fleet(20, health_timeout="60s")
    fleet_sim.install_all(f.hosts, "v1.3")
    for host in f.hosts:
        f.agents.start(host)
    fleet_sim.wait_until(lambda: len(f.status()["hosts"]) == 20, 60, f.describe)  # type: ignore[arg-type]
    since = f.etcd.revision() + 1
    f.cli("rollout", "--to", "v1.5", "--max-concurrent", "3")
    fleet_sim.wait_until(lambda: f.hosts_on("v1.5") >= 5, 120, f.describe)
    stopped = f.cluster.leader() or 0
    f.cluster.stop_member(stopped)  # one member down (the leader) mid-rollout changes nothing
    fleet_sim.wait_until(lambda: f.hosts_on("v1.5") >= 12, 120, f.describe)
    f.cluster.start_member(stopped)
    # the last host publishes "healthy" a moment before it gives its slot back
    fleet_sim.wait_until(lambda: f.hosts_on("v1.5") == 20 and not f.status()["slots"], 180, f.describe)
    status = f.status()
    progress = status["progress"]
    assert status["slots"] == [] and isinstance(progress, dict), status
    assert (progress["hosts"], progress["on_target"], progress["failed"], progress["queued"]) == (20, 20, 0, 0)

    record = fleet_sim.replay(f.etcd, f.group, since)
    assert record.max_swapping <= 3, f"etcd recorded {record.max_swapping} hosts swapping at once"
    assert record.max_swapping >= 2, "the rollout never ran hosts in parallel: the limit was not exercised"
    assert record.swapping_without_slot == [], record.swapping_without_slot
    assert sorted(record.swaps) == sorted(h.host_id for h in f.hosts) and set(record.swaps.values()) == {1}
    for host in f.hosts:
        assert running_set(docker_client, host) == {"v1.5": LONG_RUNNING["v1.5"]}, host.host_id


def test_a_host_killed_mid_swap_frees_its_slot_and_ends_consistent(
        fleet: Callable[..., Fleet], docker_client: docker.DockerClient) -> None:
    f = fleet(2, lease_ttl=3)
    fleet_sim.install_all(f.hosts, "v1.3")
    victim, other = f.hosts
    f.agents.start(victim)
    f.cli("rollout", "--to", "v1.5", "--max-concurrent", "1")
    slot_key = fleetkeys.slot_key(f.group, 0)

    def victim_swapping() -> bool:
        """etcd says it swaps, and its journal says the old set is being replaced."""
        try:
            journal = json.loads((victim.root / "var/lib/osctl/journal.json").read_text())
        except (OSError, ValueError):
            return False
        if journal.get("result") != "in-progress" or journal.get("step") not in ("prepare", "swap", "health"):
            return False
        kv = f.etcd.get(fleetkeys.host_key(f.group, victim.host_id))
        return kv is not None and kv.value["phase"] == "swapping"

    fleet_sim.wait_until(victim_swapping, 60, f.describe, every=0.02)
    f.agents.kill(victim.host_id)  # SIGKILL in the middle of its swap
    killed_at = time.monotonic()
    held = f.etcd.get(slot_key)
    assert held is not None and held.value["host_id"] == victim.host_id
    f.agents.start(other)
    fleet_sim.wait_until(lambda: (kv := f.etcd.get(slot_key)) is None or kv.value["host_id"] != victim.host_id,
                         15, "the dead host's slot to be freed by its lease")
    freed_after = time.monotonic() - killed_at
    assert freed_after < 3 + 5, f"the slot was freed {freed_after:.1f} s after the kill (lease 3 s)"
    assert f.etcd.get(fleetkeys.host_key(f.group, victim.host_id)) is None, "a dead host leaves the inventory"
    fleet_sim.wait_until(lambda: f.hosts_on("v1.5") == 1, 90, f.describe)  # the other one got the slot
    f.agents.start(victim)  # the host comes back: recovers its half-done swap, then upgrades
    fleet_sim.wait_until(lambda: f.hosts_on("v1.5") == 2, 90, lambda: f.describe() + f.agents.log(victim.host_id))
    assert "recovered" in f.agents.log(victim.host_id)
    for host in f.hosts:
        assert running_set(docker_client, host) == {"v1.5": LONG_RUNNING["v1.5"]}, host.host_id


def test_a_broken_release_pauses_after_the_failure_budget(
        fleet: Callable[..., Fleet], docker_client: docker.DockerClient) -> None:
    f = fleet(6, health_timeout="4s")
    fleet_sim.install_all(f.hosts, "v1.4")
    for host in f.hosts:
        f.agents.start(host)
    f.cli("rollout", "--to", "v1.6", "--max-concurrent", "2", "--failure-budget", "2")
    fleet_sim.wait_until(lambda: f.status()["rollout"]["state"] == "paused", 120, f.describe)  # type: ignore[index]

    def settled() -> bool:
        status = f.status()
        return not status["slots"] and "swapping" not in status["by_phase"]  # type: ignore[operator]

    # a host already swapping when the budget ran out finishes (and rolls back), then gives its slot back
    fleet_sim.wait_until(settled, 60, f.describe)
    status = f.status()
    rollout = status["rollout"]
    assert isinstance(rollout, dict) and "failure budget" in rollout["reason"], rollout
    failed = {x["host_id"] for x in rollout["failures"]}
    assert 2 <= len(failed) <= 3, f"at most the budget plus the hosts already swapping: {failed}"
    assert all("status" in x["reason"] for x in rollout["failures"]), rollout["failures"]
    for host in f.hosts:
        assert running_set(docker_client, host) == {"v1.4": LONG_RUNNING["v1.4"]}, host.host_id
    text = f.cli("status")
    assert "paused" in text and all(h in text for h in failed), text
    assert "rolled-back" in text
    f.cli("resume")  # the failed hosts never try v1.6 again; the others would (and fail): abort instead
    f.cli("abort")
    time.sleep(3)  # a window in which nothing may happen: no host starts a swap after the abort
    assert fleet_sim.replay(f.etcd, f.group, 1).max_swapping <= 2


def test_with_quorum_lost_agents_wait_and_resume(
        fleet: Callable[..., Fleet], docker_client: docker.DockerClient) -> None:
    f = fleet(3)
    fleet_sim.install_all(f.hosts, "v1.3")
    since = f.etcd.revision() + 1
    f.cli("rollout", "--to", "v1.5", "--max-concurrent", "1")
    f.cluster.stop_member(1)
    f.cluster.stop_member(2)  # no quorum: nothing can be read or written
    for host in f.hosts:
        f.agents.start(host)
    fleet_sim.wait_until(lambda: all("etcd unavailable" in f.agents.log(h.host_id) for h in f.hosts), 30,
                         "every agent to say it waits for etcd")
    time.sleep(3)  # a window in which nothing may happen: without quorum no host swaps
    for host in f.hosts:
        assert running_set(docker_client, host) == {"v1.3": LONG_RUNNING["v1.3"]}, "no swap without a slot"
    f.cluster.start_member(1)
    f.cluster.start_member(2)
    fleet_sim.wait_until(lambda: f.hosts_on("v1.5") == 3, 120, f.describe)
    record = fleet_sim.replay(f.etcd, f.group, since)
    assert record.max_swapping == 1 and record.swapping_without_slot == []


def test_policies_manual_and_download_only_never_swap(
        fleet: Callable[..., Fleet], docker_client: docker.DockerClient) -> None:
    f = fleet(2)
    fleet_sim.install_all(f.hosts, "v1.3")
    manual, download = f.hosts
    fleet_sim.write_config(manual, f.cluster.endpoints, f.group, policy="manual")
    fleet_sim.write_config(download, f.cluster.endpoints, f.group, policy="download-only")
    f.cli("rollout", "--to", "v1.5")
    for host in f.hosts:
        f.agents.start(host)
    fleet_sim.wait_until(lambda: {h["phase"] for h in f.status()["hosts"]} == {"idle", "staged"},  # type: ignore[union-attr,index]
                         60, f.describe)
    assert (download.root / "var/lib/osctl/store/v1.5.json").exists()
    assert not (manual.root / "var/lib/osctl/store/v1.5.json").exists()
    for host in f.hosts:
        assert running_set(docker_client, host) == {"v1.3": LONG_RUNNING["v1.3"]}


def test_fleet_commands_without_etcd_or_rollout_say_so(etcd_cluster: EtcdCluster) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    for args in (("pause",), ("resume",), ("abort",)):
        proc = fleet_sim.fleet_cli(etcd_cluster.endpoints, group, *args)
        assert proc.returncode == 2 and f"group {group} has no rollout" in proc.stderr, proc.stderr
    proc = fleet_sim.fleet_cli(etcd_cluster.endpoints, group, "rollout", "--to", "v9.9", "--waves", "50%@0s")
    assert proc.returncode == 2 and "--waves" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = fleet_sim.fleet_cli(["http://127.0.0.1:1"], group, "status")
    assert proc.returncode != 0 and proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
