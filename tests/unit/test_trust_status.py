"""``osctl status`` shows trust: where the root came from, the mode, and what the metadata the host
last verified says (read offline from <root>/var/lib/osctl/tuf; status never asks the registry).

No engine: the command runs against the in-memory engine of tests/support.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from osctl.cli import render
from osctl.cli.context import AppContext
from osctl.cli.main import main
from osctl.domain.settings import Settings
from osctl.models.engine import EngineInfo
from osctl.operations.trust import CACHE_DIR as TUF_DIR
from osctl.operations.hoststatus import trust_status
from tests.support.fake_engine import FakeEngine
from tests.support.tuf_by_hand import HandRepo

IMAGE = "127.0.0.1:9/osctl/os"  # nothing listens on port 9: a status that asked the registry would fail


class StatusEngine(FakeEngine):
    def info(self) -> EngineInfo:
        return EngineInfo("unix:///fake.sock", "24.0", "1.43")


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "host"
    (root / "etc/osctl").mkdir(parents=True)
    (root / "etc/machine-id").write_text("status-host\n")
    monkeypatch.setattr(AppContext, "engine", property(lambda self: StatusEngine()))
    monkeypatch.setattr(render.stdout, "_width", 400)  # one table row a line, as on a wide terminal
    for name in ("OSCTL_ROOT", "OSCTL_TRUST_ROOT", "OSCTL_IMAGE", "OSCTL_HOST_ID"):
        monkeypatch.delenv(name, raising=False)

    def no_network(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("osctl status asked the network for release metadata")

    monkeypatch.setattr("osctl.adapters.tufclient.TufClient.refresh", no_network)
    monkeypatch.setattr("osctl.adapters.tufclient.get_file", no_network)
    return root


@pytest.fixture
def repo() -> HandRepo:
    """A publisher's metadata: four versions, v1.4 revoked, a floor at v1.3 (so v1.2 is revoked too)."""
    repo = HandRepo()
    for version in ("v1.2", "v1.3", "v1.4", "v1.5"):
        repo.sign(version, f"manifest of {version}".encode())
    repo.revoke("v1.4", "broke ntp")
    repo.floor("v1.3", "CVE-2026-0001")
    repo.publish()
    return repo


def trusting(host: Path, repo: HandRepo, config: str = "trust: {root: root.json}\n") -> None:
    """The host is given the root, and holds what its last refresh verified."""
    (host / "etc/osctl/root.json").write_bytes(repo.root_bytes)
    (host / "etc/osctl/config.yaml").write_text(f"image: {IMAGE}\n{config}")
    repo.write_trusted(host / TUF_DIR)


def status(capsys: pytest.CaptureFixture[str], host: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--root", str(host), "status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_no_root_says_nothing_is_verified(capsys: pytest.CaptureFixture[str], host: Path) -> None:
    code, out, _ = status(capsys, host)
    assert code == 0
    assert "trust       not verified: no trust root is configured (trust.root, see docs/trust.md)" in out
    assert "releases" not in out
    code, out, _ = status(capsys, host, "--json")
    assert json.loads(out)["trust"] == {
        "origin": "unset", "mode": "enforce", "enforced": False, "metadata_source": None,
        "configured_root_version": None, "trusted": False, "root_version": None, "targets_version": None,
        "expires": None, "expiring_role": None, "expired": False, "signed": 0, "revoked": [], "floor": None,
        "floor_reason": None, "problem": None}


def test_an_enforced_root_and_what_the_last_metadata_says(capsys: pytest.CaptureFixture[str], host: Path,
                                                          repo: HandRepo) -> None:
    trusting(host, repo)
    code, out, _ = status(capsys, host, "--json")
    trust = json.loads(out)["trust"]
    expires = repo.timestamp.signed.expires.isoformat(timespec="seconds")
    assert code == 0 and trust == {
        "origin": "settings file", "mode": "enforce", "enforced": True, "metadata_source": f"{IMAGE}-tuf",
        "configured_root_version": 1, "trusted": True, "root_version": 1, "targets_version": 1,
        "expires": expires, "expiring_role": "timestamp", "expired": False, "signed": 4,
        "revoked": ["v1.2", "v1.4"], "floor": "v1.3", "floor_reason": "CVE-2026-0001", "problem": None}
    code, out, _ = status(capsys, host)
    lines = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.strip()}
    assert lines["trust"] == f"enforced: root v1 from the settings file (metadata: {IMAGE}-tuf)"
    assert lines["releases"] == (f"root v1, targets v1; 4 signed; revoked: v1.2, v1.4; floor v1.3 (CVE-2026-0001); "
                                 f"timestamp expires {expires}")


