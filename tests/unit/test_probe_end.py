"""Ending a probe that outlived its timeout: which processes are the probe's, and what happens
when it cannot be ended (no engine: the engine's answers are a stand-in)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from osctl.adapters import engine as engine_module
from osctl.adapters import hostprocs
from osctl.adapters.engine import Engine
from osctl.adapters.hostprocs import ProcStat, parse_stat, session_tree

CONTAINER = "c" * 64


def test_stat_fields_are_read_after_the_last_parenthesis_of_the_command_name() -> None:
    text = "4242 (evil) 1 1 1 (name) S 17 4242 4242 0 -1 4194560 96 0 0 0"
    assert parse_stat(4242, text) == ProcStat(4242, 17, 4242, 4242)
    assert parse_stat(4242, "4242 (gone") is None


def test_the_session_tree_is_the_leader_its_session_and_their_descendants() -> None:
    stats = {s.pid: s for s in [
        ProcStat(1, 0, 1, 1),  # the container's init
        ProcStat(10, 1, 1, 1),  # the service: not the probe's
        ProcStat(20, 5, 20, 20),  # the probe's shell, a session of its own
        ProcStat(21, 20, 20, 20),  # its child
        ProcStat(22, 1, 20, 20),  # a child whose parent died: still in the session
        ProcStat(23, 21, 23, 23),  # a grandchild that left the session: found through its parent
        ProcStat(30, 5, 30, 30),  # another exec
    ]}
    assert session_tree(20, stats) == {20, 21, 22, 23}


def test_nothing_is_signalled_without_a_container_id_or_for_init() -> None:
    assert hostprocs.kill_session(1, CONTAINER, lambda: True) == 0
    assert hostprocs.kill_session(4242, "../etc", lambda: True) == 0


class _HangingApi:
    """Every exec runs for ever and has a host pid that is no process of that container."""

    def __init__(self) -> None:
        self.created: list[list[str]] = []

    def exec_create(self, container: str, argv: list[str], **_kw: Any) -> dict[str, str]:
        self.created.append(argv)
        return {"Id": f"exec{len(self.created)}"}

    def exec_start(self, exec_id: str, detach: bool) -> None:
        pass

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"Running": True, "Pid": 4242, "ContainerID": CONTAINER, "ExitCode": None}


class _Client:
    def __init__(self, api: _HangingApi) -> None:
        self.api = api


def test_no_second_probe_starts_while_one_that_could_not_be_ended_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "_UNENDED_PROBES", engine_module._UnendedProbes())
    killed: list[int] = []
    monkeypatch.setattr(hostprocs, "kill_session", lambda pid, container, still: killed.append(pid) or 0)
    monkeypatch.setattr(engine_module.time, "sleep", lambda _s: None)
    api = _HangingApi()
    engine = Engine()
    engine._client = _Client(api)  # type: ignore[assignment]
    assert engine.run_probe(CONTAINER, ["CMD-SHELL", "sleep 1000"], 0.01) is False
    assert engine.run_probe(CONTAINER, ["CMD-SHELL", "sleep 1000"], 0.01) is False
    assert api.created == [["/bin/sh", "-c", "sleep 1000"]], "one probe only, while the first still runs"
    assert killed == [4242, 4242], "each answer tries again to end it"
    other = "d" * 64
    assert engine.run_probe(other, ["CMD", "true"], 0.01) is False
    assert len(api.created) == 2, "another container is probed"



def _descendants(leader: int) -> set[int]:
    return session_tree(leader, hostprocs._all_stats()) - {leader}


def _dead(pid: int) -> bool:
    """Gone, or a zombie (killed; its new parent has not reaped it yet)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2] == "Z"


@pytest.mark.parametrize("verified", ["yes", "not-in-container", "no-longer-the-exec"])
def test_a_shell_probe_is_ended_with_its_children_only_when_verified(monkeypatch: pytest.MonkeyPatch,
                                                                     verified: str) -> None:
    """A real ``/bin/sh -c`` tree on this machine stands for the exec (its own session, as the
    runtime makes it); the container check is the only thing stood in for."""
    monkeypatch.setattr(hostprocs, "_in_container", lambda _pid, _cid: verified != "not-in-container")
    shell = subprocess.Popen(["/bin/sh", "-c", "sleep 100 & sleep 100; true"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(children := _descendants(shell.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(children) == 2
        signalled = hostprocs.kill_session(shell.pid, CONTAINER, lambda: verified != "no-longer-the-exec")
        if verified == "yes":
            assert signalled == 3
            assert shell.wait(timeout=5) == -signal.SIGKILL
            deadline = time.monotonic() + 5  # a signal is delivered, not awaited
            while not all(_dead(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert all(_dead(pid) for pid in children)
        else:
            assert signalled == 0
            assert shell.poll() is None and not any(_dead(pid) for pid in children)
    finally:
        if shell.returncode is None:  # not reaped: its process group cannot be anyone else's
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=5)
