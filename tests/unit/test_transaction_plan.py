"""The plan of a transaction, without an engine: which kind it is, what it refuses, and what
the swap would add, remove, change or leave as it is."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from osctl.domain import bootpointer
from osctl.domain.settings import Settings
from osctl.errors import ExitCode, HostLocked, UsageError
from osctl.models.refs import Digest
from osctl.models.registry import TagManifest
from osctl.models.store import BootPointer
from osctl.operations.transaction import decide
from tests.support.fake_engine import store_version

CHRONY = "127.0.0.1:5000/osctl/chrony:4.5"  # a service image: the same in both versions
CHRONY_ID = "sha256:" + "c" * 64

# network: the same text, but it runs the OS image, which is new in every version (changed);
# syslog: its command changes; console: its environment changes; chrony: its own image,
# identical (unchanged); ntp goes; status comes.
V14 = """\
version: v1.4
services:
  network: {command: [/bin/network-check], oneshot: true}
  syslog:
    command: [/bin/syslogd, -n]
    depends_on: {network: {condition: service_completed_successfully}}
  ntp: {command: [/bin/ntpd, -n], depends_on: [syslog], restart: on-failure}
  console: {command: [/bin/sh], environment: {TERM: linux}, depends_on: [syslog]}
  chrony: {image: "127.0.0.1:5000/osctl/chrony:4.5", command: [chronyd, -d]}
boot: {kernel: /boot/vmlinuz}
"""
V15 = """\
version: v1.5
services:
  network: {command: [/bin/network-check], oneshot: true}
  syslog:
    command: [/bin/syslogd, -n, -S]
    depends_on: {network: {condition: service_completed_successfully}}
  console: {command: [/bin/sh], environment: {TERM: vt100}, depends_on: [syslog]}
  chrony: {image: "127.0.0.1:5000/osctl/chrony:4.5", command: [chronyd, -d]}
  status: {command: [/bin/httpd, -f], depends_on: [syslog]}