def test_newer_metadata_after_a_rotation_is_what_status_reports(host: Path, repo: HandRepo) -> None:
    trusting(host, repo)
    repo.sign("v1.6", b"manifest of v1.6")
    repo.publish()
    repo.publish()
    repo.write_trusted(host / TUF_DIR)
    rotated = json.loads(repo.root_bytes)
    rotated["signed"]["version"] = 3  # what a host holds after following the chain to root v3
    (host / TUF_DIR / "root.json").write_text(json.dumps(rotated))
    trust = trust_status(Settings(root_option=str(host), env={}))
    assert (trust.configured_root_version, trust.root_version, trust.targets_version, trust.signed) == (1, 3, 3, 5)


def test_expired_metadata_names_the_role_and_is_red(capsys: pytest.CaptureFixture[str], host: Path) -> None:
    repo = HandRepo()
    repo.sign("v1.4", b"manifest")
    repo.expiry["snapshot"] = -timedelta(hours=3)
    repo.publish()
    trusting(host, repo)
    code, out, _ = status(capsys, host, "--json")
    trust = json.loads(out)["trust"]
    assert (trust["expired"], trust["expiring_role"]) == (True, "snapshot")
    _, out, _ = status(capsys, host)
    assert "snapshot expired" in out and "stored verified versions still boot; nothing new installs" in out


def test_a_root_from_the_option_or_environment_and_mode_off(capsys: pytest.CaptureFixture[str], host: Path,
                                                             repo: HandRepo, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    trusting(host, repo, config="trust: {mode: off, metadata_url: 'https://releases.example/os/'}\n")
    given = tmp_path / "root.json"
    given.write_bytes(repo.root_bytes)
    code = main(["--root", str(host), "--trust-root", str(given), "status", "--json"])
    trust = json.loads(capsys.readouterr().out)["trust"]
    assert code == 0 and (trust["origin"], trust["mode"], trust["enforced"]) == ("option", "off", False)
    assert trust["metadata_source"] == "https://releases.example/os/" and trust["signed"] == 4
    monkeypatch.setenv("OSCTL_TRUST_ROOT", str(given))
    code, out, _ = status(capsys, host)
    assert "trust       off (trust.mode): root v1 from OSCTL_TRUST_ROOT; versions are not verified" in out


def test_a_root_never_refreshed_says_so(capsys: pytest.CaptureFixture[str], host: Path, repo: HandRepo) -> None:
    (host / "etc/osctl/root.json").write_bytes(repo.root_bytes)
    (host / "etc/osctl/config.yaml").write_text(f"image: {IMAGE}\ntrust: {{root: root.json}}\n")
    code, out, _ = status(capsys, host)
    assert code == 0 and "releases    no verified metadata yet" in out


def test_an_unreadable_root_or_damaged_metadata_is_shown_not_fatal(capsys: pytest.CaptureFixture[str], host: Path,
                                                                   repo: HandRepo) -> None:
    trusting(host, repo)
    (host / TUF_DIR / "targets.json").write_text("{not json")
    code, out, _ = status(capsys, host, "--json")
    trust = json.loads(out)["trust"]
    assert code == 0 and trust["trusted"] is False and "is damaged" in trust["problem"]
    (host / "etc/osctl/root.json").unlink()
    code, out, _ = status(capsys, host)
    assert code == 0 and "cannot read the trusted root" in out


def test_status_of_a_host_without_trust_does_not_load_python_tuf(host: Path) -> None:
    """python-tuf and its crypto take a noticeable part of a second to import: a host with
    nothing to verify does not pay for them in every status."""
    import subprocess
    import sys

    code = ("import sys; from osctl.domain.settings import Settings; from osctl.operations.hoststatus import "
            f"trust_status; t = trust_status(Settings(root_option={str(host)!r}, env={{}})); "
            "print(t.origin, sorted(m for m in sys.modules if m.split('.')[0] in ('tuf', 'securesystemslib')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout.strip() == "unset []", proc.stderr
