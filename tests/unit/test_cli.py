"""The CLI contract: one clear line and a non-zero exit code for every failure, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from osctl import __version__
from osctl.cli.main import main

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/osctl-test.sock"}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for word in ("--root", "--host-id", "--image", "OSCTL_ROOT", "status", "image"):
        assert word in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "No such command" in err


@pytest.mark.parametrize("address", ["unix:///nonexistent/osctl-test.sock", "tcp://127.0.0.1:9"])
def test_no_engine_gives_one_line_naming_the_address_and_setup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, address: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", address)
    code, out, err = run(capsys, "--root", str(tmp_path), "status")
    assert code == 3 and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: cannot reach the Docker engine at " + address)
    assert "scripts/setup" in lines[1] and len(lines) == 2


def test_bad_settings_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "etc/osctl").mkdir(parents=True)
    (tmp_path / "etc/osctl/config.yaml").write_text("image: [unclosed\n")
    code, _, err = run(capsys, "--root", str(tmp_path), "status")
    assert code == 2
    assert err.startswith(f"error: invalid settings: {tmp_path}/etc/osctl/config.yaml:")
    assert "Traceback" not in err


def test_validate_manifest_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "release.yaml"
    good.write_text("version: v1.0\nservices:\n  a: {command: [sleep, '1']}\nboot: {kernel: /boot/vmlinuz}\n")
    code, out, _ = run(capsys, "image", "validate", str(good), "--json")
    assert code == 0 and '"valid": true' in out and '"version": "v1.0"' in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("a: {", "a: {helthcheck: x, "))
    code, out, err = run(capsys, "image", "validate", str(bad))
    assert code == 2 and out == ""
    assert "bad.yaml:3:7: services.a.helthcheck: unknown key" in err
    code, _, err = run(capsys, "image", "validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and "does not exist" in err


def test_version_without_repository_says_how_to_name_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OSCTL_IMAGE", raising=False)
    code, _, err = run(capsys, "--root", str(tmp_path), "image", "validate", "v1.4")
    assert code == 2 and "no OS image repository is configured" in err


def test_internal_errors_are_one_line_unless_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import osctl.operations.hoststatus as hoststatus

    def boom(*_args: object) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr(hoststatus, "host_status", boom)
    code, _, err = run(capsys, "--root", str(tmp_path), "status")
    assert code == 70 and "internal error: RuntimeError: kaput" in err and "Traceback" not in err
    code, _, err = run(capsys, "--debug", "--root", str(tmp_path), "status")
    assert code == 70 and "Traceback" in err


def test_console_script_exits_with_the_code(tmp_path: Path) -> None:
    """The real entry point, as a user runs it: exit status and stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "osctl", "--root", str(tmp_path), "status"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **NO_ENGINE}, timeout=60)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: cannot reach the Docker engine")
    assert "Traceback" not in proc.stderr
