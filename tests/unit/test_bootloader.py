"""What osctl writes for systemd-boot: which versions are on the ESP, in which order the loader
tries them, boot counting, blessing, the ESP's budget, and how a boot learns what booted.

The loader's own behaviour is proved in a VM (tests/boot/); here, the files osctl writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from osctl.domain import bootloader, bootpointer, servicestate
from osctl.domain.bootedentry import ENTRY_SELECTED, booted
from osctl.domain.current import make_current
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import StateError
from osctl.models.services import ServicesState
from osctl.models.store import BootPointer, StoreRecord
from tests.support.store_records import record


def _settings(root: Path) -> Settings:
    return Settings(root_option=str(root), env={})


def _store(root: Path, version: str, kernel: bytes = b"kernel", **extra: object) -> StoreRecord:
    """A stored version with a kernel (shared by default, as the shipped images share one) and its own initrd."""
    store = Store(root)
    files = store.stage_boot_files(version, {"release.yaml": ("/usr/lib/osctl/release.yaml", b"version: x\n"),
                                             "vmlinuz": ("/boot/vmlinuz", kernel),
                                             "initrd.img": ("/boot/initrd.img", b"initrd " + version.encode())})
    rec = record(version, boot_files=[f.model_dump() for f in files], cmdline="console=ttyS0", **extra)
    store.save(rec)
    return rec


def _entries(esp: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((esp / bootloader.ENTRIES).iterdir())}


def _field(text: str, key: str) -> str:
    return next(line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[0] == key)


def _loader_order(entries: dict[str, str]) -> list[str]:
    """systemd-boot 252's order, as observed (tests/boot proves it for real): entries with no
    tries left last, then by sort-key; the first entry matching the default pattern boots."""
    def key(name: str) -> tuple[bool, str]:
        parsed = bootloader.parse_entry(name)
        assert parsed is not None
        return parsed.left == 0, _field(entries[name], "sort-key")
    return sorted(entries, key=key)


def _boots(esp: Path) -> str:
    """The entry the loader picks: the first in its order matching loader.conf's default."""
    import fnmatch

    conf = (esp / bootloader.LOADER_CONF).read_text()
    pattern = next(line.split(None, 1)[1] for line in conf.splitlines() if line.startswith("default "))
    entries = _entries(esp)
    return next(name for name in _loader_order(entries) if fnmatch.fnmatch(name, pattern))


