"""How a swap stops the old set and hands over start-first services, observed through the
engine's own events (issue #16): the old set's stops all go out at once, each with its
service's stop signal and grace period; a new service starts once its own old container is
gone, not after the slowest stop of the set; a start-first service's new container is up and
healthy before its old one gets a signal; a crash inside either ends with one version running.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import docker
import pytest

from tests.support.faults import osctl_ok
from tests.support.hosts import Host
from tests.support.services import containers, running_sets

SLOW = 2  # seconds a slow service takes to honour its stop signal
READY_AFTER = 1  # seconds web takes, once started, to become healthy
# A 3-deep chain of services that each take SLOW seconds to stop, a web page that hands over
# start-first (its probe passes READY_AFTER seconds after it starts), and a service that only
# stops on SIGUSR1 within a 1 s grace period.
MANIFEST = f"""\
version: {{version}}
services:
  base:
    command: ["/bin/sh", "-c", "trap 'sleep {SLOW}; exit 0' TERM; while :; do sleep 1 & wait; done"]
    environment: {{{{V: "{{version}}"}}}}
    network_mode: none
  middle:
    command: ["/bin/sh", "-c", "trap 'sleep {SLOW}; exit 0' TERM; while :; do sleep 1 & wait; done"]
    network_mode: none
    depends_on: [base]
  top:
    command: ["/bin/sh", "-c", "trap 'sleep {SLOW}; exit 0' TERM; while :; do sleep 1 & wait; done"]
    network_mode: none
    depends_on: [middle]
  web:
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; (sleep {READY_AFTER}; touch /tmp/ready) & while :; do sleep 1 & wait; done"]
    network_mode: none
    update_order: start-first
    healthcheck: {{{{test: ["CMD", "test", "-f", "/tmp/ready"], interval: 1s, timeout: 1s, retries: 3}}}}
  usr1:
    command: ["/bin/sh", "-c", "trap 'exit 0' USR1; trap '' TERM; while :; do sleep 1 & wait; done"]
    network_mode: none
    stop_signal: SIGUSR1
    stop_grace_period: 1s
boot:
  kernel: /boot/vmlinuz
  initrd: /boot/initrd.img
  cmdline: "console=ttyS0"
"""
SERVICES = {"base", "middle", "top", "web", "usr1"}


@dataclass
class Seen:
    """The engine's container events of one host, as (time in seconds, action, service, version)."""

    rows: list[tuple[float, str, str, str]] = field(default_factory=list)

    def when(self, action: str, service: str, version: str) -> float:
        found = [t for t, a, s, v in self.rows if a == action and s == service and v == version]
        assert found, f"no {action} event of {service} {version}: {self.rows}"
        return found[0]


@pytest.fixture
def events(docker_client: docker.DockerClient, host: Host) -> Iterator[Seen]:
    seen = Seen()
    stream = docker_client.events(decode=True, filters={"type": "container",
                                                        "label": f"io.osctl.host={host.host_id}"})

    def pump() -> None:
        for event in stream:
            attrs = (event.get("Actor") or {}).get("Attributes") or {}
            if "io.osctl.service" in attrs:
                seen.rows.append((event["timeNano"] / 1e9, event.get("Action", ""), attrs["io.osctl.service"],
                                  attrs.get("io.osctl.version", "")))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    yield seen
    stream.close()
    thread.join(5)


def upgrade_json(host: Host, version: str) -> dict[str, object]:
    data = json.loads(osctl_ok(host, "upgrade", "--to", version, "--json"))
    assert data["result"] == "committed", data
    return data  # type: ignore[no-any-return]


