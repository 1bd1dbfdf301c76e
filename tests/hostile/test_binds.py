"""Hostile OS images against the bind rules (issue 19, item 2), on the real engine.

The attack: a service with a read-write bind of the root (``/:/r``) replaced another bind's
source (``/data``) with a symbolic link to ``/etc``; at its next restart under ``osctl
supervise`` the victim read the machine's real ``/etc/passwd``, and afterwards ``service
list``, ``service down``, ``upgrade`` and ``boot`` all failed, so the escaped container could
not be stopped or upgraded away from.

Today such an image is refused when it is pulled or validated; the swap itself is made here by
the test (as the attacker would have, through its bind of the root) on a victim-only image, to
show that no start follows the link and that every recovery command still works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from osctl.domain.naming import volume_labels, volume_name
from tests.support.hosts import Host
from tests.support.services import containers, running
from tests.support.supervisor import Supervise
from tests.support.waiting import wait_for

BOOT = "boot: {kernel: /boot/vmlinuz, initrd: /boot/initrd.img}\n"
# The victim prints the first line of the passwd file in its bind: the machine's own, if the
# engine followed the link.
VICTIM = """\
  victim:
    command: ["/bin/sh", "-c", "head -n 1 /d/passwd 2>/dev/null; exec sleep 3600"]
    volumes: ["/data:/d"]
    network_mode: none
"""
KEEPER = """\
  keeper:
    command: ["/bin/sleep", "3600"]
    network_mode: none
"""
DOOMED = """\
  doomed:
    command: ["/bin/sh", "-c", "exit 3"]
    oneshot: true
    network_mode: none
"""
ATTACKER = """\
  attacker:
    command: ["/bin/sh", "-c", "rm -rf /r/data && ln -s /etc /r/data; exec sleep 3600"]
    volumes: ["/:/r"]
    network_mode: none
"""
OUTSIDE = "leads outside the host root"


def manifest(*services: str) -> str:
    return "version: v1.5\nservices:\n" + "".join(services) + BOOT


def swap_data_for_etc(host: Host) -> None:
    """What the attacker did through its bind of the root."""
    data = host.root / "data"
    data.rename(host.root / "data.before")
    os.symlink("/etc", data)


def victim_read_the_machines_passwd(docker_client: docker.DockerClient, host: Host) -> bool:
    found = containers(docker_client, host).get("victim")
    return found is not None and b"root:" in found.logs()


def error_line(proc: object) -> str:
    """The one error line of a failed command (progress lines come before it)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]  # type: ignore[attr-defined]
    assert len(lines) == 1, proc.stderr  # type: ignore[attr-defined]
    return lines[0]


def ok(proc: object) -> None:
    assert proc.returncode == 0, proc.stderr  # type: ignore[attr-defined]


@pytest.fixture
def victim_host(host: Host, publish: Callable[[str, str], str]) -> Host:
    """A host running a version whose ``victim`` binds ``/data``, and a ``keeper`` beside it."""
    host.image = publish("v1.5", manifest(VICTIM, KEEPER))
    ok(host.osctl("upgrade", "--to", "v1.5"))
    assert (host.root / "data").is_dir()  # the engine made it, under the root
    return host


def test_the_supervisor_does_not_restart_through_a_swapped_bind(
    victim_host: Host, docker_client: docker.DockerClient, supervise: Callable[..., Supervise]
) -> None:
    host = victim_host
    sup = supervise("--max-failures", "2").wait_watching()
    swap_data_for_etc(host)
    docker_client.containers.get(f"osctl-{host.host_id}-victim-v1.5").kill()

    def failure() -> str:
        status = json.loads((host.root / "var/lib/osctl/supervisor.json").read_text())
        return str(status["services"].get("victim", {}).get("last_failure"))

    wait_for(lambda: OUTSIDE in failure() or victim_read_the_machines_passwd(docker_client, host), 15,
             lambda: f"{failure()}\n{sup.output()}", every=0.1)
    assert not victim_read_the_machines_passwd(docker_client, host)
    assert f"victim: bind source /data {OUTSIDE}" in sup.output()
    assert not running(docker_client, host, "victim")
    assert running(docker_client, host, "keeper")
    # The host can still be listed and brought down, the supervisor running.
    rows = {r["name"]: r for r in host.osctl_json("service", "list")}  # type: ignore[union-attr]
    assert rows["victim"]["state"] in ("exited", "failed") and rows["keeper"]["state"] == "running"
    ok(host.osctl("status"))
    ok(host.osctl("service", "down"))
    assert containers(docker_client, host) == {}


