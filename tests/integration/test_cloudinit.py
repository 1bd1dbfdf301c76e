"""Applying user data to a host root, observed on disk and in the engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker

from tests.support.hosts import REGISTRY, Host
from tests.support.services import containers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "user-data"


def seed(host: Host, user_data: str | bytes, instance_id: str = "iid-one") -> None:
    folder = host.root / "var/lib/osctl/seed/nocloud"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user-data").write_bytes(user_data.encode() if isinstance(user_data, str) else user_data)
    (folder / "meta-data").write_text(f"instance-id: {instance_id}\nlocal-hostname: ignored\n")


def apply(host: Host, *args: str) -> dict[str, dict[str, object]]:
    proc = host.osctl("cloud-init", "apply", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return {step["name"]: step for step in json.loads(proc.stdout)["steps"]}


def test_pinned_version_example(host: Host, docker_client: docker.DockerClient) -> None:
    seed(host, (EXAMPLES / "pinned-version.yaml").read_text())
    steps = apply(host)
    assert steps["converge"]["result"] == "ran"
    pointer = json.loads((host.root / "boot/osctl/boot.json").read_text())
    assert pointer["default"] == "v1.4"
    assert {c.labels["io.osctl.version"] for c in containers(docker_client, host).values()} == {"v1.4"}
    hostname = (host.root / "etc/hostname").read_text().strip()
    assert hostname and hostname in (host.root / "etc/hosts").read_text()
    passwd = (host.root / "etc/passwd").read_text()
    user = passwd.splitlines()[-1].split(":")[0]
    keys = host.root / f"home/{user}/.ssh/authorized_keys"
    assert keys.read_text().startswith("ssh-") and oct(keys.stat().st_mode & 0o777) == "0o600"
    config = (host.root / "etc/osctl/config.yaml").read_text()
    assert "version: v1.4" in config
    assert oct((host.root / "var/lib/osctl/cloud-init/user-data").stat().st_mode & 0o777) == "0o600"

    # Applying again changes nothing.
    before = {n: c.attrs["State"]["StartedAt"] for n, c in containers(docker_client, host).items()}
    again = apply(host)
    assert {s["result"] for s in again.values()} <= {"unchanged", "skipped"}, again
    assert {n: c.attrs["State"]["StartedAt"] for n, c in containers(docker_client, host).items()} == before
    assert passwd == (host.root / "etc/passwd").read_text()

    # A new instance runs the once-steps again.
    seed(host, (EXAMPLES / "pinned-version.yaml").read_text(), instance_id="iid-two")
    assert apply(host)["users"]["result"] == "ran"


def test_extra_service_example(host: Host, docker_client: docker.DockerClient) -> None:
    assert host.osctl("upgrade", "--to", "v1.5").returncode == 0
    apply(host, "--user-data", str(EXAMPLES / "extra-service.yaml"))
    found = containers(docker_client, host)
    assert found["node-exporter"].attrs["State"]["Running"]
    assert found["node-exporter"].image.tags == [] or any("node-exporter" in t for t in found["node-exporter"].image.tags)
    assert "NTP_SERVERS=127.0.0.1" in found["ntp"].attrs["Config"]["Env"]
    assert "server 127.0.0.1" in (host.root / "etc/ntp.conf").read_text()
    rows = {r["name"]: r for r in host.osctl_json("service", "list")}  # type: ignore[union-attr]
    assert rows["node-exporter"]["state"] == "running"


def test_multi_part_example_runs_its_script_once(host: Host) -> None:
    assert host.osctl("upgrade", "--to", "v1.4").returncode == 0
    steps = apply(host, "--user-data", str(EXAMPLES / "multi-part.txt"))
    scripts = [name for name in steps if name.startswith("script:")]
    assert scripts and all(steps[name]["result"] == "ran" for name in scripts), steps
    assert (host.root / "etc/motd").exists()
    log = (host.root / "var/log/osctl/cloud-init.log").read_text()
    assert "exit 0" in log
    again = apply(host, "--user-data", str(EXAMPLES / "multi-part.txt"))
    assert all(again[name]["result"] == "skipped" for name in scripts)


def test_failed_once_step_runs_again(host: Host) -> None:
    assert host.osctl("upgrade", "--to", "v1.4").returncode == 0
    user_data = host.root.parent / "ud.yaml"
    user_data.write_text("#cloud-config\nruncmd:\n  - test -e /host/tmp/ready && echo ready > /host/tmp/done\n")
    proc = host.osctl("cloud-init", "apply", "--user-data", str(user_data))
    assert proc.returncode == 1 and "runcmd" in proc.stderr
    status = host.osctl_json("status")
    assert isinstance(status, dict)
    assert status["cloud_init"]["steps"]["runcmd"]["result"] == "failed"
    assert status["cloud_init"]["steps"]["runcmd"]["exit_code"] == 1
    (host.root / "tmp").mkdir()
    (host.root / "tmp/ready").write_text("")
    assert apply(host, "--user-data", str(user_data))["runcmd"]["result"] == "ran"
    assert (host.root / "tmp/done").read_text() == "ready\n"


def test_files_stay_under_the_root(host: Host, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (host.root / "etc").mkdir()
    os.symlink(outside, host.root / "etc/escape")
    user_data = host.root.parent / "ud.yaml"
    user_data.write_text("#cloud-config\nwrite_files:\n  - path: /etc/escape/owned\n    content: x\n")
    proc = host.osctl("cloud-init", "apply", "--user-data", str(user_data))
    assert proc.returncode == 1 and "leads outside the host root" in proc.stderr
    assert list(outside.iterdir()) == []


def test_invalid_user_data_changes_nothing(host: Host) -> None:
    proc = host.osctl("cloud-init", "apply", "--user-data", str(EXAMPLES / "invalid.yaml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (host.root / "etc/osctl/config.yaml").exists()
    assert REGISTRY  # the registry is not needed for refusing bad input
