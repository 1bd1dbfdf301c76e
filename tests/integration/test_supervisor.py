"""``osctl supervise`` keeps the set running; each behaviour is observed through the engine."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import docker
import pytest

from tests.integration.conftest import Host, shipped_manifest
from tests.integration.test_services import containers, up

FAST = ["--reconcile-every", "0.5", "--backoff-max", "0.5", "--stable-after", "30"]


class Supervise:
    def __init__(self, host: Host, *args: str) -> None:
        self.log = open(host.root.parent / f"supervise-{host.host_id}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "osctl", "supervise", *FAST, *args], env=host.env(),
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        with open(self.log.name) as log:
            return log.read()

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        if not self.log.closed:
            self.log.close()
        return code


@pytest.fixture
def supervise(host: Host) -> Iterator[Callable[..., Supervise]]:
    started: list[Supervise] = []

    def start(*args: str) -> Supervise:
        started.append(Supervise(host, *args))
        return started[-1]

    yield start
    for sup in started:
        sup.terminate()


def wait_for(what: Callable[[], bool], timeout: float = 20.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting: {message}"
        time.sleep(0.1)


def running(client: docker.DockerClient, host: Host, name: str) -> bool:
    found = containers(client, host).get(name)
    return bool(found and found.attrs["State"]["Running"])


def test_killed_service_comes_back(host: Host, docker_client: docker.DockerClient,
                                   supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise()
    time.sleep(1)
    before = containers(docker_client, host)["ntp"].attrs["State"]["StartedAt"]
    docker_client.containers.get(f"osctl-{host.host_id}-ntp-v1.5").kill()
    wait_for(lambda: running(docker_client, host, "ntp")
             and containers(docker_client, host)["ntp"].attrs["State"]["StartedAt"] != before, 10, sup.output())

    def restarts() -> int:
        return int({r["name"]: r for r in host.osctl_json("service", "list")}["ntp"]["restarts"])  # type: ignore[index]

    wait_for(lambda: restarts() == 1, 5, "the restart to be counted")


def test_removed_container_is_recreated(host: Host, docker_client: docker.DockerClient,
                                        supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise()
    time.sleep(1)
    old = containers(docker_client, host)["cron"].id
    docker_client.containers.get(old).remove(force=True)
    wait_for(lambda: running(docker_client, host, "cron") and containers(docker_client, host)["cron"].id != old,
             10, sup.output())


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
             30, sup.output())
    status = json.loads((host.root / "var/lib/osctl/supervisor.json").read_text())["services"]["flaky"]
    assert status["failed"] is True and "exited with code 139" in status["last_failure"]
    assert status["restarts"] >= 2, sup.output()
    for name in ("syslog", "ntp", "status", "cron", "metrics"):
        assert running(docker_client, host, name), name
    time.sleep(1.5)
    assert not running(docker_client, host, "flaky"), "a failed service is left alone"


def test_stopped_and_down_services_are_left_alone(host: Host, docker_client: docker.DockerClient,
                                                  supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise()
    time.sleep(1)
    assert host.osctl("service", "stop", "status").returncode == 0
    time.sleep(2)  # four reconciles
    assert not running(docker_client, host, "status"), sup.output()
    assert host.osctl("service", "start", "status").returncode == 0
    assert running(docker_client, host, "status")
    assert host.osctl("service", "down").returncode == 0
    time.sleep(2)
    assert containers(docker_client, host) == {}, "a set that is down stays down"


def test_sigterm_leaves_the_services_running(host: Host, docker_client: docker.DockerClient,
                                             supervise: Callable[..., Supervise]) -> None:
    up(host)
    sup = supervise()
    time.sleep(1)
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
    sup = supervise()
    time.sleep(1)
    worker = containers(docker_client, host)["worker"]
    before = worker.attrs["State"]["StartedAt"]
    assert worker.exec_run(["rm", "/tmp/ok"]).exit_code == 0  # the service stops answering its probe
    wait_for(lambda: containers(docker_client, host)["worker"].attrs["State"]["StartedAt"] != before
             and running(docker_client, host, "worker"), 20, sup.output())
    assert "health check failing" in sup.output()


def test_one_supervisor_per_host(host: Host, supervise: Callable[..., Supervise]) -> None:
    up(host)
    first = supervise()
    time.sleep(1)
    second = supervise()
    assert second.proc.wait(timeout=30) == 5
    assert f"another osctl supervise (pid {first.proc.pid}) already supervises this host" in second.output()
    assert first.proc.poll() is None
