"""Stopping and starting the local dockerd from a test, as ``scripts/setup`` starts it.

Only for tests that are about the engine going away (marked ``engine_restart``, so they run
last): a restart stops every container on the engine, so ``engine_is_ours`` says when it is
allowed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import docker

from tests.support.waiting import wait_for


def engine_is_ours(client: docker.DockerClient, own_hosts: Iterable[str]) -> str | None:
    """Why the engine may not be restarted here, or None when it may."""
    if os.environ.get("DOCKER_HOST") or os.geteuid() != 0:
        return "needs root and the local engine"
    own = set(own_hosts)
    others = [c.name for c in client.containers.list() if c.labels.get("io.osctl.host", "") not in own]
    return f"other containers run on this engine: {others[:3]}" if others else None


def stop_dockerd() -> None:
    pids = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    assert pids, "no local dockerd to stop"
    subprocess.run(["kill", "-TERM", *pids], check=True)
    wait_for(lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0, 60,
             "dockerd to stop")


def start_dockerd(log: Path) -> None:
    """Start dockerd detached, as scripts/setup does, and wait until it answers."""
    with open(log, "w") as out:
        subprocess.run(["setsid", "-f", "/usr/sbin/dockerd", "--max-download-attempts=2"], stdout=out, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, check=True)
    wait_for(_engine_answers, 60, "dockerd to answer again")


def _engine_answers() -> bool:
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
