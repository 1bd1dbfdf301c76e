"""The fleet semaphore against a real three-member etcd cluster.

Every claim is checked from what etcd recorded (``Etcd.history``), not from what the acquirers
say: at no revision did more hosts hold a slot than the limit, and no host held two.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from osctl.adapters.etcd import Etcd, Event
from osctl.domain import fleetkeys, fleetstate
from osctl.domain.fleetslots import FleetSemaphore
from osctl.errors import EtcdUnavailable
from osctl.models.fleet import HostState, Rollout, RolloutFailure
from tests.support.etcd_cluster import EtcdCluster
from tests.support.waiting import wait_for

VERSION = "v1.5"


def replay_holders(events: list[Event], group: str) -> tuple[int, dict[str, int]]:
    """Fold the recorded slot changes revision by revision: the most holders seen at once, and
    how many times each host took a slot. Fails if a host ever held two slots at once."""
    holding: dict[str, str] = {}  # slot key -> host id
    most, taken = 0, {}  # type: ignore[var-annotated]
    for revision in sorted({e.revision for e in events}):
        for event in (e for e in events if e.revision == revision):
            if fleetkeys.slot_index(group, event.key) is None:
                continue
            if event.kind == "put":
                if holding.get(event.key) != event.value["host_id"]:
                    taken[event.value["host_id"]] = taken.get(event.value["host_id"], 0) + 1
                holding[event.key] = event.value["host_id"]
            else:
                holding.pop(event.key, None)
        hosts = list(holding.values())
        assert len(hosts) == len(set(hosts)), f"a host held two slots at revision {revision}: {holding}"
        most = max(most, len(hosts))
    return most, taken


def run_hosts(endpoints: list[str], group: str, hosts: list[str], limit: int, *,
              during: threading.Event | None = None) -> dict[str, str]:
    """Each host, in its own thread with its own client and lease: wait for a slot, "swap"
    (publish its phase), give the slot back. Returns errors by host (none expected)."""
    errors: dict[str, str] = {}
    start = threading.Barrier(len(hosts))

    def host(host_id: str) -> None:
        client = Etcd(endpoints, timeout=1.0, attempts=5, deadline=10.0)
        try:
            lease = client.grant(10)
            sem = FleetSemaphore(client, group)
            start.wait()
            deadline = time.monotonic() + 30
            while sem.acquire(host_id, VERSION, lease, limit) is None:
                assert time.monotonic() < deadline, "never got a slot"
                time.sleep(0.02)
            now = datetime.now(UTC)
            fleetstate.publish_host(client, group, HostState(host_id=host_id, phase="swapping", updated_at=now), lease)
            time.sleep(0.05)
            fleetstate.publish_host(client, group, HostState(host_id=host_id, phase="healthy", updated_at=now), lease)
            assert sem.release(host_id)
            client.revoke(lease)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors[host_id] = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    threads = [threading.Thread(target=host, args=(h,)) for h in hosts]
    for thread in threads:
        thread.start()
    if during is not None:
        during.set()
    for thread in threads:
        thread.join(60)
    return errors


def test_never_more_than_the_limit_under_20_concurrent_acquirers(etcd: Etcd, etcd_cluster: EtcdCluster,
                                                                 group: str) -> None:
    since = etcd.revision() + 1
    hosts = [f"host-{i:02d}" for i in range(20)]
    assert run_hosts(etcd_cluster.endpoints, group, hosts, 3) == {}
    events = etcd.history(fleetkeys.group_prefix(group), since)
    most, taken = replay_holders(events, group)
    assert most == 3  # the limit held, and was used: the hosts did contend
    assert taken == dict.fromkeys(hosts, 1)  # every host got a slot exactly once
    assert FleetSemaphore(etcd, group).slots() == []
    # "swapping" as published by the hosts, replayed: never more than 3 at once either.
    phase: dict[str, str] = {}
    for event in events:
        host = fleetkeys.host_of(group, event.key)
        if host is not None:
            phase[host] = event.value["phase"] if event.kind == "put" else "gone"
            assert sum(p == "swapping" for p in phase.values()) <= 3


def test_a_burst_gets_exactly_the_limit(etcd: Etcd, etcd_cluster: EtcdCluster, group: str) -> None:
    """20 hosts ask at the same instant and nobody releases: exactly 3 get a slot."""
    results: dict[str, object] = {}
    barrier = threading.Barrier(20)
    lease = etcd.grant(30)

    def ask(host_id: str) -> None:
        client = Etcd(etcd_cluster.endpoints, timeout=1.0)
        barrier.wait()
        results[host_id] = FleetSemaphore(client, group).acquire(host_id, VERSION, lease, 3)
        client.close()

    threads = [threading.Thread(target=ask, args=(f"h{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = sorted(h for h, slot in results.items() if slot is not None)
    assert len(results) == 20 and len(winners) == 3
    assert sorted(s.holder.host_id for s in FleetSemaphore(etcd, group).slots()) == winners
    etcd.revoke(lease)


def test_acquire_is_idempotent_and_keeps_the_slot_across_a_restart(etcd: Etcd, group: str) -> None:
    sem = FleetSemaphore(etcd, group)
    since = etcd.revision() + 1
    old = etcd.grant(30)
    slot = sem.acquire("host-a", VERSION, old, 2)
    assert slot is not None and slot.lease == old
    assert sem.acquire("host-a", VERSION, old, 2) == slot  # asking again changes nothing
    # The agent restarts with a new lease while the old one still runs: same slot, new lease.
    new = etcd.grant(30)
    again = sem.acquire("host-a", VERSION, new, 2)
    assert again is not None and (again.index, again.lease) == (slot.index, new)
    assert again.holder.acquired_at == slot.holder.acquired_at
    etcd.revoke(old)  # the old lease ends: the slot is no longer bound to it
    assert [(s.holder.host_id, s.lease) for s in sem.slots()] == [("host-a", new)]
    other = sem.acquire("host-b", VERSION, new, 2)
    assert other is not None and other.index != slot.index
    assert sem.acquire("host-c", VERSION, new, 2) is None  # 2 holders, limit 2: host-a counted once
    most, taken = replay_holders(etcd.history(fleetkeys.group_prefix(group), since), group)
    assert most == 2 and taken == {"host-a": 1, "host-b": 1}
    assert sem.release("host-a") and not sem.release("host-a")
    assert [s.holder.host_id for s in sem.slots()] == ["host-b"]  # only its own slot went
    etcd.revoke(new)


def test_a_dead_holder_frees_its_slot_when_its_lease_expires(etcd: Etcd, group: str) -> None:
    sem = FleetSemaphore(etcd, group)
    dying = etcd.grant(2)  # never kept alive: the host died mid-swap
    taken = sem.acquire("host-dead", VERSION, dying, 1)
    assert taken is not None
    waiting = etcd.grant(30)
    assert sem.acquire("host-next", VERSION, waiting, 1) is None
    started = time.monotonic()
    while (slot := sem.acquire("host-next", VERSION, waiting, 1)) is None:
        assert time.monotonic() - started < 8, "the slot was never freed"
        time.sleep(0.1)
    assert slot.index == taken.index and time.monotonic() - started > 0.5
    # The dead host, back, finds it lost the slot: its release must not free the new holder's.
    assert not sem.release("host-dead")
    assert [s.holder.host_id for s in sem.slots()] == ["host-next"]
    etcd.revoke(waiting)


def test_losing_the_leader_mid_rollout_changes_nothing(etcd: Etcd, etcd_cluster: EtcdCluster, group: str) -> None:
    since = etcd.revision() + 1
    started = threading.Event()

    def kill_leader() -> None:
        started.wait(10)
        prefix = fleetkeys.group_prefix(group)
        wait_for(lambda: any(fleetkeys.slot_index(group, e.key) is not None for e in etcd.history(prefix, since)),
                 10, "the first host to take a slot", every=0.02)  # then the rollout is under way
        leader = etcd_cluster.leader()
        etcd_cluster.stop_member(leader if leader is not None else 0)

    killer = threading.Thread(target=kill_leader)
    killer.start()
    hosts = [f"host-{i:02d}" for i in range(12)]
    errors = run_hosts(etcd_cluster.endpoints, group, hosts, 3, during=started)
    killer.join()
    assert errors == {}
    assert sum(m.running for m in etcd_cluster.members) == 2
    most, taken = replay_holders(etcd.history(fleetkeys.group_prefix(group), since), group)
    assert most <= 3 and taken == dict.fromkeys(hosts, 1)


def test_without_quorum_nobody_gets_a_slot_and_nothing_hangs(etcd_cluster: EtcdCluster, group: str) -> None:
    etcd = Etcd(etcd_cluster.endpoints, timeout=1.0, attempts=2, deadline=2.0)
    sem = FleetSemaphore(etcd, group)
    lease = etcd.grant(30)
    assert sem.acquire("host-a", VERSION, lease, 1) is not None
    etcd_cluster.stop_member(1)
    etcd_cluster.stop_member(2)
    for call in (lambda: sem.acquire("host-b", VERSION, lease, 1), lambda: sem.release("host-a")):
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable):
            call()
        assert time.monotonic() - started < 8  # 2 passes of 1 s timeouts; generous for a loaded machine
    etcd_cluster.start_member(1)
    assert sem.acquire("host-b", VERSION, lease, 1) is None  # host-a still holds it: no swap without a slot
    assert sem.release("host-a")
    assert sem.acquire("host-b", VERSION, lease, 1) is not None
    etcd.revoke(lease)
    etcd.close()


def test_failure_budget_pauses_the_rollout_for_everyone(etcd: Etcd, group: str) -> None:
    """Hosts report failures concurrently by compare-and-swap: none is lost, the pause sticks."""
    now = datetime.now(UTC)
    fleetstate.write_rollout(etcd, group, Rollout(target=VERSION, max_concurrent=3, seed=1, failure_budget=3,
                                                  started_at=now, updated_at=now))

    def report(host_id: str) -> None:
        client = Etcd(etcd.endpoints, timeout=1.0)
        failure = RolloutFailure(host_id=host_id, version=VERSION, reason="service x unhealthy", at=now)
        fleetstate.update_rollout(client, group, lambda r: fleetstate.add_failure(r, failure, now))
        client.close()

    threads = [threading.Thread(target=report, args=(f"h{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    current = fleetstate.read_rollout(etcd, group)
    assert current is not None
    rollout, _ = current
    assert rollout.state == "paused" and len(rollout.failures) == 6
    assert rollout.reason is not None and rollout.reason.startswith("failure budget spent: 3 host(s) failed on v1.5")
