"""Restarting dockerd under a supervised host: the whole set ends up running again.

Named to run last: it stops the engine, which every other test needs. It is skipped when
anything but test hosts runs on the engine, since a restart would stop those containers too.
"""

from __future__ import annotations

import os
import time
import subprocess
from collections.abc import Callable

import docker
import pytest

from tests.integration.conftest import SESSION_HOSTS, Host
from tests.integration.test_services import up
from tests.integration.test_supervisor import Supervise, running, supervise, wait_for  # noqa: F401


def _engine_is_ours(client: docker.DockerClient) -> str | None:
    """Why the engine may not be restarted here, or None when it may."""
    if os.environ.get("DOCKER_HOST") or os.geteuid() != 0:
        return "needs root and the local engine"
    others = [c.name for c in client.containers.list() if c.labels.get("io.osctl.host", "") not in SESSION_HOSTS]
    return f"other containers run on this engine: {others[:3]}" if others else None


def test_engine_restart_ends_with_the_full_set_running(host: Host, docker_client: docker.DockerClient,
                                                       supervise: Callable[..., Supervise]) -> None:
    reason = _engine_is_ours(docker_client)
    if reason:
        pytest.skip(f"restarting dockerd would disturb others: {reason}")
    up(host)
    sup = supervise()
    time.sleep(1)
    pids = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    assert pids, "no local dockerd to restart"
    subprocess.run(["kill", "-TERM", *pids], check=True)
    wait_for(lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0, 60,
             "dockerd to stop")
    with open(host.root.parent / "dockerd.log", "w") as log:  # started as scripts/setup does: detached
        subprocess.run(["setsid", "-f", "/usr/sbin/dockerd"], stdout=log, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, check=True)

    def engine_answers() -> bool:
        if not os.path.exists("/var/run/docker.sock"):  # docker-py leaks a socket when it is missing
            return False
        try:
            probe = docker.from_env(timeout=5)
        except docker.errors.DockerException:
            return False
        try:
            return bool(probe.ping())
        except Exception:  # noqa: BLE001 - not up yet
            return False
        finally:
            probe.close()

    wait_for(engine_answers, 60, "dockerd to answer again")
    client = docker.from_env(timeout=60)
    try:
        wait_for(lambda: all(running(client, host, n) for n in ("syslog", "ntp", "status", "cron", "metrics")),
                 60, sup.output())
        assert "engine unavailable" in sup.output()
    finally:
        client.close()
