"""The ``trust:`` key in the ``osctl:`` section of user data: a fleet gets its root at first boot.

The root a host is given inline must arrive as its publisher signed it: written into
config.yaml (YAML), read back and handed to python-tuf, its signatures must still verify.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from osctl.domain.settings import Settings
from osctl.domain.userdata import UserDataError, parse_user_data
from osctl.operations.cloudinit import apply
from tests.support.tuf_by_hand import HandRepo

# Values YAML would read as something else if a writer forgot to quote them: the root must come
# back with exactly these strings, or its signature no longer verifies.
AWKWARD = {"x-note": {"yes": "no", "n": "on", "when": "2026-11-29", "count": "0x1F", "octal": "0755",
                      "float": "1e5", "null": "null", "tilde": "~", "colon": "a: b", "hash": "# not a comment",
                      "lines": "one\ntwo\n", "spaces": "  padded  ", "unicode": "größe ✓", "empty": "",
                      "star": "*alias", "bang": "!tag", "percent": "%x", "at": "@x", "backtick": "`x`"}}


def user_data(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\n" + text)
    return path


def applied(host: Path, path: Path) -> Settings:
    report = apply(Settings(root_option=str(host), env={}), engine=None, user_data=path)  # type: ignore[arg-type]
    assert report is not None and not report.failed, report.steps
    return Settings(root_option=str(host), env={})


def verify(root_bytes: bytes) -> Metadata[Root]:
    """What python-tuf checks of a trusted root before using it: signed by its own root keys."""
    metadata = Metadata[Root].from_bytes(root_bytes)
    metadata.signed.verify_delegate(Root.type, metadata.signed_bytes, metadata.signatures)
    return metadata


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    root.mkdir()
    return root


@pytest.mark.parametrize("style", ["json", "yaml"])
def test_an_inline_root_arrives_intact_and_still_verifies(tmp_path: Path, host: Path, style: str) -> None:
    repo = HandRepo(root_extra=AWKWARD)
    document = json.loads(repo.root_bytes)
    if style == "json":  # pasted as it is: JSON is YAML
        inline = json.dumps(document)
    else:  # converted to block YAML by some tool
        from ruamel.yaml import YAML

        import io
        out = io.StringIO()
        YAML(typ="safe", pure=True).dump(document, out)
        inline = "\n" + "".join(f"      {line}\n" for line in out.getvalue().splitlines())
    settings = applied(host, user_data(tmp_path, f"osctl:\n  image: 127.0.0.1:5000/osctl/os\n  trust:\n    root: {inline}\n"))
    trust = settings.trust
    assert (trust.origin, trust.mode, trust.enforced) == ("settings file", "enforce", True)
    assert json.loads(trust.root) == document  # type: ignore[arg-type]
    assert verify(trust.root).signed.version == 1  # type: ignore[arg-type]
    # and the check is real: one changed value and python-tuf refuses it
    tampered = json.loads(trust.root)  # type: ignore[arg-type]
    tampered["signed"]["x-note"]["yes"] = "yes"
    with pytest.raises(UnsignedMetadataError):
        verify(json.dumps(tampered).encode())


def test_a_new_root_in_user_data_replaces_the_old_one_whole(tmp_path: Path, host: Path) -> None:
    """Maps of the osctl section merge into config.yaml key by key; two roots merged so would be
    neither root (the old keys kept beside the new), and no signature would verify."""
    old, new = HandRepo(), HandRepo()
    applied(host, user_data(tmp_path, f"osctl:\n  trust: {{root: {old.root_bytes.decode()}, mode: off}}\n"))
    settings = applied(host, user_data(tmp_path, f"osctl:\n  trust:\n    root: {new.root_bytes.decode()}\n"))
    assert json.loads(settings.trust.root) == json.loads(new.root_bytes)  # type: ignore[arg-type]
    verify(settings.trust.root)  # type: ignore[arg-type]
    assert settings.trust.mode == "off"  # the other trust keys still merge


def test_two_parts_with_a_root_each_the_later_root_wins_whole() -> None:
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    first, second = HandRepo(), HandRepo()
    message = MIMEMultipart()
    for root, mode in ((first, "off"), (second, None)):
        text = f"#cloud-config\nosctl:\n  trust:\n    root: {root.root_bytes.decode()}\n"
        message.attach(MIMEText(text + (f"    mode: {mode}\n" if mode else ""), "cloud-config"))
    data = parse_user_data(message.as_bytes(), "user-data")
    assert data.valid, [i.render() for i in data.issues]
    assert data.config["osctl"]["trust"]["root"] == json.loads(second.root_bytes)
    assert data.config["osctl"]["trust"]["mode"] == "off"


def test_a_path_root_is_kept_as_written_and_read_from_the_settings_folder(tmp_path: Path, host: Path) -> None:
    repo = HandRepo()
    (host / "etc/osctl").mkdir(parents=True)
    (host / "etc/osctl/root.json").write_bytes(repo.root_bytes)
    path = user_data(tmp_path, "osctl:\n  trust: {root: root.json, metadata_url: 'https://releases.example/os/'}\n")
    report = apply(Settings(root_option=str(host), env={}), engine=None, user_data=path)  # type: ignore[arg-type]
    assert report is not None and report.warnings == []
    trust = Settings(root_option=str(host), env={}).trust
    assert trust.root == repo.root_bytes and trust.metadata_url == "https://releases.example/os/"
    assert "root: root.json" in (host / "etc/osctl/config.yaml").read_text()


def test_a_path_root_missing_on_the_host_is_a_warning(tmp_path: Path, host: Path) -> None:
    path = user_data(tmp_path, "osctl:\n  trust: {root: /nowhere/root.json}\n")
    report = apply(Settings(root_option=str(host), env={}), engine=None, user_data=path)  # type: ignore[arg-type]
    assert report is not None and not report.failed
    assert [w for w in report.warnings if "osctl.trust.root: /nowhere/root.json does not exist on this host" in w]


def test_a_path_root_that_write_files_ships_is_no_warning(tmp_path: Path, host: Path) -> None:
    repo = HandRepo()
    path = user_data(tmp_path, "osctl:\n  trust: {root: trust/root.json}\nwrite_files:\n"
                               "  - path: /etc/osctl/trust/root.json\n"
                               f"    content: '{repo.root_bytes.decode()}'\n")
    report = apply(Settings(root_option=str(host), env={}), engine=None, user_data=path)  # type: ignore[arg-type]
    assert report is not None and not report.failed and report.warnings == []
    verify(Settings(root_option=str(host), env={}).trust.root)  # type: ignore[arg-type]


@pytest.mark.parametrize(("trust", "expected"), [
    ("mode: maybe", "osctl.trust.mode: 'maybe' is not one of 'enforce', 'off'"),
    ("metadata_url: ftp://x", "osctl.trust.metadata_url: 'ftp://x' is not an http(s) URL of a folder"),
    ("metadata_url: 'https://me:pw@releases.example/'", "osctl.trust.metadata_url: a metadata URL carries no "
                                                        "credentials"),
    ("root: 5", "osctl.trust.root: the trusted root is a path to root.json or the root document inline "
                "(a mapping), not a number"),
    ("root: [a, b]", "osctl.trust.root: the trusted root is a path to root.json or the root document inline "
                     "(a mapping), not a list"),
    ("root: true", "not a boolean"),
    ("root: ''", "osctl.trust.root: the trusted root is a path to root.json, or the root document inline; "
                 "not an empty string"),
    ("root: '{\"signed\": {}}'", "osctl.trust.root: this is a string, not a mapping"),
    ("root: {keys: {}}", "osctl.trust.root: an inline root is the root.json document itself"),
    ("root: {signed: {_type: targets}, signatures: []}", "an inline root is the root.json document itself"),
    ("roots: x", "osctl.trust.roots: unknown key (did you mean 'root'?)"),
])
def test_a_bad_trust_section_is_one_clear_error(trust: str, expected: str) -> None:
    data = parse_user_data(f"#cloud-config\nosctl:\n  trust:\n    {trust}\n".encode(), "user-data")
    assert len(data.issues) == 1, [i.render() for i in data.issues]
    assert data.issues[0].render().startswith("user-data:4:5: ") and expected in data.issues[0].render()
    with pytest.raises(UserDataError) as caught:
        data.raise_if_invalid("user-data")
    assert caught.value.exit_code == 2 and "\n" not in caught.value.message


def test_a_bad_trust_section_changes_nothing(tmp_path: Path, host: Path) -> None:
    path = user_data(tmp_path, "osctl:\n  image: 127.0.0.1:5000/osctl/os\n  trust: {mode: maybe}\n")
    with pytest.raises(UserDataError, match="osctl.trust.mode"):
        apply(Settings(root_option=str(host), env={}), engine=None, user_data=path)  # type: ignore[arg-type]
    assert not (host / "etc/osctl/config.yaml").exists()


def test_an_inline_root_python_tuf_cannot_read_fails_the_settings_step(tmp_path: Path, host: Path) -> None:
    """Shaped like a root, but not one (no roles): refused before config.yaml is written."""
    document = json.loads(HandRepo().root_bytes)
    del document["signed"]["roles"]
    path = user_data(tmp_path, f"osctl:\n  image: 127.0.0.1:5000/osctl/os\n  trust:\n    root: {json.dumps(document)}\n")
    report = apply(Settings(root_option=str(host), env={}), engine=None, user_data=path)  # type: ignore[arg-type]
    assert report is not None
    [step] = report.failed
    assert step.name == "settings" and step.detail.startswith("osctl.trust.root: not valid TUF root metadata")
    assert not (host / "etc/osctl/config.yaml").exists()


def test_validate_accepts_the_trust_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from osctl.cli.main import main

    path = user_data(tmp_path, f"osctl:\n  trust:\n    root: {HandRepo().root_bytes.decode()}\n    mode: enforce\n")
    assert main(["cloud-init", "validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"
