"""Fault tests: the world misbehaves, nothing is lost.

Every fault test registers the fault it injects (the ``fault`` fixture: ``fault("registry down
before pull")``) and checks the same four things with the helpers below:

1. a clear error (``assert_clear_error``): one ``error:`` line, no traceback, the right exit code;
2. exactly one consistent version (``assert_consistent``): engine, boot pointer and journal agree;
3. no data lost: a marker written into the ``logs`` volume before the fault is read back after;
4. no strays: no containers of another version, no helpers, no ``.partial-*``/``*.tmp`` files,
   no store record without its boot folder.

At the end of the run, ``tests/conftest.py`` prints a summary line "faults tried: N, recovered:
M, data checked: K" and each fault's outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import docker

from tests.support.hosts import Host, listed_containers
from tests.support.services import LONG_RUNNING, running_sets

__all__ = ["FAULTS", "LONG_RUNNING", "FaultRecord", "assert_clear_error", "assert_consistent", "assert_no_strays",
           "broken_upgrade_in_swap", "installed", "osctl_ok", "read_marker", "running_sets", "service_containers",
           "syslog", "wait_for_step", "write_marker"]


# ---------------------------------------------------------------- the registry of faults


@dataclass
class FaultRecord:
    name: str
    nodeid: str
    outcome: str = "not run"
    data_checked: bool = False


FAULTS: dict[str, FaultRecord] = {}  # nodeid -> the fault that test injects (in the process running it)


def register(nodeid: str, name: str) -> FaultRecord:
    FAULTS[nodeid] = FaultRecord(name, nodeid)
    return FAULTS[nodeid]


# ---------------------------------------------------------------- the four checks


def osctl_ok(host: Host, *args: str, timeout: float = 300) -> str:
    proc = host.osctl(*args, timeout=timeout)
    assert proc.returncode == 0, f"osctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def assert_clear_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """(1) One ``error:`` line (plus at most a ``hint:``), no traceback, exit code ``code``."""
    err = proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}: {err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"wanted one error line: {err!r}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def service_containers(client: docker.DockerClient, host: Host) -> list[docker.models.containers.Container]:
    return listed_containers(client, {"label": f"io.osctl.host={host.host_id}"})


def syslog(client: docker.DockerClient, host: Host) -> docker.models.containers.Container:
    for c in service_containers(client, host):
        if c.labels.get("io.osctl.service") == "syslog" and c.attrs["State"]["Running"]:
            return c
    raise AssertionError(f"no running syslog container for {host.host_id}")


def write_marker(client: docker.DockerClient, host: Host) -> str:
    """(3, before) A token in the named volume ``logs``, written through the syslog container."""
    token = f"fault-{uuid.uuid4().hex}"
    result = syslog(client, host).exec_run(["/bin/sh", "-c", f"echo {token} > /var/log/fault-marker"])
    assert result.exit_code == 0, result.output
    return token


def read_marker(client: docker.DockerClient, host: Host) -> str:
    result = syslog(client, host).exec_run(["cat", "/var/log/fault-marker"])
    return result.output.decode().strip() if result.exit_code == 0 else ""


def assert_no_strays(host: Host) -> None:
    """(4, files) No half-written files, no store record without its folder."""
    store = host.root / "var/lib/osctl/store"
    if store.exists():
        partial = [p.name for p in store.iterdir() if p.name.startswith(".partial-")]
        assert not partial, f"half-written version folders: {partial}"
        for record in store.glob("*.json"):
            assert (store / record.stem).is_dir(), f"store record {record.name} without store/{record.stem}/"
    tmp = [str(p) for p in host.root.rglob("*.tmp")]
    assert not tmp, f"temporary files left: {tmp}"


def assert_consistent(host: Host, client: docker.DockerClient, expect_version: str | None,
                      marker: str | None = None, record: FaultRecord | None = None) -> None:
    """(2)+(3)+(4): exactly ``expect_version`` runs (or nothing, for None), pointer and journal
    agree, the marker is still there, nothing stray is left."""
    sets = running_sets(client, host)
    if expect_version is None:
        assert sets == {}, f"nothing should run: {sets}"
    else:
        assert sets == {expect_version: LONG_RUNNING[expect_version]}, f"engine's view: {sets}"
        pointer = json.loads((host.root / "boot/osctl/boot.json").read_text())
        assert pointer["default"] == expect_version, pointer
    journal = host.root / "var/lib/osctl/journal.json"
    if journal.exists():
        assert json.loads(journal.read_text())["result"] != "in-progress", journal.read_text()
    helpers = [c.name for c in service_containers(client, host) if c.labels.get("io.osctl.role") == "helper"]
    assert not helpers, f"helper containers left: {helpers}"
    assert_no_strays(host)
    if marker is not None:
        assert read_marker(client, host) == marker, "the marker in the logs volume is lost"
        if record is not None:
            record.data_checked = True


def installed(host: Host, client: docker.DockerClient, version: str) -> str:
    """Install ``version`` and write a marker; returns the marker."""
    osctl_ok(host, "upgrade", "--to", version)
    return write_marker(client, host)


# ---------------------------------------------------------------- an upgrade caught mid-way


def wait_for_step(host: Host, proc: subprocess.Popen[str], step: str, timeout: float = 60) -> bool:
    """Whether the journal of ``host`` said ``step`` (in progress) before ``proc`` ended; polled
    every 5 ms so that a short step is not missed."""
    journal = host.root / "var/lib/osctl/journal.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            data = json.loads(journal.read_text())
        except (OSError, ValueError):
            data = {}
        if data.get("result") == "in-progress" and data.get("step") == step:
            return True
        time.sleep(0.005)
    return False


def broken_upgrade_in_swap(host: Host, health_timeout: int) -> subprocess.Popen[str]:
    """``osctl upgrade --to v1.6`` in the background, returned once it swaps: v1.6's health gate
    never passes, so it stays there for ``health_timeout`` seconds, then rolls back."""
    proc = subprocess.Popen([sys.executable, "-m", "osctl", "upgrade", "--to", "v1.6", "--health-timeout",
                             str(health_timeout)], env=host.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    if not wait_for_step(host, proc, "swap"):
        proc.kill()
        raise AssertionError(f"the upgrade never reached its swap: {proc.communicate()[1]}")
    return proc