def test_only_the_versions_the_loader_may_boot_are_on_the_esp(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for version in ("v1.2", "v1.3", "v1.4", "v1.5"):
        _store(tmp_path, version)
    make_current(settings, pointer=BootPointer(default="v1.5", previous="v1.4"),
                 services=ServicesState(version="v1.5", desired="up"))
    assert bootpointer.read(tmp_path).default == "v1.5" and servicestate.read_services(tmp_path).version == "v1.5"
    esp = tmp_path / "boot"
    entries = _entries(esp)
    assert list(entries) == ["osctl-v1.4.conf", "osctl-v1.5.conf"], "v1.2 and v1.3 stay in the store only"
    files = sorted(p.name for p in (esp / "osctl/files").iterdir())
    assert len(files) == 3, f"one shared kernel and two initrds: {files}"
    v15 = entries["osctl-v1.5.conf"]
    assert _field(v15, "options") == "console=ttyS0 osctl.version=v1.5"
    kernel = esp / _field(v15, "linux").lstrip("/")
    assert kernel.read_bytes() == b"kernel" and _field(entries["osctl-v1.4.conf"], "linux") == _field(v15, "linux")
    assert (esp / _field(v15, "initrd").lstrip("/")).read_bytes() == b"initrd v1.5"
    assert _boots(esp) == "osctl-v1.5.conf"
    assert "default osctl-v1.5.conf" in (esp / "loader/loader.conf").read_text()


def test_pinning_puts_a_version_on_the_esp_and_a_prune_takes_it_off(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for version in ("v1.3", "v1.5"):
        _store(tmp_path, version, kernel=b"kernel " + version.encode())
    make_current(settings, pointer=BootPointer(default="v1.5"))
    assert list(_entries(tmp_path / "boot")) == ["osctl-v1.5.conf"]
    store = Store(tmp_path)
    store.save(store.get("v1.3").model_copy(update={"pinned": True}))  # type: ignore[union-attr]
    make_current(settings)
    assert list(_entries(tmp_path / "boot")) == ["osctl-v1.3.conf", "osctl-v1.5.conf"]
    assert _boots(tmp_path / "boot") == "osctl-v1.5.conf"
    store.remove("v1.3")
    make_current(settings)
    assert list(_entries(tmp_path / "boot")) == ["osctl-v1.5.conf"]
    assert len(list((tmp_path / "boot/osctl/files").iterdir())) == 2, "v1.3's kernel and initrd went too"


@pytest.mark.parametrize("trial", ["v1.6", "v1.3"], ids=["newer-trial", "older-trial"])
def test_the_trial_boots_first_and_the_loader_falls_back_to_the_default_once_spent(tmp_path: Path, trial: str) -> None:
    settings = _settings(tmp_path)
    for version in ("v1.3", "v1.4", "v1.5", "v1.6"):
        _store(tmp_path, version)
    esp = tmp_path / "boot"
    make_current(settings, pointer=BootPointer(default="v1.5", previous="v1.4"))
    make_current(settings, pointer=BootPointer(default="v1.5", previous="v1.4", trial=trial, trial_tries=2))
    assert _boots(esp) == f"osctl-{trial}+2.conf"
    assert "default osctl-*" in (esp / "loader/loader.conf").read_text()
    entries = esp / bootloader.ENTRIES
    (entries / f"osctl-{trial}+2.conf").rename(entries / f"osctl-{trial}+1-1.conf")  # the loader's first try
    make_current(settings)  # anything osctl writes meanwhile keeps the loader's count
    assert _boots(esp) == f"osctl-{trial}+1-1.conf"
    (entries / f"osctl-{trial}+1-1.conf").rename(entries / f"osctl-{trial}+0-2.conf")
    assert _boots(esp) == "osctl-v1.5.conf", "spent: the default, not the previous nor the newest"


def test_blessing_drops_the_counter_and_the_trial_becomes_the_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for version in ("v1.4", "v1.5"):
        _store(tmp_path, version)
    esp = tmp_path / "boot"
    pointer = make_current(settings, pointer=BootPointer(default="v1.4", trial="v1.5", trial_tries=3))
    (esp / bootloader.ENTRIES / "osctl-v1.5+3.conf").rename(esp / bootloader.ENTRIES / "osctl-v1.5+2-1.conf")
    bootloader.bless(esp, "v1.5")
    assert "osctl-v1.5.conf" in _entries(esp) and bootloader.trial_entry(esp, "v1.5") is None
    make_current(settings, pointer=pointer.model_copy(update={"default": "v1.5", "previous": "v1.4", "trial": None}))
    entries = _entries(esp)
    assert list(entries) == ["osctl-v1.4.conf", "osctl-v1.5.conf"]
    assert _field(entries["osctl-v1.5.conf"], "sort-key") == bootloader.Role.DEFAULT.value
    assert _boots(esp) == "osctl-v1.5.conf"


def test_a_trial_staged_again_counts_from_its_first_try(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for version in ("v1.4", "v1.6"):
        _store(tmp_path, version)
    esp = tmp_path / "boot"
    make_current(settings, pointer=BootPointer(default="v1.4"))
    (esp / bootloader.ENTRIES / "osctl-v1.6+0-2.conf").write_text("left over from an abandoned trial\n")
    bootloader.forget_trial(esp, "v1.6")
    make_current(settings, pointer=BootPointer(default="v1.4", trial="v1.6", trial_tries=3))
    assert list(_entries(esp)) == ["osctl-v1.4.conf", "osctl-v1.6+3.conf"]


def test_a_full_esp_refuses_before_anything_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path)
    _store(tmp_path, "v1.4")
    _store(tmp_path, "v1.5", kernel=b"k" * 300_000)
    make_current(settings, pointer=BootPointer(default="v1.4"))
    before = {p: p.read_bytes() for p in (tmp_path / "boot").rglob("*") if p.is_file()}
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=200_000))
    with pytest.raises(StateError) as caught:
        make_current(settings, pointer=BootPointer(default="v1.4", trial="v1.5", trial_tries=3))
    message = caught.value.message
    assert "has 0.2 MiB free" in message and "v1.5 need 0.4 MiB" in message, message
    assert {p: p.read_bytes() for p in (tmp_path / "boot").rglob("*") if p.is_file()} == before, "nothing half-written"
    assert bootpointer.read(tmp_path) == BootPointer(default="v1.4")


