"""Upgrade, downgrade, rollback, staging and boot, observed through the engine and the files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable

import docker
import pytest

from tests.support.hosts import Host, shipped_manifest
from tests.support.services import LONG_RUNNING, containers, running_sets
from tests.support.waiting import wait_for


def pointer(host: Host) -> dict[str, object]:
    return json.loads((host.root / "boot/osctl/boot.json").read_text())  # type: ignore[no-any-return]


def assert_runs_only(client: docker.DockerClient, host: Host, version: str) -> None:
    assert running_sets(client, host) == {version: LONG_RUNNING[version]}
    assert pointer(host)["default"] == version
    journal = host.root / "var/lib/osctl/journal.json"
    assert json.loads(journal.read_text())["result"] != "in-progress"


def osctl_ok(host: Host, *args: str) -> str:
    proc = host.osctl(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def dead_registry(host: Host) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host.image = f"127.0.0.1:{sock.getsockname()[1]}/osctl/os"


def test_install_upgrade_downgrade_offline_and_rollback(host: Host, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.3")
    assert_runs_only(docker_client, host, "v1.3")
    osctl_ok(host, "upgrade", "--to", "v1.5")
    assert_runs_only(docker_client, host, "v1.5")
    assert pointer(host)["previous"] == "v1.3"
    status = host.osctl_json("status")
    assert isinstance(status, dict) and status["running_versions"] == ["v1.5"] and status["previous"] == "v1.3"

    dead_registry(host)  # every stored version works without the network
    osctl_ok(host, "downgrade", "--to", "v1.3")
    assert_runs_only(docker_client, host, "v1.3")
    osctl_ok(host, "rollback")
    assert_runs_only(docker_client, host, "v1.5")
    assert pointer(host)["previous"] == "v1.3"


def test_wrong_direction_and_same_version(host: Host) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.4")
    proc = host.osctl("upgrade", "--to", "v1.3")
    assert proc.returncode == 2 and "v1.3 is older than the running v1.4" in proc.stderr
    assert "osctl downgrade --to v1.3" in proc.stderr
    proc = host.osctl("downgrade", "--to", "v1.5")
    assert proc.returncode == 2 and "osctl upgrade --to v1.5" in proc.stderr
    proc = host.osctl("upgrade", "--to", "v1.4")
    assert proc.returncode == 0 and "already running" in proc.stdout
    proc = host.osctl("rollback")
    assert proc.returncode == 2 and "no previous version" in proc.stderr
    proc = host.osctl("upgrade", "--to", "v9.9")
    assert proc.returncode == 2 and "v9.9 does not exist" in proc.stderr and "rollback" not in proc.stderr
    status = host.osctl_json("status")
    assert isinstance(status, dict) and status["last_rollback"] is None, "nothing changed, nothing rolled back"
    assert json.loads((host.root / "var/lib/osctl/journal.json").read_text())["result"] == "aborted"


def test_dry_run_changes_nothing(host: Host, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.4")
    plan = host.osctl_json("upgrade", "--to", "v1.5", "--dry-run")
    assert isinstance(plan, dict) and plan["result"] == "dry-run" and plan["stored"] is False
    assert not (host.root / "var/lib/osctl/store/v1.5.json").exists(), "a dry run pulls nothing"
    osctl_ok(host, "pull", "v1.5")
    plan = host.osctl_json("upgrade", "--to", "v1.5", "--dry-run")
    assert isinstance(plan, dict) and "metrics" in plan["added"] and "console" in plan["removed"]
    assert_runs_only(docker_client, host, "v1.4")


def test_broken_version_rolls_back_by_itself(host: Host, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.5")
    before = pointer(host)
    proc = host.osctl("upgrade", "--to", "v1.6", "--health-timeout", "4")
    assert proc.returncode == 1
    assert "v1.6 rolled back: service status failed: did not become healthy in time; v1.5 runs again" in proc.stderr
    assert_runs_only(docker_client, host, "v1.5")
    assert pointer(host) == before, "the boot pointer is untouched"
    status = host.osctl_json("status")
    assert isinstance(status, dict) and status["last_rollback"]["to_version"] == "v1.6"
    assert "status" in status["last_rollback"]["reason"]


def test_volume_data_survives_upgrade_and_return(host: Host, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.3")
    containers(docker_client, host)["syslog"].exec_run(["/bin/sh", "-c", "echo from-v1.3 > /var/log/keep"])
    osctl_ok(host, "upgrade", "--to", "v1.5")
    assert containers(docker_client, host)["syslog"].exec_run(["cat", "/var/log/keep"]).output == b"from-v1.3\n"
    osctl_ok(host, "downgrade", "--to", "v1.3")
    assert containers(docker_client, host)["syslog"].exec_run(["cat", "/var/log/keep"]).output == b"from-v1.3\n"


def test_stage_then_boot_promotes_a_healthy_trial(host: Host, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.4")
    osctl_ok(host, "upgrade", "--to", "v1.5", "--stage")
    assert_runs_only(docker_client, host, "v1.4")  # nothing swapped yet
    assert pointer(host)["trial"] == "v1.5"
    assert (host.root / "boot/loader/entries/osctl-v1.5+3.conf").is_file(), "the loader counts its tries"
    assert "default osctl-*" in (host.root / "boot/loader/loader.conf").read_text()
    result = host.osctl_json("boot")
    assert isinstance(result, dict) and result["trial_result"] == "promoted"
    assert_runs_only(docker_client, host, "v1.5")
    assert pointer(host)["previous"] == "v1.4" and pointer(host)["trial"] is None
    entries = sorted(p.name for p in (host.root / "boot/loader/entries").iterdir())
    assert entries == ["osctl-v1.4.conf", "osctl-v1.5.conf"], "blessed: no counter left"


def test_unhealthy_trial_falls_back(host: Host, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.5")
    osctl_ok(host, "upgrade", "--to", "v1.6", "--stage")
    result = host.osctl_json("boot", "--health-timeout", "4")
    assert isinstance(result, dict) and result["trial_result"] == "fell-back" and result["version"] == "v1.5"
    assert "status" in str(result["reason"])
    assert_runs_only(docker_client, host, "v1.5")
    assert pointer(host)["trial"] is None


def test_trial_falls_back_when_its_tries_are_spent(host: Host, docker_client: docker.DockerClient) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.4")
    osctl_ok(host, "upgrade", "--to", "v1.5", "--stage", "--tries", "2")
    host.extra_env["OSCTL_CRASH_AT"] = "boot:trial-started"
    for left in (1, 0):  # two boots that die while trying v1.5
        assert host.osctl("boot").returncode == -9
        assert pointer(host)["trial_tries"] == left
    del host.extra_env["OSCTL_CRASH_AT"]
    result = host.osctl_json("boot")
    assert isinstance(result, dict) and result["trial_result"] == "fell-back"
    assert result["reason"] == "its tries are spent"
    assert_runs_only(docker_client, host, "v1.4")


def test_concurrent_upgrades(host: Host) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.3")
    first = subprocess.Popen([sys.executable, "-m", "osctl", "upgrade", "--to", "v1.5"], env=host.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    lock = host.root / "var/lib/osctl/lock"  # the holder of the host's lock writes its pid there
    wait_for(lambda: first.poll() is not None or lock.read_text().strip() == f"pid {first.pid}: upgrade v1.5", 60,
             lambda: f"the first upgrade to take the host's lock: {lock.read_text()!r}")
    second = host.osctl("upgrade", "--to", "v1.5")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 5
    assert f"another osctl is changing this host (pid {first.pid}: upgrade v1.5)" in second.stderr


POINTS = ["resolve", "pull", "verify", "stage", "prepare", "swap", "swap:old-stopped", "health", "commit",
          "commit:pointer-written", "cleanup"]
COMMITTED = {"commit:pointer-written", "cleanup"}


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
@pytest.mark.parametrize("point", POINTS)
def test_crash_at_every_point_recovers_to_one_version(host: Host, docker_client: docker.DockerClient,
                                                      point: str, direction: str) -> None:
    start, target = ("v1.4", "v1.5") if direction == "upgrade" else ("v1.5", "v1.4")
    osctl_ok(host, "upgrade", "--to", start)
    host.extra_env["OSCTL_CRASH_AT"] = point
    proc = host.osctl(direction, "--to", target)
    assert proc.returncode == -9, proc.stderr  # killed, as by kill -9 or a power cut
    del host.extra_env["OSCTL_CRASH_AT"]
    if point in ("swap:old-stopped", "health"):  # and the power goes: every container of the host stops
        for c in docker_client.containers.list(filters={"label": f"io.osctl.host={host.host_id}"}):
            try:
                c.kill()
            except docker.errors.APIError as exc:  # a one-shot of the new set that ended since the listing
                if exc.status_code != 409:
                    raise
    status = host.osctl_json("status")
    assert isinstance(status, dict) and status["transaction"]["step"] in point
    result = host.osctl_json("boot")
    expected = target if point in COMMITTED else start
    assert isinstance(result, dict) and result["recovered"], result
    assert_runs_only(docker_client, host, expected)
    assert (host.root / f"var/lib/osctl/store/{target}.json").exists() or point in ("resolve", "pull")


def test_min_upgrade_from_needs_force(host: Host, docker_client: docker.DockerClient,
                                      publish: Callable[[str, str], str]) -> None:
    host.image = publish("v1.3", shipped_manifest("v1.3"))
    publish("v1.5", shipped_manifest("v1.5").replace("min_upgrade_from: v1.3", "min_upgrade_from: v1.4"))
    osctl_ok(host, "upgrade", "--to", "v1.3")
    proc = host.osctl("upgrade", "--to", "v1.5")
    assert proc.returncode == 2
    assert "v1.5 can only be installed over v1.4 or newer, and this host runs v1.3" in proc.stderr
    assert_runs_only(docker_client, host, "v1.3")
    osctl_ok(host, "upgrade", "--to", "v1.5", "--force")
    assert_runs_only(docker_client, host, "v1.5")
