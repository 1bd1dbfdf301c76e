"""Restarting dockerd under a supervised host: the whole set ends up running again.

Marked ``engine_restart``: it stops the engine, which every other test needs, so it runs at the
very end (tests/conftest.py). It is skipped when anything but this session's test hosts runs on
the engine, since a restart would stop those containers too.
"""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest

from tests.support.engine_tools import engine_is_ours, start_dockerd, stop_dockerd
from tests.support.hosts import SESSION_HOSTS, Host
from tests.support.services import running, up
from tests.support.supervisor import Supervise
from tests.support.waiting import wait_for

pytestmark = pytest.mark.engine_restart


def test_engine_restart_ends_with_the_full_set_running(host: Host, docker_client: docker.DockerClient,
                                                       supervise: Callable[..., Supervise]) -> None:
    reason = engine_is_ours(docker_client, SESSION_HOSTS)
    if reason:
        pytest.skip(f"restarting dockerd would disturb others: {reason}")
    up(host)
    sup = supervise().wait_watching()
    stop_dockerd()
    start_dockerd(host.root.parent / "dockerd.log")
    client = docker.from_env(timeout=60)
    try:
        wait_for(lambda: all(running(client, host, n) for n in ("syslog", "ntp", "status", "cron", "metrics")),
                 60, sup.output)
        assert "engine unavailable" in sup.output()
    finally:
        client.close()
