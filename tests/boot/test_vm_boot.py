"""What osctl writes boots on a real machine: OVMF, systemd-boot, the shipped kernel and initrds.

Three hosts walk the scenarios of issue 15, each VM boot a reboot of its host (``make_machine``,
tests/boot/conftest.py): the ESP image is built from ``<root>/boot``, booted, the loader's
renames come back into the folder, and what booted is written where osctl's settings read it
(``boot.efivars``, ``boot.kernel_cmdline``). ``osctl boot`` then runs as it would at start-up;
after a boot that panicked nothing runs, since userspace never came up.

Eight boots of 12 to 15 s each (tcg, one vCPU; tests/support/vm.py says where the time goes).
Three hosts boot side by side (3, 3 and 2 boots), so both cores are busy throughout. Marked
``alone``: each boot keeps a core busy for its whole length, which would slow the
timing-sensitive tests beside it (health gates of a few seconds, hanging probes, supervisor
restarts) and be slowed by them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import vm
from tests.support.hosts import Host

pytestmark = pytest.mark.alone


def osctl_ok(host: Host, *args: str) -> str:
    proc = host.osctl(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def entries(host: Host) -> set[str]:
    return {p.name for p in (host.root / "boot" / "loader" / "entries").iterdir()}


def loader_conf(host: Host) -> str:
    return (host.root / "boot" / "loader" / "loader.conf").read_text()


def describe(host: Host, boot: vm.Boot) -> str:
    return (f"booted {boot.version} from {boot.entry} (panicked: {boot.panicked}, {boot.seconds:.1f} s); "
            f"entries now {sorted(entries(host))}; loader.conf {loader_conf(host)!r}; serial:\n{boot.tail()}")


def boots(host: Host, machine: vm.VM, version: str, entry: str) -> vm.Boot:
    """One reboot that must reach userspace with ``version`` from the loader entry ``entry``."""
    boot = machine.boot()
    assert (boot.version, boot.entry, boot.cmdline_version, boot.reached_userspace) == (version, entry, version, True), \
        describe(host, boot)
    return boot


def panics(host: Host, machine: vm.VM, version: str, entry: str) -> vm.Boot:
    """One reboot into ``version`` (entry ``entry``) whose initrd panics: nothing of userspace runs."""
    boot = machine.boot()
    assert (boot.version, boot.entry, boot.panicked, boot.reached_userspace) == (version, entry, True, False), \
        describe(host, boot)
    assert boot.panic_line is not None and "Attempted to kill init" in boot.panic_line, describe(host, boot)
    assert machine.efivars is not None and not (machine.efivars / vm.ENTRY_SELECTED).exists()
    return boot


def start_up(host: Host) -> dict[str, object]:
    """``osctl boot`` on the system that just came up."""
    result = host.osctl_json("boot")
    assert isinstance(result, dict)
    return result


def install_upgrade_downgrade(host: Host, machine: vm.VM) -> None:
    """Each boots what the pointer names, and osctl learns from the loader what booted."""
    osctl_ok(host, "upgrade", "--to", "v1.3")
    assert entries(host) == {"osctl-v1.3.conf"}
    assert "timeout 0" in loader_conf(host).splitlines()  # boot.menu_timeout from the settings
    boots(host, machine, "v1.3", "osctl-v1.3.conf")
    result = start_up(host)
    assert (result["version"], result["loader_entry"], result["trial"]) == ("v1.3", "osctl-v1.3.conf", None)

    osctl_ok(host, "upgrade", "--to", "v1.5")
    boots(host, machine, "v1.5", "osctl-v1.5.conf")
    assert start_up(host)["version"] == "v1.5"
    osctl_ok(host, "downgrade", "--to", "v1.4")
    boots(host, machine, "v1.4", "osctl-v1.4.conf")
    assert start_up(host)["version"] == "v1.4"


def a_trial_abandoned(host: Host, machine: vm.VM) -> None:
    osctl_ok(host, "upgrade", "--to", "v1.4")

    # a trial of the broken v1.6 with two tries: the loader counts them, then falls back alone
    osctl_ok(host, "upgrade", "--to", "v1.6", "--stage", "--tries", "2")
    assert "osctl-v1.6+2.conf" in entries(host) and "default osctl-*" in loader_conf(host).splitlines()
    panics(host, machine, "v1.6", "osctl-v1.6+2.conf")
    assert "osctl-v1.6+1-1.conf" in entries(host)
    panics(host, machine, "v1.6", "osctl-v1.6+1-1.conf")
    assert "osctl-v1.6+0-2.conf" in entries(host)
    fallback = boots(host, machine, "v1.4", "osctl-v1.4.conf")  # osctl had no say in this one
    assert "osctl-v1.6+0-2.conf" in fallback.entries
    result = start_up(host)
    assert (result["version"], result["trial"], result["trial_result"]) == ("v1.4", "v1.6", "fell-back"), result
    assert "after 2 tries" in str(result["reason"]), result
    status = host.osctl_json("status")
    assert isinstance(status, dict) and status["next_boot"] == "v1.4"
    assert "v1.6" in json.dumps(status["last_rollback"]) and "abandoned" in json.dumps(status["last_rollback"])
    assert not any(name.startswith("osctl-v1.6") for name in entries(host))  # never retried
    assert "default osctl-v1.4.conf" in loader_conf(host).splitlines()


def a_trial_blessed(host: Host, machine: vm.VM) -> None:
    """A trial of v1.5 with three tries: it comes up, osctl blesses it, and it stays."""
    osctl_ok(host, "upgrade", "--to", "v1.4")
    osctl_ok(host, "upgrade", "--to", "v1.5", "--stage", "--tries", "3")
    assert "osctl-v1.5+3.conf" in entries(host)
    boots(host, machine, "v1.5", "osctl-v1.5+3.conf")
    assert "osctl-v1.5+2-1.conf" in entries(host)
    result = start_up(host)
    assert (result["version"], result["trial"], result["trial_result"]) == ("v1.5", "v1.5", "promoted"), result
    assert "osctl-v1.5.conf" in entries(host) and not any("+" in name for name in entries(host))
    assert "default osctl-v1.5.conf" in loader_conf(host).splitlines()
    blessed = boots(host, machine, "v1.5", "osctl-v1.5.conf")
    assert not any("+" in name for name in blessed.entries)  # nothing left for the loader to count
    result = start_up(host)
    assert (result["version"], result["trial"]) == ("v1.5", None)


def test_installs_upgrades_downgrades_a_trial_the_loader_abandons_and_one_osctl_blesses(
        make_host: Callable[[], Host], make_machine: Callable[[Host], vm.VM]) -> None:
    walks = {install_upgrade_downgrade: make_host(), a_trial_abandoned: make_host(), a_trial_blessed: make_host()}
    with ThreadPoolExecutor(len(walks)) as pool:
        running = [pool.submit(walk, host, make_machine(host)) for walk, host in walks.items()]
        for done in running:
            done.result()  # a failed walk's assertion, as it was raised
