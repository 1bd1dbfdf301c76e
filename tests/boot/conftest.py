"""tests/boot/: what osctl writes, booted by a real loader in a VM (``tests/support/vm.py``).

Every test here is skipped, with the reason, when the harness cannot run on this machine
(no QEMU, OVMF, mtools or dosfstools, or no cached systemd-boot and kernel under
``.run/boot``: ``scripts/setup`` provides them); the test command then runs the rest as before.
The skip is set at collection, so that no engine fixture runs for a test that cannot run.

``machine``: the test host's machine. It points the host's settings (``<root>/etc/osctl/
config.yaml``, ``boot:``) at the files the VM writes what booted to (``efivars``,
``kernel_cmdline``), hides the loader's menu (``menu_timeout: 0``), and boots ``<root>/boot``
(the default ``boot.esp``) as the ESP: ``machine.boot()`` is one reboot of that host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
def machine(host: Host, tmp_path: Path) -> Iterator[vm.VM]:
    firmware = tmp_path / "machine"
    efivars, cmdline = firmware / "efivars", firmware / "cmdline"
    config = host.root / "etc" / "osctl" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    with config.open("a") as out:
        out.write(f"boot:\n  efivars: {json.dumps(str(efivars))}\n  kernel_cmdline: {json.dumps(str(cmdline))}\n"
                  f"  menu_timeout: 0\n")
    machine = vm.VM(host.root / "boot", firmware / "vm", efivars=efivars, kernel_cmdline=cmdline)
    yield machine
    machine.close()
