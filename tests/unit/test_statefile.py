"""State files: each damage policy does what it promises, and a version is made current in one order."""

from __future__ import annotations

from pathlib import Path

import pytest

from osctl.adapters.statefile import Damage, StateFile
from osctl.domain import bootpointer, servicestate
from osctl.domain.journal import Journal
from osctl.errors import StateError
from osctl.models.services import ServicesState, SupervisorStatus
from osctl.models.store import BootPointer


def test_last_good_copy_repairs_a_damaged_file(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "s.json", ServicesState, Damage.LAST_GOOD, "the services state")
    file.write(ServicesState(version="v1.3", disabled=["ntp"]))
    file.path.write_text('{"version": "v1.')
    assert file.load().disabled == ["ntp"]
    assert ServicesState.model_validate_json(file.path.read_text()).disabled == ["ntp"], "repaired on disk"


def test_last_good_without_a_usable_copy_is_an_error_not_an_empty_state(tmp_path: Path) -> None:
    servicestate.write_services(tmp_path, ServicesState(version="v1.3", disabled=["ntp"]))
    path = servicestate.services_file(tmp_path).path
    path.write_text("{")
    servicestate.services_file(tmp_path).backup.write_text("garbage")
    with pytest.raises(StateError, match=r"services state .*services.json is damaged") as caught:
        servicestate.read_services(tmp_path)
    assert caught.value.hint and "disabled" in caught.value.hint
    assert path.read_text() == "{", "the damaged file is left for a person to look at"


def test_a_damaged_boot_pointer_with_a_damaged_copy_is_an_error(tmp_path: Path) -> None:
    bootpointer.write(tmp_path, BootPointer(default="v1.4"))
    bootpointer.pointer_path(tmp_path).write_text("{")
    bootpointer.pointer_file(tmp_path).backup.write_text("{")
    with pytest.raises(StateError, match="boot pointer .* is damaged"):
        bootpointer.read(tmp_path)


def test_set_aside_keeps_the_damaged_file_and_starts_empty(tmp_path: Path) -> None:
    servicestate.write_supervisor(tmp_path, SupervisorStatus(pid=42))
    path = servicestate.supervisor_file(tmp_path).path
    path.write_text('{"pid": ')
    assert servicestate.read_supervisor(tmp_path) == SupervisorStatus()
    assert path.with_name("supervisor.json.damaged").read_text() == '{"pid": '
    assert not path.exists()


def test_damaged_history_is_set_aside_and_the_next_transaction_starts_a_new_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.finish(journal.begin("install", None, "v1.3"), "committed")
    journal.history_file.path.write_text("[")
    journal.finish(journal.begin("upgrade", "v1.3", "v1.4"), "committed")
    assert [e.to_version for e in journal.history().entries] == ["v1.4"]
    assert journal.history_file.path.with_name("history.json.damaged").read_text() == "["


def test_raise_names_the_file_and_the_hint(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.begin("upgrade", "v1.3", "v1.4")
    journal.file.path.write_text('{"kind": "upg')
    with pytest.raises(StateError, match=r"the journal .*journal.json is damaged") as caught:
        journal.current()
    assert caught.value.hint and "osctl status" in caught.value.hint


def test_a_missing_file_is_not_damage(tmp_path: Path) -> None:
    assert servicestate.read_services(tmp_path) == ServicesState()
    assert bootpointer.read(tmp_path) == BootPointer()
    assert Journal(tmp_path).current() is None
