"""The VM harness itself (tests/support/vm.py), without booting: the serial console's parsing,
the image built from a folder, the loader's renames mirrored back, and what it writes for osctl.
Needs mtools and dosfstools only, but lives with the boot tests it serves (skipped with them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import vm

POWEROFF = """BdsDxe: starting Boot0001 "UEFI Non-Block Boot Device" from PciRoot(0x0)/Pci(0x2,0x0)
osctl-boot: version=v1.4 entry=osctl-v1.4.conf cmdline=v1.4
osctl-boot: poweroff
[    6.9] reboot: Power down
"""
PANIC = """osctl-boot: version=v1.6 entry=osctl-v1.6+2.conf cmdline=v1.6
osctl-boot: panic
[    6.571186] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100
[    6.598460] Rebooting in 1 seconds..
"""
EARLY_PANIC = "[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"


def test_the_serial_console_is_parsed() -> None:
    assert vm.parse_serial(POWEROFF) == ({"version": "v1.4", "entry": "osctl-v1.4.conf", "cmdline_version": "v1.4"},
                                         False, True, None)
    report, panicked, powered_off, line = vm.parse_serial(PANIC)
    assert report["version"] == "v1.6" and report["entry"] == "osctl-v1.6+2.conf"
    assert panicked and not powered_off
    assert line == "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
    report, panicked, _, _ = vm.parse_serial(EARLY_PANIC)  # nothing from the initrd at all
    assert report == {"version": None, "entry": None, "cmdline_version": None} and panicked
    report, _, _, _ = vm.parse_serial("osctl-boot: version=v1.3 entry=- cmdline=-\n")
    assert report == {"version": "v1.3", "entry": None, "cmdline_version": None}


def entry(version: str) -> str:
    return (f"title      osctl {version}\nversion    {version}\nlinux      /osctl/files/vmlinuz-0\n"
            f"initrd     /osctl/files/initrd.img-{version}\noptions    console=ttyS0 panic=1 quiet osctl.version={version}\n")


def mtools(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})


@pytest.fixture
def esp(tmp_path: Path) -> Path:
    folder = tmp_path / "esp"
    entries = folder / "loader" / "entries"
    entries.mkdir(parents=True)
    (folder / "loader" / "loader.conf").write_text("timeout 0\ndefault osctl-*\n")
    for name, version in (("osctl-v1.4.conf", "v1.4"), ("osctl-v1.6+2.conf", "v1.6"), ("osctl-v1.3.conf", "v1.3")):
        (entries / name).write_text(entry(version))
    return folder


def test_the_image_holds_the_folder_and_the_loader_and_leaves_the_folder_alone(esp: Path, tmp_path: Path) -> None:
    before = sorted(str(p.relative_to(esp)) for p in esp.rglob("*"))
    machine = vm.VM(esp, tmp_path / "vm")
    machine.build_image()
    assert sorted(str(p.relative_to(esp)) for p in esp.rglob("*")) == before
    assert machine.image_entries() == ["osctl-v1.3.conf", "osctl-v1.4.conf", "osctl-v1.6+2.conf"]
    assert machine.read_image_file("EFI/BOOT/BOOTX64.EFI") == vm.LOADER_EFI.read_bytes()
    assert machine.read_image_file("loader/entries/osctl-v1.6+2.conf") == entry("v1.6").encode()


def test_the_loaders_renames_are_mirrored_into_the_folder(esp: Path, tmp_path: Path) -> None:
    machine = vm.VM(esp, tmp_path / "vm")
    machine.build_image()
    image, entries = str(machine.image), esp / "loader" / "entries"
    original = entries / "osctl-v1.6+2.conf"
    inode = original.stat().st_ino
    mtools("mren", "-i", image, "::/loader/entries/osctl-v1.6+2.conf", "::/loader/entries/osctl-v1.6+1-1.conf")
    mtools("mdel", "-i", image, "::/loader/entries/osctl-v1.3.conf")
    (tmp_path / "osctl-v1.5.conf").write_text(entry("v1.5"))
    mtools("mcopy", "-i", image, str(tmp_path / "osctl-v1.5.conf"), "::/loader/entries/")
    machine.mirror_entries()
    assert sorted(p.name for p in entries.iterdir()) == ["osctl-v1.4.conf", "osctl-v1.5.conf", "osctl-v1.6+1-1.conf"]
    assert (entries / "osctl-v1.6+1-1.conf").stat().st_ino == inode  # renamed, as the loader did
    assert (entries / "osctl-v1.5.conf").read_text() == entry("v1.5")


def test_a_loader_that_changed_an_entry_is_reported(esp: Path, tmp_path: Path) -> None:
    machine = vm.VM(esp, tmp_path / "vm")
    machine.build_image()
    (esp / "loader" / "entries" / "osctl-v1.4.conf").write_text("changed\n")
    with pytest.raises(vm.VMError, match=r"changed the contents of loader/entries/osctl-v1.4.conf"):
        machine.mirror_entries()


def boot(version: str | None, entry_id: str | None, *, panicked: bool) -> vm.Boot:
    return vm.Boot(version, entry_id, version, panicked, not panicked, None, 7.0, "")


def test_what_the_booted_system_shows_is_written_for_osctl(esp: Path, tmp_path: Path) -> None:
    efivars, cmdline = tmp_path / "efivars", tmp_path / "cmdline"
    machine = vm.VM(esp, tmp_path / "vm", efivars=efivars, kernel_cmdline=cmdline)
    (esp / "loader" / "entries" / "osctl-v1.6+2.conf").rename(esp / "loader" / "entries" / "osctl-v1.6+1-1.conf")
    machine.write_booted_state(boot("v1.6", "osctl-v1.6+2.conf", panicked=False))
    variable = (efivars / vm.ENTRY_SELECTED).read_bytes()
    assert variable == b"\x06\x00\x00\x00" + "osctl-v1.6+2.conf\0".encode("utf-16-le")
    assert cmdline.read_text() == ("initrd=\\osctl\\files\\initrd.img-v1.6 console=ttyS0 panic=1 quiet "
                                   "osctl.version=v1.6\n")
    machine.write_booted_state(boot("v1.6", "osctl-v1.6+1-1.conf", panicked=True))  # osctl never ran
    assert not (efivars / vm.ENTRY_SELECTED).exists() and not cmdline.exists()
    machine.write_booted_state(boot("v1.9", "osctl-v1.9.conf", panicked=False))  # no such entry: the word alone
    assert cmdline.read_text() == "osctl.version=v1.9\n"
