"""dockerd stops in the middle of a swap and comes back: the next ``osctl boot`` recovers.

Marked ``engine_restart``: it stops the engine, which every other test needs, so it runs at the
very end (tests/conftest.py). It is skipped when anything but this session's test hosts runs on
the engine.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import docker
import pytest

from tests.support.engine_tools import engine_is_ours, start_dockerd, stop_dockerd
from tests.support.faults import (FaultRecord, assert_clear_error, assert_consistent, broken_upgrade_in_swap,
                                  installed, osctl_ok)
from tests.support.hosts import SESSION_HOSTS, Host

pytestmark = pytest.mark.engine_restart


def test_engine_stops_during_swap(host: Host, docker_client: docker.DockerClient,
                                  fault: Callable[[str], FaultRecord]) -> None:
    reason = engine_is_ours(docker_client, SESSION_HOSTS)
    if reason:
        pytest.skip(f"stopping dockerd would disturb others: {reason}")
    record = fault("dockerd stopped during the swap, started again, then osctl boot")
    marker = installed(host, docker_client, "v1.4")
    upgrade = broken_upgrade_in_swap(host, health_timeout=30)
    try:
        stop_dockerd()
        _, err = upgrade.communicate(timeout=120)
    finally:
        start_dockerd(host.root.parent / "dockerd.log")
    print(f"upgrade when dockerd stopped: exit {upgrade.returncode}: {err.strip()!r}")
    assert_clear_error(subprocess.CompletedProcess(upgrade.args, upgrade.returncode, "", err), 3, "engine")
    booted = osctl_ok(host, "boot")
    assert "v1.4" in booted, booted
    assert_consistent(host, docker_client, "v1.4", marker, record)
