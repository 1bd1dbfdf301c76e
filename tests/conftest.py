"""Test-wide fixtures, markers, order and the fault summary.

Fixtures come from ``tests/support`` (registered below as plugins); test modules import helpers
only from ``tests.support``, never from each other.

Markers (registered in pyproject.toml), set here so that nobody has to remember them:

- ``integration``: needs the real Docker engine and the local registry. Every test under
  ``tests/integration/`` and ``tests/faults/``, and every test anywhere that asks for an engine
  fixture (``docker_client``, ``registry`` or one built on them: ``host``, ``publish``, ...).
- ``etcd``: starts etcd members from Debian's etcd-server (the ``etcd_cluster`` fixture); no
  engine. ``tests/etcd/`` is only that.
- ``engine_restart``: stops or restarts the local dockerd, which every other test needs; such
  tests are moved to the very end of the run (set by the test itself). Implies ``alone``.
- ``alone``: must not share the machine with other tests (set by the test itself). With
  pytest-xdist (``scripts/test`` runs two workers) these run after all others, on one worker,
  once the other workers have finished (``tests/support/xdist_tail.py``); without it, every
  test runs alone anyway.

``tests/unit/`` needs none of it: a unit test that asks for an engine or etcd fixture is a
collection error, so that ``pytest tests/unit`` keeps passing on a machine without them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.support")  # helpers assert too: their failures say what differed

from tests.support import faults  # noqa: E402 - after the line above
from tests.support.fixtures import ENGINE_FIXTURES, ETCD_FIXTURES  # noqa: E402

pytest_plugins = ["tests.support.fixtures", "tests.support.tls_registry"]

TESTS = Path(__file__).resolve().parent
_ALONE_DIR = pytest.StashKey[Path]()  # (xdist controller) where workers name their alone tests
_ALONE_DIR_INPUT = "osctl_alone_dir"  # that folder, as xdist hands it to each worker
ENGINE_DIRS = {"integration", "faults"}


def _folder(item: pytest.Item) -> str:
    relative = Path(str(item.fspath)).resolve().relative_to(TESTS)
    return relative.parts[0] if len(relative.parts) > 1 else ""


def pytest_configure(config: pytest.Config) -> None:
    if not getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        return
    if config.getoption("dist") != "load":
        raise pytest.UsageError("with -n, keep --dist load (the default): tests/conftest.py schedules "
                                "the tests marked alone after all others")
    config.stash[_ALONE_DIR] = Path(tempfile.mkdtemp(prefix="osctl-xdist-"))


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_ALONE_DIR, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """(xdist controller) Tell each worker where to say which of its tests run alone."""
    node.workerinput[_ALONE_DIR_INPUT] = str(node.config.stash[_ALONE_DIR])


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist load``, with the tests marked ``alone`` held back to the end (tests/support/xdist_tail.py)."""
    from tests.support.xdist_tail import TailScheduling  # needs xdist, which is only there then

    return TailScheduling(config, log, config.stash[_ALONE_DIR])


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reports its collection to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is not None and _ALONE_DIR_INPUT in workerinput:
        alone = sorted(i.nodeid for i in session.items if i.get_closest_marker("alone") is not None)
        (Path(workerinput[_ALONE_DIR_INPUT]) / f"{workerinput['workerid']}.json").write_text(json.dumps(alone))


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Marks before every other plugin (``-m`` selects by them), the order after all of them."""
    wrong: list[str] = []
    for item in items:
        if item.get_closest_marker("engine_restart") is not None:
            item.add_marker(pytest.mark.alone)
        folder = _folder(item)
        fixtures = set(getattr(item, "fixturenames", ()))
        if folder in ENGINE_DIRS or fixtures & ENGINE_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if folder == "etcd" or fixtures & ETCD_FIXTURES:
            item.add_marker(pytest.mark.etcd)
        if folder == "unit" and (fixtures & (ENGINE_FIXTURES | ETCD_FIXTURES)):
            wrong.append(item.nodeid)
    if wrong:
        raise pytest.UsageError(f"unit tests must need no engine, registry or etcd: {wrong}")
    yield
    # Tests that stop dockerd run last, in the order they were collected.
    items[:] = ([i for i in items if i.get_closest_marker("engine_restart") is None]
                + [i for i in items if i.get_closest_marker("engine_restart") is not None])


# ---------------------------------------------------------------- the fault summary
# A fault test registers its fault in the process that runs it (``faults.FAULTS``); the name and
# whether its data was checked travel on the test's reports (``user_properties``), so that the
# summary is also right when the tests run in other processes.

_SUMMARY: dict[str, faults.FaultRecord] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    record = faults.FAULTS.get(item.nodeid)
    if record is not None:
        report.user_properties += [("fault", record.name), ("fault_data_checked", record.data_checked)]
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    if "fault" not in props:
        return
    record = _SUMMARY.setdefault(report.nodeid, faults.FaultRecord(str(props["fault"]), report.nodeid))
    record.data_checked = bool(props.get("fault_data_checked"))
    if hasattr(report, "wasxfail"):
        record.outcome = "known osctl bug (xfail)"
    elif report.failed:
        record.outcome = f"FAILED ({report.when})"
    elif report.skipped:
        record.outcome = "skipped"
    elif report.when == "call":
        record.outcome = "recovered"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _SUMMARY:
        return
    records = list(_SUMMARY.values())
    recovered = sum(r.outcome == "recovered" for r in records)
    checked = sum(r.data_checked and r.outcome == "recovered" for r in records)
    terminalreporter.section("faults")
    terminalreporter.write_line(f"faults tried: {len(records)}, recovered: {recovered}, data checked: {checked}")
    for r in records:
        data = " [data checked]" if r.data_checked else ""
        terminalreporter.write_line(f"  {r.outcome:<16} {r.name}{data}")
