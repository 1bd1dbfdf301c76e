"""Restarting dockerd under a supervised host: the whole set ends up running again.

Named to run last: it stops the engine, which every other test needs. It is skipped when
anything but test hosts runs on the engine, since a restart would stop those containers too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import docker
import pytest

from tests.integration.conftest import SESSION_HOSTS, Host
from tests.integration.test_services import up
from tests.integration.test_supervisor import Supervise, running, supervise, wait_for  # noqa: F401
from tests.support.engine_tools import engine_is_ours, start_dockerd, stop_dockerd


def test_engine_restart_ends_with_the_full_set_running(host: Host, docker_client: docker.DockerClient,
                                                       supervise: Callable[..., Supervise]) -> None:
    reason = engine_is_ours(docker_client, SESSION_HOSTS)
    if reason:
        pytest.skip(f"restarting dockerd would disturb others: {reason}")
    up(host)
    sup = supervise()
    time.sleep(1)
    stop_dockerd()
    start_dockerd(host.root.parent / "dockerd.log")
    client = docker.from_env(timeout=60)
    try:
        wait_for(lambda: all(running(client, host, n) for n in ("syslog", "ntp", "status", "cron", "metrics")),
                 60, sup.output())
        assert "engine unavailable" in sup.output()
    finally:
        client.close()
