"""Fixtures of the fleet's etcd tests: a group of their own, and a client that removes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from osctl.adapters.etcd import Etcd
from osctl.domain import fleetkeys
from osctl.errors import EtcdUnavailable
from tests.support.etcd_cluster import EtcdCluster


@pytest.fixture
def group() -> str:
    return f"osctltest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster, group: str) -> Iterator[Etcd]:
    """A client of the session's cluster; the group's keys are deleted afterwards (test_etcd.py
    has its own, by prefix)."""
    client = Etcd(etcd_cluster.endpoints, timeout=1.0, attempts=3, deadline=5.0)
    yield client
    try:
        client.delete_prefix(fleetkeys.group_prefix(group))
    except EtcdUnavailable:
        pass
    client.close()
