"""``osctl boot`` decides by what the loader says booted (the fake engine; tests/boot/ does it
with a real loader): who counts a trial's tries, blessing, a trial the loader gave up on, and
a version chosen at the loader's menu."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osctl.domain import bootpointer
from osctl.domain.bootedentry import ENTRY_SELECTED
from osctl.domain.journal import Journal
from osctl.domain.settings import Settings
from osctl.operations import transaction
from osctl.operations.boot import boot
from tests.support.fake_engine import FakeEngine, store_version

MANIFEST = """\
version: {version}
services:
  app: {{command: [/bin/app, "{version}"]}}
boot: {{kernel: /boot/vmlinuz}}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "etc/osctl/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"boot": {"efivars": str(tmp_path / "efivars"),
                                           "kernel_cmdline": str(tmp_path / "cmdline")}}))
    return Settings(root_option=str(tmp_path), host_id_option="unit-boot", env={})


@pytest.fixture
def engine(settings: Settings) -> FakeEngine:
    engine = FakeEngine()
    for version in ("v1.4", "v1.5", "v1.6"):
        engine.holds_images_of(store_version(settings.root, MANIFEST.format(version=version)))
    return engine


def run(settings: Settings, engine: FakeEngine, kind: str, version: str, *, stage_tries: int = 0) -> None:
    plan = transaction.decide(settings, kind, version)  # type: ignore[arg-type]
    plan.stage = stage_tries > 0
    transaction.run(settings, engine, plan, tries=stage_tries or 3)  # type: ignore[arg-type]


def entries(settings: Settings) -> list[str]:
    return sorted(p.name for p in (settings.esp / "loader/entries").iterdir())


def loader_booted(settings: Settings, entry: str | None, cmdline: str = "") -> None:
    """What the machine shows after the loader started ``entry``, and its renames done."""
    efivars = settings.root / "efivars"
    efivars.mkdir(exist_ok=True)
    (efivars / ENTRY_SELECTED).unlink(missing_ok=True)
    if entry is not None:
        (efivars / ENTRY_SELECTED).write_bytes(b"\x06\0\0\0" + (entry + "\0").encode("utf-16-le"))
    (settings.root / "cmdline").write_text(cmdline)


def rename(settings: Settings, old: str, new: str) -> None:
    folder = settings.esp / "loader/entries"
    (folder / old).rename(folder / new)


def test_a_trial_the_loader_counts_is_blessed_and_osctl_spends_no_try(settings: Settings, engine: FakeEngine) -> None:
    run(settings, engine, "upgrade", "v1.4")
    run(settings, engine, "upgrade", "v1.5", stage_tries=3)
    assert entries(settings) == ["osctl-v1.4.conf", "osctl-v1.5+3.conf"]
    rename(settings, "osctl-v1.5+3.conf", "osctl-v1.5+2-1.conf")
    loader_booted(settings, "osctl-v1.5+3.conf")
    said: list[str] = []
    result = boot(settings, engine, events=lambda event: said.append(getattr(event, "detail", "")))  # type: ignore[arg-type]
    assert "booting v1.5 (counted by the loader: 2 tries left)" in said, said
    assert (result.version, result.trial_result, result.loader_entry) == ("v1.5", "promoted", "osctl-v1.5+3.conf")
    assert entries(settings) == ["osctl-v1.4.conf", "osctl-v1.5.conf"], "blessed: the counter is gone"
    assert bootpointer.read(settings.root).model_dump() == {"default": "v1.5", "previous": "v1.4",
                                                           "trial": None, "trial_tries": 0}


def test_a_boot_known_only_from_the_command_line_is_counted_by_osctl(settings: Settings, engine: FakeEngine) -> None:
    run(settings, engine, "upgrade", "v1.4")
    run(settings, engine, "upgrade", "v1.6", stage_tries=2)
    loader_booted(settings, None, "console=ttyS0 osctl.version=v1.6")  # another loader: nobody counted
    said: list[str] = []
    result = boot(settings, engine, events=lambda event: said.append(getattr(event, "detail", "")))  # type: ignore[arg-type]
    assert (result.version, result.trial_result) == ("v1.6", "promoted")
    assert "booting v1.6 (1 tries left after this one)" in said, said


def test_a_trial_the_loader_gave_up_on_is_abandoned_for_good(settings: Settings, engine: FakeEngine) -> None:
    run(settings, engine, "upgrade", "v1.4")
    run(settings, engine, "upgrade", "v1.6", stage_tries=2)
    rename(settings, "osctl-v1.6+2.conf", "osctl-v1.6+0-2.conf")  # two tries, both panicked
    loader_booted(settings, "osctl-v1.4.conf", "initrd=\\osctl\\files\\x osctl.version=v1.4")
    result = boot(settings, engine)  # type: ignore[arg-type]
    assert (result.version, result.trial, result.trial_result) == ("v1.4", "v1.6", "fell-back")
    assert result.reason == "abandoned by the loader after 2 tries (it booted v1.4)"
    assert entries(settings) == ["osctl-v1.4.conf"], "its entry goes: the menu no longer offers it"
    assert bootpointer.read(settings.root).trial is None
    last = Journal(settings.root).history().entries[-1]
    assert (last.kind, last.to_version, last.result) == ("boot", "v1.6", "rolled-back")
    assert last.reason == "trial of v1.6 abandoned by the loader after 2 tries (it booted v1.4)"
    again = boot(settings, engine)  # type: ignore[arg-type]
    assert (again.version, again.trial) == ("v1.4", None), "nothing is retried by itself"


def test_a_version_chosen_at_the_menu_is_said_and_the_default_runs(settings: Settings, engine: FakeEngine) -> None:
    run(settings, engine, "upgrade", "v1.4")
    run(settings, engine, "upgrade", "v1.5")
    loader_booted(settings, "osctl-v1.4.conf")
    result = boot(settings, engine)  # type: ignore[arg-type]
    assert result.version == "v1.5" and result.note is not None
    assert "the loader booted v1.4" in result.note and "not the default v1.5" in result.note
    assert {c.spec.labels["io.osctl.version"] for c in engine.by_id.values() if c.status == "running"} == {"v1.5"}
