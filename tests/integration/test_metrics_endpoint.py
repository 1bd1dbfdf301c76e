"""``osctl supervise --metrics``: a scraper sees the running version, the services up, and a
killed service's restart, over HTTP, from the real engine."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import docker
import pytest

from tests.support.hosts import Host
from tests.support.metrics import free_port, named, scrape, value
from tests.support.services import LONG_RUNNING, up
from tests.support.supervisor import Supervise
from tests.support.waiting import wait_for


def test_supervise_serves_versions_services_and_restarts(host: Host, docker_client: docker.DockerClient,
                                                         supervise: Callable[..., Supervise]) -> None:
    up(host)
    port = free_port()
    sup = supervise("--metrics", f"127.0.0.1:{port}").wait_watching()
    url = f"http://127.0.0.1:{port}/metrics"
    assert f"metrics on {url}" in sup.output()

    found = scrape(url)
    assert named(found, "osctl_host_info") == {
        (("host_id", host.host_id), ("next_boot", ""), ("running", "v1.5")): 1.0}  # service up: nothing committed
    assert named(found, "osctl_service_up") == {(("service", name),): 1.0 for name in LONG_RUNNING["v1.5"]}
    assert value(found, "osctl_service_restarts_total", service="ntp") == 0.0
    assert value(found, "osctl_metrics_errors_total", part="engine") == 0.0

    docker_client.containers.get(f"osctl-{host.host_id}-ntp-v1.5").kill()

    def restarted() -> bool:
        now = scrape(url)
        return (value(now, "osctl_service_restarts_total", service="ntp") == 1.0
                and value(now, "osctl_service_up", service="ntp") == 1.0)

    wait_for(restarted, 10, lambda: f"{scrape(url)}\n{sup.output()}")
    assert value(scrape(url), "osctl_service_restarts_total", service="syslog") == 0.0

    assert sup.terminate() == 0
    with pytest.raises(urllib.error.URLError):  # the endpoint ends with the supervisor
        urllib.request.urlopen(url, timeout=5)
