"""Fault tests: the world misbehaves, nothing is lost.

Every test registers the fault it injects (``fault("registry down before pull")``) and checks
the same four things with the helpers below:

1. a clear error (``assert_clear_error``): one ``error:`` line, no traceback, the right exit code;
2. exactly one consistent version (``assert_consistent``): engine, boot pointer and journal agree;
3. no data lost: a marker written into the ``logs`` volume before the fault is read back after;
4. no strays: no containers of another version, no helpers, no ``.partial-*``/``*.tmp`` files,
   no store record without its boot folder.

At the end, a summary line "faults tried: N, recovered: M, data checked: K" and each fault's outcome.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures re-exported for the fault tests
    OS_REPO,
    REGISTRY,
    Host,
    docker_client,
    host,
    host_objects,
    make_host,
    publish,
    registry,
    remove,
)

LONG_RUNNING = {"v1.3": {"syslog", "ntp", "console"}, "v1.4": {"syslog", "ntp", "console", "status", "cron"},
                "v1.5": {"syslog", "ntp", "status", "cron", "metrics"}}


# ---------------------------------------------------------------- the registry of faults


@dataclass
class FaultRecord:
    name: str
    nodeid: str
    outcome: str = "not run"
    data_checked: bool = False


FAULTS: dict[str, FaultRecord] = {}


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Callable[[str], FaultRecord]:
    """``fault("name")`` registers the fault this test injects."""

    def register(name: str) -> FaultRecord:
        record = FaultRecord(name, request.node.nodeid)
        FAULTS[request.node.nodeid] = record
        return record

    return register


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    record = FAULTS.get(item.nodeid)
    if record is not None:
        if hasattr(report, "wasxfail"):
            record.outcome = "known osctl bug (xfail)"
        elif report.failed:
            record.outcome = f"FAILED ({report.when})"
        elif report.skipped:
            record.outcome = "skipped"
        elif report.when == "call":
            record.outcome = "recovered"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FAULTS:
        return
    records = list(FAULTS.values())
    tried = len(records)
    recovered = sum(r.outcome == "recovered" for r in records)
    checked = sum(r.data_checked and r.outcome == "recovered" for r in records)
    terminalreporter.section("faults")
    terminalreporter.write_line(f"faults tried: {tried}, recovered: {recovered}, data checked: {checked}")
    for r in records:
        data = " [data checked]" if r.data_checked else ""
        terminalreporter.write_line(f"  {r.outcome:<16} {r.name}{data}")


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
    return client.containers.list(all=True, filters={"label": f"io.osctl.host={host.host_id}"})


def running_sets(client: docker.DockerClient, host: Host) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for c in service_containers(client, host):
        if c.labels.get("io.osctl.role") == "service":
            found.setdefault(c.labels["io.osctl.version"], set())
            if c.attrs["State"]["Running"]:
                found[c.labels["io.osctl.version"]].add(c.labels["io.osctl.service"])
    return found


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
    """(4, files) No half-written files, no store record without its boot folder."""
    boot = host.root / "boot/osctl"
    if boot.exists():
        partial = [p.name for p in boot.iterdir() if p.name.startswith(".partial-")]
        assert not partial, f"half-written boot folders: {partial}"
    tmp = [str(p) for p in host.root.rglob("*.tmp")]
    assert not tmp, f"temporary files left: {tmp}"
    store = host.root / "var/lib/osctl/store"
    if store.exists():
        for record in store.glob("*.json"):
            assert (boot / record.stem).is_dir(), f"store record {record.name} without boot/osctl/{record.stem}/"


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


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
