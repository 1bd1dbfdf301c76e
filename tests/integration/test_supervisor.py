"""``osctl supervise`` keeps the set running; each behaviour is observed through the engine."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import docker

from tests.support.hosts import Host, shipped_manifest
from tests.support.services import containers, running, started_at, up
from tests.support.supervisor import RECONCILE_EVERY, Supervise
from tests.support.waiting import wait_for


def test_killed_service_comes_back(host: Host, docker_client: docker.DockerClient,
                                   supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise().wait_watching()
    before = started_at(containers(docker_client, host)["ntp"])
    docker_client.containers.get(f"osctl-{host.host_id}-ntp-v1.5").kill()
    wait_for(lambda: running(docker_client, host, "ntp")
             and started_at(containers(docker_client, host)["ntp"]) > before, 10, sup.output)

    def restarts() -> int:
        return int({r["name"]: r for r in host.osctl_json("service", "list")}["ntp"]["restarts"])  # type: ignore[index]

    wait_for(lambda: restarts() == 1, 5, "the restart to be counted")


def test_removed_container_is_recreated(host: Host, docker_client: docker.DockerClient,
                                        supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise().wait_watching()
    old = containers(docker_client, host)["cron"].id
    docker_client.containers.get(old).remove(force=True)
    wait_for(lambda: running(docker_client, host, "cron") and containers(docker_client, host)["cron"].id != old,
             10, sup.output)


def test_crash_looping_service_ends_failed_and_the_rest_stay_up(
    host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str],
    supervise: Callable[..., Supervise]
) -> None:
    manifest = shipped_manifest("v1.5").replace("boot:\n", "  flaky:\n    command: [\"/bin/sh\", \"-c\", "
                                                "\"sleep 0.3; echo segfault; exit 139\"]\n    network_mode: none\n"
                                                "boot:\n")
    host.image = publish("v1.5", manifest)
    up(host)
    sup = supervise("--max-failures", "3")
    wait_for(lambda: {r["name"]: r for r in host.osctl_json("service", "list")}["flaky"]["state"] == "failed",  # type: ignore[union-attr]
             30, sup.output, every=0.2)
    status = json.loads((host.root / "var/lib/osctl/supervisor.json").read_text())["services"]["flaky"]
    assert status["failed"] is True and "exited with code 139" in status["last_failure"]
    assert status["restarts"] >= 2, sup.output()
    for name in ("syslog", "ntp", "status", "cron", "metrics"):
        assert running(docker_client, host, name), name
    sup.wait_passes(3)  # a window in which nothing may happen: three reconcile passes leave it alone
    assert not running(docker_client, host, "flaky"), "a failed service is left alone"


def test_stopped_and_down_services_are_left_alone(host: Host, docker_client: docker.DockerClient,
                                                  supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise().wait_watching()
    assert host.osctl("service", "stop", "status").returncode == 0
    sup.wait_passes(4)  # a window in which nothing may happen: four reconcile passes leave it stopped
    assert not running(docker_client, host, "status"), sup.output()
    assert host.osctl("service", "start", "status").returncode == 0
    assert running(docker_client, host, "status")
    assert host.osctl("service", "down").returncode == 0
    # A window in which nothing may happen, four reconcile periods long. A supervisor writes
    # nothing while its set is down, so there are no passes to count: this one stays a sleep.
    time.sleep(4 * RECONCILE_EVERY)
    assert containers(docker_client, host) == {}, "a set that is down stays down"


def test_sigterm_leaves_the_services_running(host: Host, docker_client: docker.DockerClient,
                                             supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise().wait_watching()
    assert sup.terminate() == 0
    assert "stopping (services keep running)" in sup.output()
    for name in ("syslog", "ntp", "status", "cron", "metrics"):
        assert running(docker_client, host, name), name


def test_service_that_turns_unhealthy_is_restarted(
    host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str],
    supervise: Callable[..., Supervise]
) -> None:
    manifest = shipped_manifest("v1.5").replace("boot:\n", """  worker:
    command: ["/bin/sh", "-c", "touch /tmp/ok; trap 'exit 0' TERM; while :; do sleep 1 & wait; done"]
    network_mode: none
    healthcheck: {test: ["CMD", "test", "-f", "/tmp/ok"], interval: 500ms, timeout: 1s, retries: 2}
boot:
""")
    host.image = publish("v1.5", manifest)
    up(host)
    sup = supervise().wait_watching()
    worker = containers(docker_client, host)["worker"]
    before = started_at(worker)
    assert worker.exec_run(["rm", "/tmp/ok"]).exit_code == 0  # the service stops answering its probe
    wait_for(lambda: started_at(containers(docker_client, host)["worker"]) > before
             and running(docker_client, host, "worker"), 20, sup.output)
    assert "health check failing" in sup.output()


def test_one_supervisor_per_host(host: Host, supervise: Callable[..., Supervise]) -> None:
    up(host)
    first = supervise().wait_watching()
    second = supervise()
    assert second.proc.wait(timeout=30) == 5
    assert f"another osctl supervise (pid {first.proc.pid}) already supervises this host" in second.output()
    assert first.proc.poll() is None
