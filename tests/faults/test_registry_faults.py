"""Registry faults: down, flaky, always failing."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import docker

from tests.support.faults import FaultRecord, assert_clear_error, assert_consistent, installed, osctl_ok
from tests.support.hosts import Host
from tests.support.proxies import FlakyProxy


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_registry_down_before_upgrade(host: Host, docker_client: docker.DockerClient,
                                      fault: Callable[[str], FaultRecord]) -> None:
    record = fault("registry down before pull/upgrade (dead port)")
    marker = installed(host, docker_client, "v1.4")
    host.image = f"127.0.0.1:{dead_port()}/osctl/os"
    for args in (("pull", "v1.5"), ("upgrade", "--to", "v1.5")):
        assert_clear_error(host.osctl(*args), 4, "registry")
    assert not (host.root / "var/lib/osctl/store/v1.5.json").exists()
    assert_consistent(host, docker_client, "v1.4", marker, record)


def test_flaky_registry_500_then_ok(host: Host, docker_client: docker.DockerClient,
                                    fault: Callable[[str], FaultRecord]) -> None:
    record = fault("flaky registry: 3x HTTP 500, then forwards")
    marker = installed(host, docker_client, "v1.4")
    with FlakyProxy("500", 3) as proxy:
        host.image = f"{proxy.address}/osctl/os"
        rows = host.osctl_json("list-versions")
        assert proxy.bad_answers == 3
        assert isinstance(rows, list) and any(r["version"] == "v1.5" and r["available"] for r in rows), rows
        proxy.bad_answers = 0  # and again, for the pull and the swap
        osctl_ok(host, "upgrade", "--to", "v1.5")
        assert proxy.bad_answers == 3
    assert_consistent(host, docker_client, "v1.5", marker, record)


def test_flaky_registry_resets_then_ok(host: Host, docker_client: docker.DockerClient,
                                       fault: Callable[[str], FaultRecord]) -> None:
    record = fault("flaky registry: 3 connection resets, then forwards")
    marker = installed(host, docker_client, "v1.4")
    with FlakyProxy("reset", 3) as proxy:
        host.image = f"{proxy.address}/osctl/os"
        proc = host.osctl("pull", "v1.5", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert proxy.bad_answers == 3
    assert (host.root / "var/lib/osctl/store/v1.5.json").exists()
    assert_consistent(host, docker_client, "v1.4", marker, record)


def test_registry_always_503(host: Host, docker_client: docker.DockerClient,
                             fault: Callable[[str], FaultRecord]) -> None:
    record = fault("registry always answers 503")
    marker = installed(host, docker_client, "v1.4")
    with FlakyProxy("503", None) as proxy:
        host.image = f"{proxy.address}/osctl/os"
        for args in (("pull", "v1.5"), ("upgrade", "--to", "v1.5")):
            started = time.monotonic()
            assert_clear_error(host.osctl(*args, timeout=120), 4)
            assert time.monotonic() - started < 60, "bounded retries"
        proc = host.osctl("list-versions")  # falls back to the store, with a warning
        assert proc.returncode == 0 and "v1.4" in proc.stdout and "Traceback" not in proc.stderr
    assert not (host.root / "var/lib/osctl/store/v1.5.json").exists()
    assert_consistent(host, docker_client, "v1.4", marker, record)
