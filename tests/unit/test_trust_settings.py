"""Which root a host trusts, where it came from, and whether it is enforced.

``--trust-root`` beats ``OSCTL_TRUST_ROOT`` beats ``trust.root`` in the settings file; a path
in the file is read from the file's folder; the file may hold the root inline. A root that
cannot be read is one usage error that names where its path came from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from osctl.domain.settings import MAX_ROOT, Settings
from osctl.errors import ConfigError, UsageError


def write_config(root: Path, text: str) -> Path:
    (root / "etc/osctl").mkdir(parents=True, exist_ok=True)
    path = root / "etc/osctl/config.yaml"
    path.write_text(text)
    return path


def root_file(path: Path, name: str) -> Path:
    """A stand-in root.json: the settings only carry bytes (python-tuf judges them when used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"signatures": [], "signed": {"_type": "root", "name": name}}))
    return path


def name_of(data: bytes | None) -> str:
    assert data is not None
    return json.loads(data)["signed"]["name"]


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    return root


def test_nothing_configured_is_unset_and_not_enforced(host: Path) -> None:
    trust = Settings(root_option=str(host), env={}).trust
    assert (trust.root, trust.origin, trust.mode, trust.enforced, trust.metadata_url) == (
        None, "unset", "enforce", False, None)


def test_precedence_option_then_environment_then_settings_file(host: Path, tmp_path: Path) -> None:
    root_file(host / "etc/osctl/root.json", "file")
    write_config(host, "trust: {root: root.json}\n")
    env = {"OSCTL_TRUST_ROOT": str(root_file(tmp_path / "env.json", "env"))}
    option = str(root_file(tmp_path / "opt.json", "option"))
    for kwargs, environ, name, origin in (({"trust_root_option": option}, env, "option", "option"),
                                         ({}, env, "env", "environment"),
                                         ({}, {}, "file", "settings file")):
        trust = Settings(root_option=str(host), env=environ, **kwargs).trust
        assert (name_of(trust.root), trust.origin, trust.enforced) == (name, origin, True)


def test_a_relative_path_in_the_settings_file_is_read_from_its_folder(host: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root_file(host / "etc/osctl/keys/root.json", "beside the settings file")
    root_file(tmp_path / "keys/root.json", "beside the working directory")
    monkeypatch.chdir(tmp_path)
    write_config(host, "trust:\n  root: keys/root.json\n")
    assert name_of(Settings(root_option=str(host), env={}).trust.root) == "beside the settings file"


def test_an_absolute_path_in_the_settings_file_is_read_as_it_is(host: Path, tmp_path: Path) -> None:
    path = root_file(tmp_path / "elsewhere/root.json", "absolute")
    write_config(host, f"trust: {{root: {path}}}\n")
    assert name_of(Settings(root_option=str(host), env={}).trust.root) == "absolute"


def test_the_root_inline_in_the_settings_file(host: Path) -> None:
    document = {"signatures": [{"keyid": "ab", "sig": "cd"}], "signed": {"_type": "root", "version": 3}}
    write_config(host, "image: 127.0.0.1:5000/osctl/os\ntrust:\n  root: " + json.dumps(document) + "\n")
    trust = Settings(root_option=str(host), env={}).trust
    assert json.loads(trust.root) == document  # type: ignore[arg-type]
    assert (trust.origin, trust.enforced) == ("settings file", True)


def test_mode_off_is_not_enforced_wherever_the_root_comes_from(host: Path, tmp_path: Path) -> None:
    root_file(host / "etc/osctl/root.json", "file")
    write_config(host, "trust: {root: root.json, mode: off}\n")
    trust = Settings(root_option=str(host), env={}).trust
    assert (trust.mode, trust.enforced, trust.root is not None) == ("off", False, True)
    option = str(root_file(tmp_path / "opt.json", "option"))
    trust = Settings(root_option=str(host), env={}, trust_root_option=option).trust
    assert (trust.origin, trust.mode, trust.enforced) == ("option", "off", False)


def test_enforce_is_the_default_only_with_a_root(host: Path) -> None:
    write_config(host, "trust: {metadata_url: 'https://releases.example/os/'}\n")
    trust = Settings(root_option=str(host), env={}).trust
    assert (trust.mode, trust.root, trust.enforced) == ("enforce", None, False)
    assert trust.metadata_url == "https://releases.example/os/"
    write_config(host, "trust: {mode: enforce}\n")
    assert Settings(root_option=str(host), env={}).trust.enforced is False  # enforce what? nothing to trust


@pytest.mark.parametrize("how", ["option", "environment", "settings file"])
@pytest.mark.parametrize("problem", ["missing", "a directory", "oversized", "unreadable"])
def test_a_root_that_cannot_be_read_is_one_usage_error_naming_where_the_path_came_from(
        host: Path, tmp_path: Path, how: str, problem: str) -> None:
    path = tmp_path / "root.json"
    if problem == "a directory":
        path.mkdir()
    elif problem == "oversized":
        path.write_bytes(b" " * (MAX_ROOT + 1))
    elif problem == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads a file of mode 000")
        root_file(path, "locked").chmod(0)
    kwargs, env, origin = {"option": ({"trust_root_option": str(path)}, {}, "--trust-root"),
                           "environment": ({}, {"OSCTL_TRUST_ROOT": str(path)}, "OSCTL_TRUST_ROOT"),
                           "settings file": ({}, {}, f"{host}/etc/osctl/config.yaml: trust.root")}[how]
    if how == "settings file":
        write_config(host, f"trust: {{root: {path}}}\n")
    with pytest.raises(UsageError) as caught:
        Settings(root_option=str(host), env=env, **kwargs).trust  # noqa: B018
    message = caught.value.message
    assert message.startswith(f"{origin}: ") and str(path) in message and "\n" not in message
    assert caught.value.exit_code == 2
    if problem == "oversized":
        assert f"larger than {MAX_ROOT} bytes" in message
    else:
        assert "cannot read the trusted root" in message


def test_a_bad_trust_section_in_the_settings_file_names_file_line_and_key(host: Path) -> None:
    config = write_config(host, "image: 127.0.0.1:5000/osctl/os\ntrust:\n  mode: maybe\n")
    with pytest.raises(ConfigError) as caught:
        Settings(root_option=str(host), env={}).trust  # noqa: B018
    assert f"{config}:3:3: trust.mode: 'maybe' is not one of 'enforce', 'off'" in caught.value.message