boot: {kernel: /boot/vmlinuz}
"""


class FakeRegistry:
    """What ``decide`` asks a registry when no version is named: its tags, then the newest one's
    manifest and config labels (``labels``: tag -> its version label, by default the tag itself)."""

    repository = "127.0.0.1:5000/osctl/os"

    def __init__(self, *tags: str, labels: dict[str, str | None] | None = None) -> None:
        self._tags = list(tags)
        self._labels = labels or {}
        self.asked: list[str] = []

    def tags(self) -> list[str]:
        return self._tags

    def manifests(self, tags: list[str]) -> dict[str, TagManifest]:
        self.asked += tags
        return {tag: TagManifest(tag, _digest(f"m{tag}"), 1, "v2", _digest(f"c{tag}")) for tag in tags}

    def image_labels_many(self, configs: dict[Digest, str]) -> dict[Digest, dict[str, str]]:
        out = {}
        for config, tag in configs.items():
            label = self._labels.get(tag, tag)
            out[config] = {} if label is None else {"io.osctl.os.version": label}
        return out


def _digest(text: str) -> Digest:
    return Digest("sha256:" + hashlib.sha256(text.encode()).hexdigest())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    store_version(tmp_path, V14, service_images={CHRONY: CHRONY_ID})
    store_version(tmp_path, V15, service_images={CHRONY: CHRONY_ID})
    return Settings(root_option=str(tmp_path), host_id_option="unit-plan", env={})


def runs(settings: Settings, default: str | None, previous: str | None = None) -> None:
    bootpointer.write(settings.root, BootPointer(default=default, previous=previous))


def test_the_first_version_on_an_empty_host_is_an_install_of_everything(settings: Settings) -> None:
    plan = decide(settings, "upgrade", "v1.4")
    assert (plan.kind, plan.from_version, plan.to_version, plan.stored) == ("install", None, "v1.4", True)
    assert plan.added == ["chrony", "console", "network", "ntp", "syslog"]
    assert plan.removed == plan.changed == plan.unchanged == []


def test_an_upgrade_lists_what_the_swap_adds_removes_changes_and_keeps(settings: Settings) -> None:
    runs(settings, "v1.4")
    plan = decide(settings, "upgrade", "v1.5")
    assert (plan.kind, plan.from_version, plan.to_version, plan.stored) == ("upgrade", "v1.4", "v1.5", True)
    assert plan.added == ["status"]
    assert plan.removed == ["ntp"]
    assert plan.changed == ["console", "network", "syslog"]  # network: same text, new OS image
    assert plan.unchanged == ["chrony"]


def test_a_service_image_that_changed_makes_the_service_changed(settings: Settings) -> None:
    store_version(settings.root, V15.replace("v1.5", "v1.6"), service_images={CHRONY: "sha256:" + "d" * 64})
    runs(settings, "v1.5")
    plan = decide(settings, "upgrade", "v1.6")
    assert "chrony" in plan.changed and plan.unchanged == []


def test_upgrading_to_an_older_version_is_refused_with_the_downgrade_command(settings: Settings) -> None:
    runs(settings, "v1.5")
    with pytest.raises(UsageError, match="v1.4 is older than the running v1.5") as refused:
        decide(settings, "upgrade", "v1.4")
    assert refused.value.hint == "osctl downgrade --to v1.4"


def test_downgrading_to_a_newer_version_is_refused_with_the_upgrade_command(settings: Settings) -> None:
    runs(settings, "v1.4")
    with pytest.raises(UsageError, match="v1.5 is newer than the running v1.4") as refused:
        decide(settings, "downgrade", "v1.5")
    assert refused.value.hint == "osctl upgrade --to v1.5"


def test_a_downgrade_compares_the_other_way(settings: Settings) -> None:
    runs(settings, "v1.5")
    plan = decide(settings, "downgrade", "v1.4")
    assert (plan.kind, plan.added, plan.removed) == ("downgrade", ["ntp"], ["status"])


def test_downgrading_with_nothing_installed_is_refused(settings: Settings) -> None:
    with pytest.raises(UsageError, match="nothing is installed yet") as refused:
        decide(settings, "downgrade", "v1.4")
    assert refused.value.hint == "osctl upgrade --to v1.4 installs it"


def test_a_downgrade_needs_a_version(settings: Settings) -> None:
    runs(settings, "v1.5")
    with pytest.raises(UsageError, match="downgrade needs --to V"):
        decide(settings, "downgrade", None, registry=FakeRegistry("v1.4"))  # type: ignore[arg-type]


def test_rollback_without_a_previous_version_is_refused(settings: Settings) -> None:
    runs(settings, "v1.5")
    with pytest.raises(UsageError, match="no previous version") as refused:
        decide(settings, "rollback", None)
    assert refused.value.hint and "osctl downgrade --to V" in refused.value.hint


def test_rollback_goes_to_the_pointers_previous_version(settings: Settings) -> None:
    runs(settings, "v1.5", previous="v1.4")
    plan = decide(settings, "rollback", None)
    assert (plan.kind, plan.from_version, plan.to_version) == ("rollback", "v1.5", "v1.4")
    assert (plan.added, plan.removed, plan.unchanged) == (["ntp"], ["status"], ["chrony"])


def test_a_version_not_stored_yet_is_planned_without_a_comparison(settings: Settings) -> None:
    runs(settings, "v1.5")
    plan = decide(settings, "upgrade", "v1.7")
    assert (plan.kind, plan.to_version, plan.stored) == ("upgrade", "v1.7", False)
    assert plan.added == plan.removed == plan.changed == plan.unchanged == []


def test_without_a_target_the_newest_release_is_chosen(settings: Settings) -> None:
    runs(settings, "v1.5")
    registry = FakeRegistry("latest", "v1.4", "v1.9", "v1.10", "v1.11-rc1", "v2.0.dev1", "main", "v1.5")
    plan = decide(settings, "upgrade", None, registry=registry)  # type: ignore[arg-type]
    assert (plan.to_version, plan.stored) == ("v1.10", False)  # 1.10 > 1.9; the rc, dev and names ignored


def test_an_invalid_newest_release_is_passed_over(settings: Settings) -> None:
    """Issue #19: one bad tag must not block updates: the newest valid release is taken."""
    runs(settings, "v1.5")
    registry = FakeRegistry("v1.9", "v1.10", "v1.11", labels={"v1.11": None, "v1.10": "v1.4"})
    plan = decide(settings, "upgrade", None, registry=registry)  # type: ignore[arg-type]
    assert plan.to_version == "v1.9"
    assert registry.asked == ["v1.11", "v1.10", "v1.9"]  # newest first, one at a time


def test_only_invalid_releases_is_refused_saying_why(settings: Settings) -> None:
    registry = FakeRegistry("v1.9", labels={"v1.9": None})
    with pytest.raises(UsageError, match="no valid released version.*v1.9 .no io.osctl.os.version label"):
        decide(settings, "upgrade", None, registry=registry)  # type: ignore[arg-type]


def test_a_registry_with_no_release_is_refused_naming_it(settings: Settings) -> None:
    with pytest.raises(UsageError, match=f"{FakeRegistry.repository} holds no released version"):
        decide(settings, "upgrade", None, registry=FakeRegistry("latest", "v2.0-rc1"))  # type: ignore[arg-type]


@contextmanager
def lock_held_elsewhere(root: Path, purpose: str) -> Iterator[int]:
    """Another process holds the host lock for ``purpose`` while the block runs; yields its pid."""
    code = ("import sys, time; from pathlib import Path; from osctl.adapters.locking import host_lock\n"
            "with host_lock(Path(sys.argv[1]), sys.argv[2]):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(root), purpose], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


def test_planning_is_refused_while_another_command_changes_the_host(settings: Settings) -> None:
    runs(settings, "v1.4")
    with (lock_held_elsewhere(settings.root, "upgrade v1.5") as pid,
          pytest.raises(HostLocked, match=f"pid {pid}: upgrade v1.5") as refused):
        decide(settings, "upgrade", "v1.5")
    assert refused.value.exit_code == ExitCode.LOCKED == 5


def test_the_supervisor_holding_the_lock_does_not_stop_planning(settings: Settings) -> None:
    runs(settings, "v1.4")
    with lock_held_elsewhere(settings.root, "supervise"):
        assert decide(settings, "upgrade", "v1.5").to_version == "v1.5"
