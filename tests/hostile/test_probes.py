"""Health probes that never end, under ``osctl supervise`` (issue 19, item 4).

The image is hostile the simple way: its service's probe hangs (``sleep 1000`` in a shell, the
shell's child being the part that hangs) unless ``/tmp/ok`` exists, and another service waits
for it to be healthy. ``service up`` gives up on it; the supervisor then starts the dependent
and waits for the probe, trying it again and again. The engine's own probe interval is an hour,
so every probe seen in the container is one of osctl's (the engine's own kills only the shell
of a timed-out probe, not its child: docs/image-format.md says so to image authors).

What a user would notice: processes piling up in the container, one per try (16 after 30 s),
and an operator's ``service stop`` that waited 15 s behind the supervisor and failed (exit 5).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import docker
import pytest

from tests.support.hosts import Host
from tests.support.services import containers, running
from tests.support.supervisor import Supervise, watching
from tests.support.waiting import wait_for

LOOP = "[\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1 & wait; done\"]"
MANIFEST = f"""\
version: v1.5
services:
  hang:
    command: {LOOP}
    network_mode: none
    healthcheck: {{test: ["CMD-SHELL", "test -f /tmp/ok || {{ sleep 1000; true; }}"], interval: 1h, timeout: 1s}}
  after:
    command: {LOOP}
    network_mode: none
    depends_on: {{hang: {{condition: service_healthy}}}}
boot:
  kernel: /boot/vmlinuz
  initrd: /boot/initrd.img
"""
HANGING = "sleep 1000"


def probes(client: docker.DockerClient, host: Host) -> int:
    """The probes hanging in the ``hang`` container: its ``sleep 1000`` processes (each probe's
    shell has one, and keeps it after the shell is gone), as the engine lists them."""
    processes = client.api.top(containers(client, host)["hang"].id)["Processes"] or []
    return sum(row[-1] == HANGING for row in processes)


@pytest.fixture
def waiting(host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str],
            supervise: Callable[..., Supervise]) -> Supervise:
    """A supervisor waiting for ``hang`` to be healthy before it starts ``after``."""
    host.image = publish("v1.5", MANIFEST)
    assert host.osctl("pull", "v1.5", "--quiet").returncode == 0
    failed = host.osctl("service", "up", "--version", "v1.5", "--timeout", "1")
    assert failed.returncode != 0 and "hang" in failed.stderr, failed.stderr
    sup = supervise()
    wait_for(lambda: watching(host, sup.proc.pid), 30, sup.output)
    wait_for(lambda: probes(docker_client, host) >= 1, 10, "the supervisor to probe hang")
    return sup


def test_a_hanging_probe_leaves_at_most_one_probe_process(
        host: Host, docker_client: docker.DockerClient, waiting: Supervise) -> None:
    seen = []
    for _ in range(16):  # four seconds: about three probes time out meanwhile
        seen.append(probes(docker_client, host))
        time.sleep(0.25)
    assert max(seen) <= 1, f"probe processes seen in the container over 4 s: {seen}"
    assert not running(docker_client, host, "after")
    containers(docker_client, host)["hang"].exec_run(["touch", "/tmp/ok"])
    wait_for(lambda: running(docker_client, host, "after"), 10, waiting.output)  # it was the one waiting
    assert probes(docker_client, host) == 0


def test_service_stop_does_not_wait_behind_the_supervisors_health_wait(
        host: Host, docker_client: docker.DockerClient, waiting: Supervise) -> None:
    started = time.monotonic()
    stop = host.osctl("service", "stop", "after")
    took = time.monotonic() - started
    assert stop.returncode == 0, stop.stderr
    assert took < 12, f"service stop took {took:.1f} s"  # behind the lock: 15 s, then exit 5
    containers(docker_client, host)["hang"].exec_run(["touch", "/tmp/ok"])
    wait_for(lambda: probes(docker_client, host) == 0, 10, "the last probe to end")
    waiting.wait_passes(3)  # a window in which nothing may happen: what the operator stopped stays down
    assert not running(docker_client, host, "after"), waiting.output()