def test_the_old_set_stops_at_once_and_a_start_first_service_is_never_down(
        host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str], events: Seen) -> None:
    host.image = publish("v2.0", MANIFEST.format(version="v2.0"))
    publish("v2.1", MANIFEST.format(version="v2.1"))
    osctl_ok(host, "upgrade", "--to", "v2.0")
    config = {name: c.attrs["Config"] for name, c in containers(docker_client, host).items()}
    assert (config["usr1"]["StopSignal"], config["usr1"]["StopTimeout"]) == ("SIGUSR1", 1)
    assert config["base"]["StopSignal"] == "SIGTERM" and config["base"].get("StopTimeout") in (None, 10)

    outcome = upgrade_json(host, "v2.1")

    kills = {name: events.when("kill", name, "v2.0") for name in SERVICES}
    spread = max(kills.values()) - min(kills.values())
    assert spread < 0.5, f"every old service gets its stop at the same moment, not level by level: {kills}"
    dies = {name: events.when("die", name, "v2.0") for name in SERVICES}
    assert dies["usr1"] - kills["usr1"] < 1.5, "usr1 stopped on SIGUSR1, not killed after 10 s"
    stop_phase = max(dies.values()) - min(kills.values())
    assert stop_phase < SLOW + 1.5, f"the 3-deep chain's slow stops did not add up: {stop_phase:.2f} s"
    # Stopped level by level, the chain alone would take 3 x SLOW; and the downtime covers it.
    assert isinstance(outcome["downtime"], float) and outcome["downtime"] >= stop_phase - 0.5, (outcome, stop_phase)

    for name in SERVICES - {"web"}:  # stop-first: never the old and the new container of one service at once
        assert events.when("start", name, "v2.1") >= dies[name], f"new {name} started before its old one died"
    assert events.when("start", "usr1", "v2.1") < dies["base"], "usr1 waited for another service's slow stop"

    web_started = events.when("start", "web", "v2.1")
    assert web_started + READY_AFTER <= kills["web"], "the old web page got its stop before the new one was healthy"
    assert web_started < min(kills.values()), "start-first: the new web page started before the old set stopped"
    assert running_sets(docker_client, host) == {"v2.1": SERVICES}


def test_a_start_first_service_that_never_gets_healthy_leaves_the_old_set_untouched(
        host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str], events: Seen) -> None:
    host.image = publish("v2.0", MANIFEST.format(version="v2.0"))
    publish("v2.1", MANIFEST.format(version="v2.1").replace('"test", "-f", "/tmp/ready"', '"false"'))
    osctl_ok(host, "upgrade", "--to", "v2.0")
    proc = host.osctl("upgrade", "--to", "v2.1", "--health-timeout", "3")
    assert proc.returncode == 1, proc.stderr
    assert "v2.1 rolled back: service web failed" in proc.stderr and "v2.0 runs again" in proc.stderr
    assert not [row for row in events.rows if row[1] == "kill" and row[3] == "v2.0"], "no old service was stopped"
    assert running_sets(docker_client, host) == {"v2.0": SERVICES}


def test_manifest_mistakes_about_swap_order_are_one_line_errors(host: Host, publish: Callable[[str, str], str]) -> None:
    text = MANIFEST.format(version="v2.0")
    cases = {
        "web depends on a stop-first service": (
            text.replace("    update_order: start-first\n", "    update_order: start-first\n    depends_on: [base]\n"),
            "services.web.depends_on.base: a start-first service starts while the old set still runs, so what it "
            "depends on must be start-first too: 'base' is stop-first"),
        "a signal that cannot stop anything": (text.replace("stop_signal: SIGUSR1", "stop_signal: SIGSTOP"),
                                               "'SIGSTOP' is not a signal a service can be stopped with"),
        "an endless grace period": (text.replace("stop_grace_period: 1s", "stop_grace_period: 2h"),
                                    "7200 s is longer than the longest stop osctl waits for"),
    }
    for why, (manifest, message) in cases.items():
        host.image = publish("v2.0", manifest)
        proc = host.osctl("pull", "v2.0")
        assert proc.returncode != 0, why
        assert message in proc.stderr, (why, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3, proc.stderr


@pytest.mark.parametrize("point", ["swap:handover", "swap:stopping"])
def test_a_crash_inside_the_hand_over_or_the_parallel_stop_ends_with_one_version(
        host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str], point: str) -> None:
    host.image = publish("v2.0", MANIFEST.format(version="v2.0"))
    publish("v2.1", MANIFEST.format(version="v2.1"))
    osctl_ok(host, "upgrade", "--to", "v2.0")
    host.extra_env["OSCTL_CRASH_AT"] = point
    proc = host.osctl("upgrade", "--to", "v2.1")
    assert proc.returncode == -9, proc.stderr
    del host.extra_env["OSCTL_CRASH_AT"]
    if point == "swap:handover":  # killed with both web pages up
        assert "web" in running_sets(docker_client, host).get("v2.1", set())
    result = host.osctl_json("boot")
    assert isinstance(result, dict) and result["recovered"] and "rolled back" in result["recovered"], result
    assert running_sets(docker_client, host) == {"v2.0": SERVICES}
