"""Binds stay under the host root: what validation refuses, and what happens at create and start.

The attack (issue 19): a service with a read-write bind of an ancestor of another bind's source
swaps that source for a symbolic link out of the root; the engine follows it at the victim's
next start. Validation refuses such a manifest; every create and start resolves the sources
again and fails the one service whose source now leads outside; and nothing that only lists
or stops containers depends on the binds, so the host can always be brought down.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from osctl.cli.main import main
from osctl.domain import binds, servicestate
from osctl.domain.manifest import parse_manifest
from osctl.domain.settings import Settings
from osctl.errors import ManifestError, UsageError
from osctl.models.services import ServicesState
from osctl.operations import services, serviceset
from osctl.operations.supervisor import Policy, Supervisor
from tests.support.fake_engine import FakeEngine, store_version

HEAD = "version: v1.0\nservices:\n"
BOOT = "boot: {kernel: /boot/vmlinuz}\n"
VICTIM = "  victim: {command: [/bin/cat, /d/passwd], volumes: ['/data:/d']}\n"
OTHER = "  other: {command: [/bin/sleep, '1000']}\n"
ATTACKER = "  attacker: {command: [/bin/sh], volumes: ['/:/r']}\n"


def manifest(*services: str) -> str:
    return HEAD + "".join(services) + BOOT


def refusal(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, "release.yaml")
    return caught.value


# -- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("volume", ["logs:/", "logs://", "logs:/.", "/data:/proc", "/data:/proc/sys/kernel",
                                    "logs:/sys", "logs://sys/fs", "/data:/dev", "logs:/dev/shm", "logs:/./proc/x"])
def test_volume_targets_the_engine_owns_are_refused(volume: str) -> None:
    err = refusal(manifest(f"  a: {{command: [/bin/sh], volumes: ['{volume}']}}\n"))
    assert len(err.issues) == 1 and err.issues[0].path == "services.a.volumes[0]"
    assert "nothing can be mounted" in err.message


@pytest.mark.parametrize("volume", ["logs:/procs", "logs:/devices", "/data:/system", "logs:/var/dev"])
def test_targets_beside_them_are_fine(volume: str) -> None:
    parse_manifest(manifest(f"  a: {{command: [/bin/sh], volumes: ['{volume}']}}\n"), "release.yaml")


@pytest.mark.parametrize(("attacker", "victim"), [
    ("['/:/r']", "['/data:/d']"),
    ("['/var/:/v']", "['/var//lib/./x:/x:ro']"),  # written differently, the same paths
    ("['/srv:/srv:rw']", "['/srv/a/b:/b']"),
])
def test_a_read_write_bind_containing_another_services_bind_source_is_refused(attacker: str, victim: str) -> None:
    err = refusal(manifest(f"  attacker: {{command: [/bin/sh], volumes: {attacker}}}\n",
                           f"  victim: {{command: [/bin/sh], volumes: {victim}}}\n"))
    assert [i.path for i in err.issues] == ["services.attacker.volumes"]
    assert "contains the bind source of victim" in err.message
    assert "\n" not in err.issues[0].message


def test_a_read_write_bind_containing_its_own_other_bind_is_refused() -> None:
    err = refusal(manifest("  a: {command: [/bin/sh], volumes: ['/var:/v', '/var/lib/x:/x']}\n"))
    assert "read-write bind of /var contains its own bind source /var/lib/x" in err.message


@pytest.mark.parametrize("volumes", [
    ["'/:/r:ro'", "'/data:/d'"],  # read-only: it cannot swap anything
    ["'/data:/d'", "'/data:/e'"],  # the same directory: a service cannot replace what it is given
    ["'/data:/d'", "'/database:/e'"],  # a common prefix is not an ancestor
    ["'data:/d'", "'/data/x:/e'"],  # a named volume is not a host path
])
def test_binds_that_cannot_swap_anothers_source_are_fine(volumes: list[str]) -> None:
    text = manifest(f"  a: {{command: [/bin/sh], volumes: [{volumes[0]}]}}\n",
                    f"  b: {{command: [/bin/sh], volumes: [{volumes[1]}]}}\n")
    parse_manifest(text, "release.yaml")


def test_validate_refuses_with_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(manifest(ATTACKER, VICTIM))
    assert main(["image", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(f"error: invalid release manifest: {path}:")
    assert "read-write bind of / contains the bind source of victim /data" in err.splitlines()[0]
    assert "Traceback" not in err


# -- create and start ----------------------------------------------------------------------------

def stored(root: Path, text: str) -> serviceset.ServiceSet:
    store_version(root, text)
    servicestate.write_services(root, ServicesState(version="v1.0", desired="up"))
    return serviceset.load_service_set("unit-binds", root, "v1.0")


def swap_for_link(root: Path, outside: Path) -> None:
    """What the attacker did: the victim's bind source becomes a link out of the root."""
    (root / "data").rename(root / "data.old")
    os.symlink(outside, root / "data")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root/data").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


def test_up_resolves_binds_inside_the_root_and_hands_the_engine_resolved_paths(root: Path) -> None:
    (root / "var").mkdir()
    os.symlink("/var/real", root / "var/link")  # an absolute link of the host: inside the root, resolved
    (root / "var/real").mkdir()
    sset = stored(root, manifest("  a: {command: [/bin/sh], volumes: ['/var/link:/x', '/data:/d']}\n"))
    fake = FakeEngine()
    with pytest.raises(serviceset.ServicesFailed) as caught:
        serviceset.up(fake, sset)  # type: ignore[arg-type]
    # /var/link -> /var/real is read by the machine, not the host: it leads outside the root
    assert "bind source /var/link leads outside the host root" in caught.value.message
    os.remove(root / "var/link")
    os.symlink("real", root / "var/link")  # a relative link stays inside
    serviceset.up(fake, sset)  # type: ignore[arg-type]
    assert fake.inspect(fake.id_of("a")).binds == (str((root / "var/real").resolve()),  # type: ignore[union-attr]
                                                    str((root / "data").resolve()))


