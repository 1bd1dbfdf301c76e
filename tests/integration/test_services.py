"""Bringing a version's service set up and down, observed through the engine, not osctl."""

from __future__ import annotations

import json
from collections.abc import Callable

import docker
import pytest

from tests.support.hosts import Host, shipped_manifest
from tests.support.services import containers, finished_at, started_at, up


def test_start_order_follows_dependencies(host: Host, docker_client: docker.DockerClient) -> None:
    up(host)
    found = containers(docker_client, host)
    assert set(found) == {"network", "syslog", "ntp", "status", "cron", "metrics"}
    state = {name: c.attrs["State"] for name, c in found.items()}
    started = {name: started_at(c) for name, c in found.items()}  # parsed: the engine's strings do not sort
    # network is a one-shot: syslog waits for it to complete, the others wait for syslog.
    assert state["network"]["ExitCode"] == 0 and state["network"]["Status"] == "exited"
    assert finished_at(found["network"]) <= started["syslog"], (state["network"]["FinishedAt"], state["syslog"])
    for name in ("ntp", "status", "cron", "metrics"):
        assert started["syslog"] <= started[name], (name, state["syslog"]["StartedAt"], state[name]["StartedAt"])
        assert state[name]["Running"], name
    for c in found.values():
        assert c.attrs["HostConfig"]["Init"] is True, "every system container runs with an init"
        assert c.labels["io.osctl.version"] == "v1.5" and c.labels["io.osctl.spec-hash"]


def test_up_twice_leaves_unchanged_services_alone(host: Host, docker_client: docker.DockerClient) -> None:
    up(host)
    before = {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in containers(docker_client, host).items()}
    data = host.osctl_json("service", "up")
    assert isinstance(data, list) and {row["result"] for row in data} <= {"unchanged", "completed"}
    after = {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in containers(docker_client, host).items()}
    assert after == before


def test_a_failing_oneshot_keeps_its_dependents_from_starting(
    host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str]
) -> None:
    manifest = shipped_manifest("v1.5").replace('command: ["/usr/lib/osctl/bin/network-check"]',
                                                'command: ["/bin/sh", "-c", "echo no carrier on eth0; exit 3"]')
    host.image = publish("v1.5", manifest)
    assert host.osctl("pull", "v1.5", "--quiet").returncode == 0
    proc = host.osctl("service", "up", "--version", "v1.5")
    assert proc.returncode == 1
    assert "service network failed: exited with code 3; last log lines: no carrier on eth0" in proc.stderr
    found = containers(docker_client, host)
    assert set(found) == {"network"}, "nothing that needs the network was even created"


def test_named_volume_data_survives_recreation(host: Host, docker_client: docker.DockerClient) -> None:
    up(host)
    syslog = containers(docker_client, host)["syslog"]
    assert syslog.exec_run(["/bin/sh", "-c", "echo kept > /var/log/precious"]).exit_code == 0
    assert host.osctl("service", "down").returncode == 0
    assert containers(docker_client, host) == {}
    volumes = docker_client.volumes.list(filters={"label": f"io.osctl.host={host.host_id}"})
    assert [v.name for v in volumes] == [f"osctl-{host.host_id}-logs"]
    up(host)
    syslog = containers(docker_client, host)["syslog"]
    assert syslog.exec_run(["cat", "/var/log/precious"]).output == b"kept\n"


def test_list_shows_what_the_engine_says(host: Host) -> None:
    up(host)
    rows = {row["name"]: row for row in host.osctl_json("service", "list")}  # type: ignore[union-attr]
    assert rows["network"]["state"] == "completed" and rows["network"]["oneshot"] is True
    assert rows["syslog"]["state"] == "running" and rows["syslog"]["version"] == "v1.5"
    assert "osctl/node-exporter:1.0@sha256:" in rows["metrics"]["image"], "the OS image pins it by digest"
    for key in ("name", "state", "health", "restarts", "uptime", "image", "version"):
        assert key in rows["status"]


def test_stop_start_disable(host: Host, docker_client: docker.DockerClient) -> None:
    up(host)
    assert host.osctl("service", "stop", "cron").returncode == 0
    assert containers(docker_client, host)["cron"].attrs["State"]["Running"] is False
    assert host.osctl("service", "up").returncode == 0
    assert containers(docker_client, host)["cron"].attrs["State"]["Running"] is False, "stop is respected by up"
    assert host.osctl("service", "start", "cron").returncode == 0
    assert containers(docker_client, host)["cron"].attrs["State"]["Running"] is True

    assert host.osctl("service", "disable", "metrics").returncode == 0
    assert host.osctl("service", "down").returncode == 0
    assert host.osctl("service", "up").returncode == 0
    found = containers(docker_client, host)
    assert "metrics" not in found and found["status"].attrs["State"]["Running"]
    proc = host.osctl("service", "start", "metrics")
    assert proc.returncode == 2 and "metrics is disabled" in proc.stderr
    assert host.osctl("service", "enable", "metrics").returncode == 0
    assert host.osctl("service", "start", "metrics").returncode == 0
    assert containers(docker_client, host)["metrics"].attrs["State"]["Running"]


def test_logs(host: Host) -> None:
    proc = host.osctl("pull", "v1.5", "--quiet")
    assert proc.returncode == 0
    proc = host.osctl("service", "logs", "network")
    assert proc.returncode == 2 and "no version is active" in proc.stderr
    up(host)
    proc = host.osctl("service", "logs", "network", "-n", "5")
    assert proc.returncode == 0 and "loopback up" in proc.stdout


@pytest.mark.parametrize("command", [["logs", "sylog"], ["stop", "sylog"], ["start", "sylog"], ["disable", "sylog"]])
def test_unknown_service_names_the_known_ones(host: Host, command: list[str]) -> None:
    up(host)
    proc = host.osctl("service", *command)
    assert proc.returncode == 2
    assert "v1.5 has no service 'sylog' (did you mean 'syslog'?)" in proc.stderr
    assert "known services: cron, metrics, network, ntp, status, syslog" in proc.stderr


def test_up_of_a_version_not_stored(host: Host) -> None:
    proc = host.osctl("service", "up", "--version", "v1.4")
    assert proc.returncode == 2 and "v1.4 is not stored on this host" in proc.stderr
    state = host.root / "var/lib/osctl/services.json"
    assert not state.exists() or json.loads(state.read_text()).get("version") != "v1.4"