def test_a_host_with_a_swapped_bind_can_be_booted_and_swapped_away_from(
    victim_host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str]
) -> None:
    host = victim_host
    publish("v1.6", manifest(KEEPER))  # the same repository: a version without the victim
    publish("v1.7", manifest(KEEPER, DOOMED))  # and one that fails
    swap_data_for_etc(host)
    docker_client.containers.get(f"osctl-{host.host_id}-victim-v1.5").kill()

    booted = host.osctl("boot")
    assert booted.returncode == 1
    assert f"service victim failed: bind source /data {OUTSIDE}" in error_line(booted)
    assert running(docker_client, host, "keeper") and not running(docker_client, host, "victim")

    # A failed upgrade rolls back to the escaped version: its victim cannot start again, and that
    # must not leave the transaction open (every later command would fail at its recovery).
    failed = host.osctl("upgrade", "--to", "v1.7")
    assert failed.returncode == 1, failed.stderr
    assert error_line(failed).startswith("error: v1.7 rolled back: service doomed failed: exited with code 3")
    assert running(docker_client, host, "keeper") and not running(docker_client, host, "victim")

    ok(host.osctl("upgrade", "--to", "v1.6"))
    assert set(containers(docker_client, host)) == {"keeper"}
    for back in (["rollback"], ["downgrade", "--to", "v1.5"]):
        refused = host.osctl(*back)
        assert refused.returncode == 1, refused.stderr
        line = error_line(refused)
        assert f"v1.5 rolled back: service victim failed: bind source /data {OUTSIDE}" in line
        assert "v1.6 runs again" in line
        assert {n: c.labels["io.osctl.version"] for n, c in containers(docker_client, host).items()} == {
            "keeper": "v1.6"}
    ok(host.osctl("service", "down"))
    assert not victim_read_the_machines_passwd(docker_client, host)


@pytest.mark.parametrize(("services", "refusal"), [
    ((ATTACKER, VICTIM), "read-write bind of / contains the bind source of victim /data"),
    (("  logs:\n    command: [/bin/sleep, '1']\n    volumes: ['logs:/']\n",
      "  probe:\n    command: [/bin/sleep, '1']\n    volumes: ['/data:/proc/sys']\n"),
     "services.logs.volumes[0]: '/': nothing can be mounted over the container's root (and 1 more)"),
], ids=["rw-ancestor", "volume-on-root-and-bind-on-proc"])
def test_a_hostile_image_is_refused_before_anything_is_created(
    host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str],
    services: tuple[str, ...], refusal: str
) -> None:
    host.image = publish("v1.5", manifest(*services))
    for command in (["image", "validate", "v1.5"], ["upgrade", "--to", "v1.5"]):
        proc = host.osctl(*command)
        assert proc.returncode == 2, proc.stderr
        assert refusal in error_line(proc)
    found = docker_client.volumes.list(filters={"label": f"io.osctl.host={host.host_id}"})
    assert containers(docker_client, host) == {} and found == []
    assert not Path(host.root / "data").exists()


def test_a_failed_install_removes_the_volumes_it_created_for_nothing_and_keeps_the_others(
    host: Host, docker_client: docker.DockerClient, publish: Callable[[str, str], str]
) -> None:
    """``broken`` binds a file of the host over a directory of its image: its start fails (a runc
    error, nothing of it ran) and the install rolls back. ``scratch``, made for it, never held anything: it goes. ``logs`` was
    there before, and ``cache`` was mounted by ``keeper``, which ran: both stay."""
    host.image = publish("v1.5", manifest(
        '  keeper:\n    command: ["/bin/sleep", "3600"]\n    volumes: ["logs:/var/log", "cache:/var/cache"]\n',
        '  broken:\n    command: ["/bin/sleep", "3600"]\n    volumes: ["scratch:/scratch", "/afile:/usr/lib"]\n'))
    (host.root / "afile").write_text("a file, not a directory\n")
    docker_client.volumes.create(volume_name(host.host_id, "logs"), labels=volume_labels(host.host_id, "logs"))
    proc = host.osctl("upgrade", "--to", "v1.5")
    assert proc.returncode == 1
    assert error_line(proc).startswith("error: v1.5 rolled back: service broken failed: starting container")
    assert containers(docker_client, host) == {}
    found = docker_client.volumes.list(filters={"label": f"io.osctl.host={host.host_id}"})
    assert sorted(v.name for v in found) == sorted(volume_name(host.host_id, n) for n in ("cache", "logs"))