def test_a_source_leading_outside_fails_that_service_only_and_creates_nothing(root: Path, tmp_path: Path) -> None:
    sset = stored(root, manifest(VICTIM, OTHER))
    swap_for_link(root, tmp_path / "outside")
    fake = FakeEngine()
    with pytest.raises(serviceset.ServicesFailed) as caught:
        serviceset.up(fake, sset)  # type: ignore[arg-type]
    failed = {o.service: o.detail for o in caught.value.outcomes if not o.ok}
    assert failed == {"victim": f"bind source /data leads outside the host root {root} (through a symbolic link)"}
    assert fake.status_of("other") == "running" and fake.status_of("victim") is None


def test_starting_an_existing_container_resolves_its_binds_again(root: Path, tmp_path: Path) -> None:
    sset = stored(root, manifest(VICTIM, OTHER))
    fake = FakeEngine()
    serviceset.up(fake, sset)  # type: ignore[arg-type]
    fake.exit(fake.id_of("victim"), 1)
    swap_for_link(root, tmp_path / "outside")
    with pytest.raises(serviceset.ServicesFailed) as caught:
        serviceset.up(fake, sset)  # type: ignore[arg-type]
    assert "leads outside the host root" in caught.value.message
    assert fake.status_of("victim") == "exited"


def test_the_supervisor_does_not_restart_a_container_through_a_swapped_bind(root: Path, tmp_path: Path) -> None:
    stored(root, manifest(VICTIM, OTHER))
    fake = FakeEngine()
    settings = Settings(root_option=str(root), host_id_option="unit-binds", env={})
    sup = Supervisor(settings, policy=Policy(backoff_min=0.01, backoff_max=0.01, max_failures=2),
                     engine_factory=lambda: fake)  # type: ignore[arg-type,return-value]
    sup.reconcile(fake, fresh=True)  # type: ignore[arg-type]
    assert fake.status_of("victim") == "running"
    swap_for_link(root, tmp_path / "outside")
    sup._on_event(fake, fake.exit(fake.id_of("victim"), 137))  # type: ignore[arg-type]
    for _ in range(50):  # restarts are due after a backoff of 10 ms, with jitter
        time.sleep(0.02)
        sup._restart_due(fake)  # type: ignore[arg-type]
        if sup.status.services["victim"].failed:
            break
    record = sup.status.services["victim"]
    assert fake.status_of("victim") == "exited" and fake.started.count("victim") == 1
    assert record.failed and "bind source /data leads outside the host root" in (record.last_failure or "")
    assert fake.status_of("other") == "running"


def test_a_host_with_a_swapped_bind_can_be_listed_and_brought_down(root: Path, tmp_path: Path) -> None:
    sset = stored(root, manifest(VICTIM, OTHER))
    fake = FakeEngine()
    serviceset.up(fake, sset)  # type: ignore[arg-type]
    swap_for_link(root, tmp_path / "outside")
    settings = Settings(root_option=str(root), host_id_option="unit-binds", env={})
    rows = {row.name: row.state for row in services.service_rows(settings, fake)}  # type: ignore[arg-type]
    assert rows == {"victim": "running", "other": "running"}
    assert sorted(serviceset.down(fake, "unit-binds", "v1.0", manifest=sset.manifest)) == ["other", "victim"]  # type: ignore[arg-type]
    assert fake.by_id == {}


def test_a_version_stored_before_the_bind_rule_loads_but_its_offender_is_not_started(root: Path) -> None:
    sset = stored(root, manifest(ATTACKER, VICTIM, OTHER))  # as an older osctl stored it
    assert set(sset.unsafe) == {"attacker"}
    fake = FakeEngine()
    with pytest.raises(serviceset.ServicesFailed) as caught:
        serviceset.up(fake, sset)  # type: ignore[arg-type]
    failed = {o.service: o.detail for o in caught.value.outcomes if not o.ok}
    assert list(failed) == ["attacker"]
    assert failed["attacker"].startswith("not started: read-write bind of / contains the bind source of victim /data")
    assert fake.status_of("victim") == "running" and fake.status_of("attacker") is None


def test_a_symbolic_link_loop_is_refused_in_words(root: Path) -> None:
    os.symlink("loop", root / "loop")
    with pytest.raises(UsageError) as caught:
        binds.resolve_now(root, str(root.resolve() / "loop"))
    assert caught.value.message.startswith("bind source /loop cannot be resolved")


def test_an_extra_service_of_the_host_counts_as_a_service_of_the_version(root: Path) -> None:
    (root / "etc/osctl").mkdir(parents=True)
    (root / "etc/osctl/config.yaml").write_text(
        "services:\n  backup: {image: 'example.org/backup:1', command: [/bin/sh], volumes: ['/:/host']}\n")
    sset = stored(root, manifest(VICTIM, OTHER))
    assert sset.unsafe["backup"].startswith("read-write bind of / contains the bind source of victim /data")
    fake = FakeEngine()
    with pytest.raises(serviceset.ServicesFailed) as caught:
        serviceset.up(fake, sset)  # type: ignore[arg-type]
    assert [o.service for o in caught.value.outcomes if not o.ok] == ["backup"]
    assert fake.status_of("victim") == "running"
