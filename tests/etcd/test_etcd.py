"""The etcd adapter against a real three-member cluster: keys, leases, failover, lost quorum,
and the history that tests replay."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from osctl.adapters.etcd import Etcd, Event
from osctl.errors import EtcdError, EtcdUnavailable
from tests.support.etcd_cluster import EtcdCluster


@pytest.fixture
def prefix() -> str:
    return f"/osctltest/{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster, prefix: str) -> Iterator[Etcd]:
    client = Etcd(etcd_cluster.endpoints, timeout=1.0, attempts=3, deadline=4.0)
    yield client
    try:
        client.delete_prefix(prefix)
    except EtcdUnavailable:
        pass
    client.close()


def test_keys_values_and_revisions(etcd: Etcd, prefix: str) -> None:
    key = f"{prefix}a"
    first = etcd.put(key, {"n": 1, "text": "größer"})
    kv = etcd.get(key)
    assert kv is not None and kv.value == {"n": 1, "text": "größer"} and kv.mod_revision == first
    assert etcd.create(key, {"n": 2}) is None  # exists
    created = etcd.create(f"{prefix}b", {"n": 2})
    assert created is not None and created > first
    assert etcd.replace(key, {"n": 3}, mod_revision=first - 1) is None  # stale revision: refused
    swapped = etcd.replace(key, {"n": 3}, mod_revision=first)
    assert swapped is not None and etcd.get(key).value == {"n": 3}  # type: ignore[union-attr]
    assert etcd.replace(f"{prefix}gone", {"n": 1}, mod_revision=first) is None
    assert [kv.key for kv in etcd.get_prefix(prefix)] == [f"{prefix}a", f"{prefix}b"]
    assert not etcd.delete(key, mod_revision=first)  # changed since: not deleted
    assert etcd.delete(key, mod_revision=swapped)
    assert not etcd.delete(key) and etcd.get(key) is None
    assert etcd.delete_prefix(prefix) == 1 and etcd.get_prefix(prefix) == []


def test_leases_bind_keys(etcd: Etcd, prefix: str) -> None:
    lease = etcd.grant(30)
    assert etcd.lease_alive(lease) and 28 <= etcd.lease_ttl(lease) <= 30
    assert etcd.keepalive(lease)
    etcd.put(f"{prefix}held", {"by": "me"}, lease=lease)
    assert etcd.get(f"{prefix}held").lease == lease  # type: ignore[union-attr]
    assert etcd.revoke(lease)
    assert etcd.get(f"{prefix}held") is None  # revoking deletes the lease's keys
    assert not etcd.lease_alive(lease) and etcd.lease_ttl(lease) == -1
    assert not etcd.keepalive(lease) and not etcd.revoke(lease)


def test_a_stopped_member_changes_nothing(etcd: Etcd, etcd_cluster: EtcdCluster, prefix: str) -> None:
    etcd.put(f"{prefix}k", {"v": 1})
    etcd_cluster.stop_member(0)  # the endpoint the client tries first
    started = time.monotonic()
    assert etcd.get(f"{prefix}k").value == {"v": 1}  # type: ignore[union-attr]
    assert etcd.create(f"{prefix}new", {"v": 2}) is not None
    lease = etcd.grant(10)
    assert etcd.keepalive(lease) and etcd.revoke(lease)
    assert time.monotonic() - started < 10  # a new leader, maybe; never a long stall


def test_lost_quorum_is_unavailable_within_the_deadline(etcd_cluster: EtcdCluster, prefix: str) -> None:
    etcd = Etcd(etcd_cluster.endpoints, timeout=1.0, attempts=2, deadline=2.0)
    etcd_cluster.stop_member(1)
    etcd_cluster.stop_member(2)
    for operation in (lambda: etcd.get(f"{prefix}k"), lambda: etcd.create(f"{prefix}k", {"v": 1})):
        started = time.monotonic()
        with pytest.raises(EtcdUnavailable) as caught:
            operation()
        assert time.monotonic() - started < 8  # 2 passes of 1 s timeouts; generous for a loaded machine
        assert etcd_cluster.endpoint(1) in caught.value.message and "connection refused" in caught.value.message
        assert "no answer within 1 s" in caught.value.message  # the member left has no leader
    etcd_cluster.start_member(1)  # a majority again: it serves
    etcd.put(f"{prefix}k", {"v": 2})
    assert etcd.get(f"{prefix}k").value == {"v": 2}  # type: ignore[union-attr]
    etcd.delete_prefix(prefix)


def test_history_replays_every_change(etcd: Etcd, prefix: str) -> None:
    since = etcd.revision() + 1
    lease = etcd.grant(30)
    etcd.put(f"{prefix}a", {"v": 1})
    etcd.create(f"{prefix}b", {"v": 1}, lease=lease)
    etcd.put(f"{prefix}a", {"v": 2})
    etcd.put("/osctltest/elsewhere", {"v": 0})  # another prefix: not in the replay
    etcd.delete(f"{prefix}a")
    etcd.revoke(lease)  # deletes b: recorded as a delete too
    until = etcd.revision()
    events = etcd.history(prefix, since)
    assert [(e.kind, e.key.removeprefix(prefix), e.value) for e in events] == [
        ("put", "a", {"v": 1}), ("put", "b", {"v": 1}), ("put", "a", {"v": 2}),
        ("delete", "a", {"v": 2}), ("delete", "b", {"v": 1}),
    ]
    assert events[1].lease == lease and events[4].lease == lease
    assert [e.revision for e in events] == sorted(e.revision for e in events) and events[-1].revision == until
    # A window of it, starting with keys that existed before.
    assert etcd.history(prefix, events[2].revision, events[3].revision) == [events[2], events[3]]
    assert etcd.history(prefix, until + 1) == []
    etcd.delete("/osctltest/elsewhere")


def test_history_is_exact_under_concurrent_writers(etcd: Etcd, prefix: str) -> None:
    """Folding the replayed events gives the state etcd holds at the end."""
    import threading

    since = etcd.revision() + 1

    def writer(n: int) -> None:
        own = Etcd(etcd.endpoints, timeout=1.0)
        for i in range(15):
            own.put(f"{prefix}{i % 4}", {"writer": n, "i": i})
            if i % 5 == 4:
                own.delete(f"{prefix}{(i + n) % 4}")
        own.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state: dict[str, dict[str, object]] = {}
    for event in etcd.history(prefix, since):
        if event.kind == "put":
            state[event.key] = event.value
        else:
            assert event.key in state  # a delete replays only what was there
            del state[event.key]
    assert state == {kv.key: kv.value for kv in etcd.get_prefix(prefix)}


def test_a_value_osctl_did_not_write_is_an_error(etcd: Etcd, etcd_cluster: EtcdCluster, prefix: str) -> None:
    import base64

    body = json.dumps({"key": base64.b64encode(f"{prefix}raw".encode()).decode(),
                       "value": base64.b64encode(b"not json").decode()}).encode()
    request = urllib.request.Request(f"{etcd_cluster.endpoint(0)}/v3/kv/put", data=body, method="POST")
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5).close()
    with pytest.raises(EtcdError, match=f"the etcd key {prefix}raw does not hold a JSON object"):
        etcd.get(f"{prefix}raw")


def test_history_of_a_compacted_revision_says_so(prefix: str) -> None:
    """Compaction is cluster-wide and forever: done here on a private one-member cluster."""
    with EtcdCluster(1) as single:
        client = Etcd(single.endpoints, timeout=1.0)
        client.put(f"{prefix}a", {"v": 1})
        revision = client.put(f"{prefix}a", {"v": 2})
        body = json.dumps({"revision": str(revision)}).encode()
        request = urllib.request.Request(f"{single.endpoint(0)}/v3/kv/compaction", data=body, method="POST")
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5).close()
        with pytest.raises(EtcdError, match="compacted"):
            client.history(prefix, 1)
        later = client.put(f"{prefix}a", {"v": 3})
        assert client.history(prefix, revision + 1) == [Event(later, "put", f"{prefix}a", {"v": 3}, 0)]
        client.close()