def test_a_damaged_file_on_the_esp_is_written_again(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _store(tmp_path, "v1.4")
    make_current(settings, pointer=BootPointer(default="v1.4"))
    kernel = tmp_path / "boot" / _field(_entries(tmp_path / "boot")["osctl-v1.4.conf"], "linux").lstrip("/")
    kernel.write_bytes(b"torn")  # a power cut on FAT
    make_current(settings, pointer=BootPointer(default="v1.4"))
    assert kernel.read_bytes() == b"kernel"


def test_the_esp_is_a_setting_and_must_be_there(tmp_path: Path) -> None:
    (tmp_path / "etc/osctl").mkdir(parents=True)
    (tmp_path / "etc/osctl/config.yaml").write_text(f"boot: {{esp: {tmp_path / 'efi'}, menu_timeout: 0}}\n")
    _store(tmp_path, "v1.4")
    with pytest.raises(StateError, match=r"the EFI system partition .*/efi \(boot.esp\) is not a folder"):
        make_current(_settings(tmp_path), pointer=BootPointer(default="v1.4"))  # not mounted: never created
    assert not (tmp_path / "efi").exists() and bootpointer.read(tmp_path) == BootPointer()
    (tmp_path / "efi").mkdir()
    make_current(_settings(tmp_path), pointer=BootPointer(default="v1.4"))
    assert list(_entries(tmp_path / "efi")) == ["osctl-v1.4.conf"] and not (tmp_path / "boot/loader").exists()
    assert "timeout 0" in (tmp_path / "efi/loader/loader.conf").read_text()


def _efivar(folder: Path, entry: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / ENTRY_SELECTED).write_bytes(b"\x06\x00\x00\x00" + (entry + "\0").encode("utf-16-le"))


def test_what_booted_comes_from_the_loader_variable_then_the_kernel_command_line(tmp_path: Path) -> None:
    efivars, cmdline = tmp_path / "efivars", tmp_path / "cmdline"
    assert booted(efivars, cmdline) is None, "nothing says: not identified"
    cmdline.write_text("console=ttyS0 panic=1 osctl.version=v1.4\n")
    assert booted(efivars, cmdline).version == "v1.4"  # type: ignore[union-attr]
    _efivar(efivars, "osctl-v1.6+1-1.conf")
    found = booted(efivars, cmdline)
    assert found is not None and (found.version, found.entry) == ("v1.6", "osctl-v1.6+1-1.conf")
    _efivar(efivars, "osctl-v1.5-rc+2-1.conf")  # systemd-boot 252 lowercases entry ids
    assert booted(efivars, cmdline, ["v1.4", "v1.5-RC"]).version == "v1.5-RC"  # type: ignore[union-attr]
    _efivar(efivars, "debian-6.1.conf")  # another loader entry: the command line still says
    assert booted(efivars, cmdline).version == "v1.4"  # type: ignore[union-attr]
    cmdline.write_text("osctl.version=../../etc quiet")
    assert booted(efivars, cmdline) is None, "only a version tag counts"
    (efivars / ENTRY_SELECTED).write_bytes(b"\x06\0\0\0" + b"o\0" * 5000)
    cmdline.write_bytes(b"x" * 70_000 + b" osctl.version=v1.4")
    assert booted(efivars, cmdline) is None, "oversized values are ignored, not read whole"
