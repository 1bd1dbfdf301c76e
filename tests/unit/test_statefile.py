"""State files: each damage policy does what it promises, and a version is made current in one order."""

from __future__ import annotations

from pathlib import Path

import pytest

from osctl.adapters.statefile import Damage, StateFile
from osctl.domain import bootpointer, servicestate
from osctl.domain.current import make_current
from osctl.domain.journal import Journal
from osctl.domain.store import Store
from osctl.errors import StateError
from osctl.models.services import ServicesState, SupervisorStatus
from osctl.models.store import BootPointer
from tests.support.store_records import store_version


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


def test_make_current_writes_pointer_services_and_loader_together(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for version in ("v1.3", "v1.4"):
        store_version(store, version)
    make_current(tmp_path, pointer=BootPointer(default="v1.4", previous="v1.3"),
                 services=ServicesState(version="v1.4", desired="up"))
    assert bootpointer.read(tmp_path).default == "v1.4"
    assert servicestate.read_services(tmp_path).version == "v1.4"
    loader = tmp_path / "boot/loader"
    assert (loader / "loader.conf").read_text().startswith("default osctl-v1.4.conf")
    assert sorted(p.name for p in (loader / "entries").iterdir()) == ["osctl-v1.3.conf", "osctl-v1.4.conf"]


def test_make_current_alone_brings_the_loader_in_line_with_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for version in ("v1.3", "v1.4", "v1.5"):
        store_version(store, version)
    make_current(tmp_path, pointer=BootPointer(default="v1.4"))
    store.remove("v1.3")  # a prune
    assert make_current(tmp_path) == BootPointer(default="v1.4")
    entries = sorted(p.name for p in (tmp_path / "boot/loader/entries").iterdir())
    assert entries == ["osctl-v1.4.conf", "osctl-v1.5.conf"], "no entry for a version that is gone"


def test_a_spent_trial_boots_the_default(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for version in ("v1.3", "v1.4"):
        store_version(store, version)
    make_current(tmp_path, pointer=BootPointer(default="v1.3", trial="v1.4", trial_tries=1))
    conf = tmp_path / "boot/loader/loader.conf"
    assert conf.read_text().startswith("default osctl-v1.4.conf")
    make_current(tmp_path, pointer=BootPointer(default="v1.3", trial="v1.4", trial_tries=0))
    assert conf.read_text().startswith("default osctl-v1.3.conf")
