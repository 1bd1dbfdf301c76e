"""The engine: things removed behind osctl's back, and no engine at all."""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest

from tests.support.faults import (FaultRecord, assert_clear_error, assert_consistent, installed, osctl_ok, read_marker,
                                  write_marker)
from tests.support.hosts import Host


def test_container_removed_behind_our_back(host: Host, docker_client: docker.DockerClient,
                                           fault: Callable[[str], FaultRecord]) -> None:
    record = fault("system containers removed behind osctl's back")
    marker = installed(host, docker_client, "v1.5")
    for name in ("ntp", "syslog"):
        docker_client.containers.get(f"osctl-{host.host_id}-{name}-v1.5").remove(force=True)
    osctl_ok(host, "boot")
    assert_consistent(host, docker_client, "v1.5", marker, record)


def test_volume_removed_behind_our_back(host: Host, docker_client: docker.DockerClient,
                                        fault: Callable[[str], FaultRecord]) -> None:
    record = fault("named volume deleted behind osctl's back")
    marker = installed(host, docker_client, "v1.5")
    osctl_ok(host, "service", "down")
    docker_client.volumes.get(f"osctl-{host.host_id}-logs").remove()
    osctl_ok(host, "boot")
    assert_consistent(host, docker_client, "v1.5")
    assert read_marker(docker_client, host) == "", "the deleted volume's data is the only loss"
    volume = docker_client.volumes.get(f"osctl-{host.host_id}-logs")
    assert volume.attrs["Labels"]["io.osctl.host"] == host.host_id
    marker = write_marker(docker_client, host)  # the recreated volume works and keeps data
    osctl_ok(host, "service", "down")
    osctl_ok(host, "boot")
    assert_consistent(host, docker_client, "v1.5", marker, record)


@pytest.mark.parametrize("args", [("status",), ("pull", "v1.3"), ("upgrade", "--to", "v1.5"),
                                  ("service", "list"), ("boot",), ("service", "up")])
def test_engine_socket_missing(host: Host, docker_client: docker.DockerClient,
                               fault: Callable[[str], FaultRecord], args: tuple[str, ...]) -> None:
    record = fault(f"engine socket missing: osctl {' '.join(args)}")
    marker = installed(host, docker_client, "v1.4")
    host.extra_env["DOCKER_HOST"] = "unix:///nonexistent.sock"
    assert_clear_error(host.osctl(*args), 3, "cannot reach the Docker engine")
    del host.extra_env["DOCKER_HOST"]
    assert_consistent(host, docker_client, "v1.4", marker, record)


def test_engine_socket_missing_list_versions(host: Host, fault: Callable[[str], FaultRecord]) -> None:
    fault("engine socket missing: osctl list-versions (degrades to a warning)")
    host.extra_env["DOCKER_HOST"] = "unix:///nonexistent.sock"
    proc = host.osctl("list-versions")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("warning:")], proc.stderr
    assert "v1.5" in proc.stdout
