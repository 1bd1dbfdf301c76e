"""tests/boot/: what osctl writes, booted by a real loader in a VM (``tests/support/vm.py``).

Every test here is skipped, with the reason, when the harness cannot run on this machine
(no QEMU, OVMF, mtools or dosfstools, or no cached systemd-boot and kernel under
``.run/boot``: ``scripts/setup`` provides them); the test command then runs the rest as before.
The skip is set at collection, so that no engine fixture runs for a test that cannot run.

``machine``: the test host's machine (``make_machine``: one for any host the test makes). It points the host's settings (``<root>/etc/osctl/
config.yaml``, ``boot:``) at the files the VM writes what booted to (``efivars``,
``kernel_cmdline``), hides the loader's menu (``menu_timeout: 0``), and boots ``<root>/boot``
(the default ``boot.esp``) as the ESP: ``machine.boot()`` is one reboot of that host.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import vm
from tests.support.hosts import Host

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = vm.unavailable()
    if reason is None:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def make_machine(tmp_path: Path) -> Iterator[Callable[[Host], vm.VM]]:
    """The machine of a test host: its settings read what the VM shows, its ESP is booted."""
    made: list[vm.VM] = []

    def make(host: Host) -> vm.VM:
        firmware = tmp_path / f"machine-{host.host_id}"
        efivars, cmdline = firmware / "efivars", firmware / "cmdline"
        config = host.root / "etc" / "osctl" / "config.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        with config.open("a") as out:
            out.write(f"boot:\n  efivars: {json.dumps(str(efivars))}\n  kernel_cmdline: {json.dumps(str(cmdline))}\n"
                      f"  menu_timeout: 0\n")
        made.append(vm.VM(host.root / "boot", firmware / "vm", efivars=efivars, kernel_cmdline=cmdline))
        return made[-1]

    yield make
    for machine in made:
        machine.close()


@pytest.fixture
def machine(host: Host, make_machine: Callable[[Host], vm.VM]) -> vm.VM:
    return make_machine(host)
