"""Files under the host root: store records, boot pointer, the host lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osctl.adapters.locking import host_lock
from osctl.domain import bootpointer
from osctl.domain.store import Store
from osctl.errors import HostLocked, StateError
from osctl.models.store import BootPointer, StoreRecord
from tests.support.store_records import store_version


def test_records_are_listed_newest_first_and_only_when_complete(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for version in ("v1.9", "v1.10", "v1.3"):
        store_version(store, version)
    assert [r.version for r in store.records()] == ["v1.10", "v1.9", "v1.3"]
    (store.version_dir("v1.9") / "vmlinuz").write_bytes(b"torn")  # a boot file that no longer matches
    assert [r.version for r in store.records()] == ["v1.10", "v1.3"]


def test_boot_files_without_a_record_are_leftovers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.stage_boot_files("v1.4", {"vmlinuz": ("/boot/vmlinuz", b"k")})  # pull interrupted here
    (store.records_dir / ".partial-v1.5-123").mkdir()
    (store.legacy_dir / "v1.3").mkdir(parents=True)  # an older osctl's folder, on the ESP, no record
    assert store.get("v1.4") is None and store.records() == []
    assert sorted(store.clean_leftovers()) == [".partial-v1.5-123", "v1.3", "v1.4"]
    assert list(store.records_dir.iterdir()) == [] and list(store.legacy_dir.iterdir()) == []


def test_versions_sharing_a_kernel_keep_one_copy(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for version in ("v1.4", "v1.5"):
        files = store.stage_boot_files(version, {"vmlinuz": ("/boot/vmlinuz", b"the same kernel"),
                                                 "initrd.img": ("/boot/initrd.img", version.encode())})
        store.save(StoreRecord(version=version, repository="r/os", digest="sha256:" + "0" * 64,
                               image_id="sha256:" + "1" * 64, size=1, stored_at="now", boot_files=files))
    kernels = [(store.version_dir(v) / "vmlinuz").stat() for v in ("v1.4", "v1.5")]
    assert kernels[0].st_ino == kernels[1].st_ino, "one file, two names"
    assert (store.version_dir("v1.4") / "initrd.img").stat().st_ino != (store.version_dir("v1.5") / "initrd.img").stat().st_ino
    store.remove("v1.4")
    assert (store.version_dir("v1.5") / "vmlinuz").read_bytes() == b"the same kernel"


def test_a_folder_an_older_osctl_kept_on_the_esp_is_read_then_moved(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store_version(store, "v1.4")
    (store.legacy_dir).mkdir(parents=True)
    (store.records_dir / "v1.4").rename(store.legacy_dir / "v1.4")  # the layout before the ESP budget
    assert store.get("v1.4") is not None, "still stored: read where it is"
    assert store.adopt_legacy() == ["v1.4"]
    assert (store.records_dir / "v1.4" / "vmlinuz").is_file() and not (store.legacy_dir / "v1.4").exists()
    assert store.get("v1.4") is not None


def test_a_damaged_record_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store_version(store, "v1.4")
    store.record_path("v1.4").write_text('{"version": "v1.4", "repo')
    with pytest.raises(StateError, match=r"store record .*v1.4.json is damaged"):
        store.get("v1.4")


def test_remove_forgets_the_record_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store_version(store, "v1.4")
    store.remove("v1.4")
    assert not store.record_path("v1.4").exists() and not store.version_dir("v1.4").exists()


def test_boot_pointer_survives_a_torn_write(tmp_path: Path) -> None:
    assert bootpointer.read(tmp_path) == BootPointer()
    bootpointer.write(tmp_path, BootPointer(default="v1.3"))
    bootpointer.write(tmp_path, BootPointer(default="v1.4", previous="v1.3"))
    assert bootpointer.read(tmp_path).default == "v1.4"
    bootpointer.pointer_path(tmp_path).write_text('{"default": "v1.')  # damaged on disk
    assert bootpointer.read(tmp_path).default == "v1.4", "the copy of the same pointer, never an older one"
    assert '"default": "v1.4"' in bootpointer.pointer_path(tmp_path).read_text(), "and the file is repaired"


def test_next_boot_is_the_trial_while_it_has_tries() -> None:
    assert BootPointer(default="v1.3", trial="v1.4", trial_tries=2).next_boot == "v1.4"
    assert BootPointer(default="v1.3", trial="v1.4", trial_tries=0).next_boot == "v1.3"


def test_second_holder_is_refused_with_the_pid(tmp_path: Path) -> None:
    with host_lock(tmp_path, "upgrade"):
        with pytest.raises(HostLocked, match=rf"pid {os.getpid()}: upgrade"):
            with host_lock(tmp_path, "prune"):
                pass
    with host_lock(tmp_path, "prune"):  # free again
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from osctl.adapters.locking import host_lock\n"
            "with host_lock(Path(sys.argv[1]), 'pull'):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(HostLocked, match=f"pid {holder.pid}: pull"):
            with host_lock(tmp_path, "prune"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            with host_lock(tmp_path, "prune"):
                break
        except HostLocked:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_command_planned_while_another_changes_the_host_is_refused(tmp_path: Path) -> None:
    """Plans are read before the lock: one read from a host mid-change must not be carried out."""
    from osctl.domain.settings import Settings
    from osctl.operations import transaction

    settings = Settings(env={"OSCTL_ROOT": str(tmp_path), "OSCTL_HOST_ID": "unit-host"})
    bootpointer.write(tmp_path, BootPointer(default="v1.4", previous="v1.3"))
    with host_lock(tmp_path, "upgrade v1.5"):  # another command is changing the host
        with pytest.raises(HostLocked, match=f"pid {os.getpid()}: upgrade v1.5"):
            transaction.decide(settings, "rollback", None)
    plan = transaction.decide(settings, "rollback", None)
    assert (plan.from_version, plan.to_version) == ("v1.4", "v1.3")
    bootpointer.write(tmp_path, BootPointer(default="v1.5", previous="v1.4"))  # it finished meanwhile
    with pytest.raises(StateError, match="runs v1.5 now, not v1.4"):
        transaction.run(settings, None, plan)  # type: ignore[arg-type]  # refused before the engine is used
