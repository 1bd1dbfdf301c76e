"""The agent's gates, for a host running alone (no etcd): where a check stops, and why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from osctl.domain import bootpointer
from osctl.domain.journal import Journal
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import StateError
from osctl.models.store import BootPointer
from osctl.operations.agent import AGENT_STATE, Agent
from osctl.operations.agenthost import LocalHost
from tests.support.store_records import store_version

NOON_WEDNESDAY = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def agent(root: Path, config: str, *, clock: datetime = NOON_WEDNESDAY) -> Agent:
    (root / "etc/osctl").mkdir(parents=True, exist_ok=True)
    (root / "etc/osctl/config.yaml").write_text(config)
    bootpointer.write(root, BootPointer(default="v1.4"))
    store_version(Store(root), "v1.5")
    settings = Settings(env={"OSCTL_ROOT": str(root), "OSCTL_HOST_ID": "unit-agent"})
    return Agent(settings, LocalHost(settings, None), clock=lambda: clock)  # type: ignore[arg-type]  # no gate here uses the engine


def test_manual_policy_never_acts(tmp_path: Path) -> None:
    step = agent(tmp_path, "version: v1.5\n").tick()
    assert (step.phase, step.detail) == ("idle", "update policy is manual")


def test_the_running_version_is_nothing_to_do(tmp_path: Path) -> None:
    step = agent(tmp_path, "version: v1.4\nupdate: {policy: auto}\n").tick()
    assert step.phase == "idle" and "runs v1.4" in step.detail


def test_download_only_stops_once_stored(tmp_path: Path) -> None:
    step = agent(tmp_path, "version: v1.5\nupdate: {policy: download-only}\n").tick()
    assert step.phase == "staged" and "never swaps" in step.detail


def test_outside_the_window_the_host_waits_and_says_until_when(tmp_path: Path) -> None:
    config = "version: v1.5\nupdate: {policy: auto, window: {days: [sat], start: '02:00', length: 2h}}\n"
    step = agent(tmp_path, config).tick()
    assert step.phase == "waiting-window" and "2026-11-28 02:00" in step.detail and step.retry_soon


def test_a_version_that_rolled_back_here_is_not_tried_again(tmp_path: Path) -> None:
    (tmp_path / AGENT_STATE).parent.mkdir(parents=True)
    (tmp_path / AGENT_STATE).write_text('{"failed_versions": ["v1.5"]}')
    step = agent(tmp_path, "version: v1.5\nupdate: {policy: auto}\n").tick()
    assert step.phase == "rolled-back" and "not tried again" in step.detail


def test_a_trial_a_boot_gave_up_on_is_not_tried_again(tmp_path: Path) -> None:
    """The loader abandoned v1.5's trial (or it was unhealthy at boot): the agent does not take
    it again as its target by itself."""
    journal = Journal(tmp_path)
    journal.finish(journal.begin("boot", "v1.4", "v1.5"), "rolled-back",
                   "trial of v1.5 abandoned by the loader after 2 tries (it booted v1.4)")
    step = agent(tmp_path, "version: v1.5\nupdate: {policy: auto}\n").tick()
    assert step.phase == "rolled-back" and "not tried again" in step.detail


def test_a_damaged_agent_state_names_the_file(tmp_path: Path) -> None:
    (tmp_path / AGENT_STATE).parent.mkdir(parents=True)
    (tmp_path / AGENT_STATE).write_text("{not json")
    with pytest.raises(StateError, match="agent.json is damaged"):
        agent(tmp_path, "update: {policy: auto}\n")
