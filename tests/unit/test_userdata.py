"""User data: formats as cloud-init recognises them, refusals, merging, located issues, redaction
and the ``osctl cloud-init`` commands."""

from __future__ import annotations

import base64
import gzip
import json
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from osctl.cli.main import main
from osctl.domain.userdata import (
    MAX_USER_DATA_BYTES,
    UserData,
    UserDataError,
    effective_config,
    merge,
    parse_user_data,
    validate,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "user-data"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMuQ2Cz2ZPZ+b5qv0rE7CZbb6sW7v8o9mJ8cB1P8sQ2f me@example"


def parse(text: str | bytes, *, strict: bool = False) -> UserData:
    raw = text.encode() if isinstance(text, str) else text
    return parse_user_data(raw, "user-data", strict=strict)


def rendered(issues: list) -> list[str]:  # type: ignore[type-arg]
    return [issue.render() for issue in issues]


def mime(*parts: MIMEText | MIMEApplication) -> bytes:
    message = MIMEMultipart()
    for part in parts:
        message.attach(part)
    return message.as_bytes()


def cloud_config_part(text: str, *, subtype: str = "cloud-config", filename: str | None = None) -> MIMEText:
    part = MIMEText(text, subtype)
    if filename:
        part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


# -- formats ---------------------------------------------------------------------------------


def test_cloud_config_is_parsed_into_plain_values() -> None:
    data = parse("#cloud-config\nhostname: edge-01\nruncmd:\n  - [echo, hi]\n  - echo there\n")
    assert data.valid and data.warnings == []
    assert data.config == {"hostname": "edge-01", "runcmd": [["echo", "hi"], "echo there"]}
    assert data.parts == ["text/cloud-config"] and data.scripts == []


@pytest.mark.parametrize("header", ["#cloud-config", "#Cloud-Config", "  \n#cloud-config # comment"])
def test_header_is_found_like_cloud_init_does(header: str) -> None:
    data = parse(f"{header}\nhostname: a\n")
    assert data.valid and data.config == {"hostname": "a"}


@pytest.mark.parametrize("text", ["", "   \n\n", "#cloud-config\n", "#cloud-config\n# only a comment\n"])
def test_empty_user_data_means_nothing_to_do(text: str) -> None:
    data = parse(text)
    assert data.valid and data.warnings == [] and data.config == {} and data.scripts == []


def test_a_script_is_kept_in_full_and_named_by_part() -> None:
    data = parse("#!/bin/sh\necho hello > /var/log/hello\n")
    assert data.valid and data.parts == ["text/x-shellscript"]
    assert [(s.name, s.content, s.size) for s in data.scripts] == [
        ("part-1", b"#!/bin/sh\necho hello > /var/log/hello\n", 38)]


def test_mime_multipart_with_cloud_config_and_script() -> None:
    raw = mime(cloud_config_part("#cloud-config\nhostname: a\n"),
               cloud_config_part("#!/bin/sh\necho 1\n", subtype="x-shellscript", filename="../etc/first boot.sh"))
    data = parse(raw)
    assert data.valid, rendered(data.issues)
    assert data.parts == ["text/cloud-config", "text/x-shellscript"]
    assert data.config == {"hostname": "a"}
    assert [s.name for s in data.scripts] == [".._etc_firstboot.sh"]  # '/' -> '_', then [A-Za-z0-9_.()-] only


def test_text_plain_parts_are_typed_by_their_first_line() -> None:
    raw = mime(cloud_config_part("#cloud-config\nhostname: a\n", subtype="plain"),
               cloud_config_part("#!/bin/sh\ntrue\n", subtype="plain"))
    data = parse(raw)
    assert data.parts == ["text/cloud-config", "text/x-shellscript"] and data.valid
    assert [s.name for s in data.scripts] == ["part-2"]


def test_gzip_user_data_is_decompressed() -> None:
    data = parse(gzip.compress(b"#cloud-config\nhostname: zipped\n"))
    assert data.valid and data.config == {"hostname": "zipped"}


def test_gzip_part_inside_mime_is_decompressed_and_sniffed() -> None:
    raw = mime(MIMEApplication(gzip.compress(b"#cloud-config\ntimezone: UTC\n"), "gzip"),
               MIMEApplication(gzip.compress(b"#!/bin/sh\ntrue\n"), "x-gzip"))
    data = parse(raw)
    assert data.valid and data.config == {"timezone": "UTC"}
    assert data.parts == ["text/cloud-config", "text/x-shellscript"]


def test_base64_transfer_encoding_is_decoded() -> None:
    part = MIMEText("#cloud-config\nhostname: b64\n", "cloud-config", "utf-8")  # utf-8 text: base64 encoded
    assert part["Content-Transfer-Encoding"] == "base64"
    data = parse(mime(part))
    assert data.valid and data.config == {"hostname": "b64"}


def test_whole_gzip_of_mime_document() -> None:
    raw = gzip.compress(mime(cloud_config_part("#cloud-config\nhostname: a\n")))
    assert parse(raw).config == {"hostname": "a"}


def test_gzip_bomb_is_refused() -> None:
    data = parse(gzip.compress(b"#cloud-config\n" + b" " * MAX_USER_DATA_BYTES))
    assert rendered(data.issues) == ["user-data: larger than 16 MiB after gzip decompression"]


def test_corrupt_gzip_is_refused() -> None:
    data = parse(gzip.compress(b"#cloud-config\nhostname: a\n")[:-6])
    assert rendered(data.issues) == ["user-data: starts like gzip data but cannot be decompressed: the data is truncated"]


def test_yaml_alias_bomb_is_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}" if level > 1 else "*a"] * 10) + "]")
    data = parse("#cloud-config\n" + "\n".join(lines) + "\n")
    assert rendered(data.issues) == ["user-data: YAML aliases expand to more than 1000000 values"]


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "words"), [
    ("#include https://example.com/ud\n", "#include is not supported by osctl: it fetches user data from URLs"),
    ("#include-once\nhttps://example.com/ud\n", "#include-once is not supported by osctl"),
    ("#part-handler\ndef list_types(): pass\n", "#part-handler is not supported by osctl: it runs user-supplied Python"),
    ("#cloud-boothook\n#!/bin/sh\ntrue\n", "#cloud-boothook is not supported by osctl: use bootcmd"),
    ("## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n",
     "## template: jinja is not supported by osctl: osctl has no instance data"),
    ("#cloud-config-archive\n- type: text/cloud-config\n  content: 'a: 1'\n",
     "#cloud-config-archive is not supported by osctl: send the parts as MIME multi-part"),
    ("#cloud-config-jsonp\n[]\n", "#cloud-config-jsonp is not supported by osctl"),
    ("hostname: a\n", "user data must start with #cloud-config or #! (a script) "
                      "(a YAML document needs the #cloud-config line first)"),
    ("#cloud-conifg\nhostname: a\n", "user data must start with #cloud-config or #! (a script)"),
    ("\ufeff#cloud-config\nhostname: a\n", "(it starts with a UTF-8 byte order mark"),
    (b"\x00\x01\x02\xff\xfe garbage", "user data must start with #cloud-config or #! (a script) (it is binary data"),
])
def test_refused_formats_say_why(text: str | bytes, words: str) -> None:
    data = parse(text)
    assert len(data.issues) == 1 and words in data.issues[0].message, rendered(data.issues)
    assert data.config == {} and data.scripts == []


def test_refused_mime_part_names_the_part() -> None:
    raw = mime(cloud_config_part("#cloud-config\nhostname: a\n"),
               cloud_config_part("#include http://x/\n", subtype="x-include-url"),
               cloud_config_part("plain words\n", subtype="plain"))
    data = parse(raw)
    assert rendered(data.issues) == [
        "user-data[part 2]:1:1: #include is not supported by osctl: it fetches user data from URLs without any "
        "integrity check; put the content in the user data itself",
        "user-data[part 3]:1:1: this MIME part must start with #cloud-config or #! (a script) (a YAML document "
        "needs the #cloud-config line first); or give the part a content type such as text/cloud-config",
    ]


def test_unknown_mime_type_is_ignored_with_a_warning() -> None:
    data = parse(mime(MIMEApplication(b"{}", "json")))
    assert data.valid and rendered(data.warnings) == [
        "user-data[part 1]: content type application/json is not handled by osctl (part ignored)"]


def test_script_part_without_interpreter_line_is_an_error() -> None:
    data = parse(mime(cloud_config_part("echo hi\n", subtype="x-shellscript")))
    assert rendered(data.issues) == [
        "user-data[part 1]:1:1: a script must start with #! (its interpreter) on its very first line"]


# -- merging -------------------------------------------------------------------------------------


def test_merge_rule_maps_merge_lists_and_scalars_replace() -> None:
    first = {"hostname": "a", "runcmd": ["one"], "osctl": {"update": {"policy": "auto"}, "version": "v1.3"}}
    second = {"runcmd": ["two"], "osctl": {"version": "v1.4", "boot": {"tries": 2}}, "timezone": "UTC"}
    assert merge(first, second) == {
        "hostname": "a", "runcmd": ["two"], "timezone": "UTC",
        "osctl": {"update": {"policy": "auto"}, "version": "v1.4", "boot": {"tries": 2}},
    }
    assert merge({"a": {"b": 1}}, {"a": [1]}) == {"a": [1]}  # a different type replaces
    assert merge({"a": [1]}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_mime_parts_merge_in_order() -> None:
    raw = mime(
        cloud_config_part("#cloud-config\nruncmd: [one]\nosctl:\n  services:\n    a: {image: busybox, "
                          "restart: always}\n"),
        cloud_config_part("#cloud-config\nruncmd: [two]\nosctl:\n  services:\n    a: {privileged: true}\n"
                          "    b: {image: busybox}\n"),
    )
    data = parse(raw)
    assert data.valid, rendered(data.issues)
    assert data.config == {"runcmd": ["two"], "osctl": {"services": {
        "a": {"image": "busybox", "restart": "always", "privileged": True}, "b": {"image": "busybox"}}}}


def test_merged_config_is_validated_again_and_located_in_the_winning_part() -> None:
    raw = mime(
        cloud_config_part("#cloud-config\nosctl:\n  services:\n    job: {oneshot: true}\n"),
        cloud_config_part("#cloud-config\nhostname: a\nosctl:\n  services:\n    job: {restart: always}\n"),
    )
    data = parse(raw)
    assert rendered(data.issues) == ['user-data[part 2]:5:5: osctl.services.job: a oneshot service cannot use '
                                     'restart: always (use "no" or on-failure)']


def test_relations_of_the_merged_config() -> None:
    raw = mime(cloud_config_part("#cloud-config\nusers: [{name: ann}]\nwrite_files: [{path: /etc/a}]\n"),
               cloud_config_part("#cloud-config\nusers:\n  - name: bob\n  - name: bob\n"
                                 "write_files:\n  - path: /etc/a\n  - path: /etc/a\n    append: true\n"
                                 "  - path: /etc/a\n"))
    data = parse(raw)
    assert rendered(data.issues) == [
        "user-data[part 2]:4:5: users[1].name: user 'bob' is declared twice (first as users[0])"]
    assert rendered(data.warnings) == [
        "user-data[part 2]:9:5: write_files[2].path: /etc/a is also written by write_files[0]: this later "
        "entry replaces that content"]


def test_merge_type_header_is_not_honoured() -> None:
    part = cloud_config_part("#cloud-config\nruncmd: [b]\n")
    part["Merge-Type"] = "list(append)+dict(recurse_array)+str()"
    data = parse(mime(cloud_config_part("#cloud-config\nruncmd: [a]\n"), part))
    assert data.config == {"runcmd": ["b"]}
    assert "Merge-Type header is not supported by osctl (ignored)" in rendered(data.warnings)[0]


# -- located issues ------------------------------------------------------------------------------


def test_osctl_section_errors_carry_path_line_and_column() -> None:
    data = parse("#cloud-config\nosctl:\n  image: 127.0.0.1:5000/osctl/os\n  update:\n    policy: sometimes\n")
    assert rendered(data.issues) == [
        "user-data:5:5: osctl.update.policy: 'sometimes' is not one of 'manual', 'download-only', 'auto'"]
    assert (data.issues[0].line, data.issues[0].column, data.issues[0].path) == (5, 5, "osctl.update.policy")


def test_osctl_section_is_the_settings_schema() -> None:
    data = parse("#cloud-config\nosctl:\n  host_id: edge-01\n  version: v1.4\n  boot: {tries: 2, health_timeout: 90s}\n"
                 "  update: {policy: download-only, check_interval: 10m}\n")
    assert data.valid, rendered(data.issues)
    bad = parse("#cloud-config\nosctl:\n  image: 127.0.0.1:5000/osctl/os:v1.4\n  versoin: v1\n")
    assert rendered(bad.issues) == [
        "user-data:3:3: osctl.image: '127.0.0.1:5000/osctl/os:v1.4' is not an image repository "
        "(e.g. 127.0.0.1:5000/osctl/os, without a tag)",
        "user-data:4:3: osctl.versoin: unknown key (did you mean 'version'?)",
    ]


def test_typo_is_a_warning_with_did_you_mean_and_an_error_when_strict() -> None:
    text = "#cloud-config\nhostnme: a\nfrobnicate: 1\n"
    data = parse(text)
    assert data.valid
    assert rendered(data.warnings) == ["user-data:2:1: hostnme: unknown key (did you mean 'hostname'?)",
                                       "user-data:3:1: frobnicate: unknown key"]
    strict = parse(text, strict=True)
    assert rendered(strict.issues) == rendered(data.warnings) and strict.warnings == []
    assert validate(text.encode(), "user-data", strict=True) == (strict.issues, [])


def test_other_cloud_init_keys_are_ignored_with_a_warning() -> None:
    data = parse("#cloud-config\npackages: [vim]\nmounts: [[/dev/sdb, /data]]\nmerge_how: list(append)\n",
                 strict=True)
    assert data.valid
    assert rendered(data.warnings) == [
        "user-data:2:1: packages: not supported by osctl (ignored); osctl hosts are image-based: run software as "
        "a service under osctl.services",
        "user-data:3:1: mounts: not supported by osctl (ignored)",
        "user-data:4:1: merge_how: not supported by osctl (ignored); parts always merge as dict(replace)+list()+str()",
    ]


def test_users_fields_osctl_does_not_apply_are_warned_about() -> None:
    data = parse(f"#cloud-config\nusers:\n  - default\n  - name: ops\n    groups: wheel,adm\n    sudo: ALL=(ALL) ALL\n"
                 f"    lock_passwd: false\n    ssh_authorized_keys: ['{KEY}']\n")
    assert data.valid
    assert rendered(data.warnings) == ["user-data:6:5: users[1].sudo: not supported by osctl (ignored)",
                                       "user-data:7:5: users[1].lock_passwd: not supported by osctl (ignored)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("hostname: [1, 2]", "user-data:2:1: hostname: must be a string (a host name)"),
    ("hostname: 'bad host!'", "user-data:2:1: hostname: 'bad host!' is not a host name"),
    ("fqdn:", "user-data:2:1: fqdn: has no value (null): give one, or remove the key"),
    ("timezone: 'Europe/../etc'", "user-data:2:1: timezone: 'Europe/../etc' is not a time zone name"),
    ("runcmd: []", "user-data:2:1: runcmd: list should have at least 1 item after validation, not 0"),
    ("bootcmd: [[echo, '1']]\nruncmd: [{a: 1}]", "user-data:3:10: runcmd[0]: a command is a string (run by sh)"),
    ("ssh_authorized_keys: []", "user-data:2:1: ssh_authorized_keys: list should have at least 1 item"),
    ("ntp: {servers: 5}", "user-data:2:7: ntp.servers: input should be a valid list"),
    ("ntp: {servers: [a.example, a.example]}", "user-data:2:7: ntp.servers: 'a.example' is listed twice"),
    ("ntp: {peers: [a]}", "user-data:2:7: ntp.peers: a cloud-init key that osctl does not support (remove it)"),
    ("ntp: {enabled: 1}", "user-data:2:7: ntp.enabled: input should be a valid boolean"),
    ("users: [{groups: 1}]", "user-data:2:10: users[0].groups: must be a string 'group1,group2' or a non-empty list"),
    ("users: [{shell: /bin/sh}]", "user-data:2:9: users[0].name: required key is missing"),
    ("users: [bob]", "user-data:2:9: users[0]: a user is an object such as {name: 'bob'}"),
    ("users: [{name: a, expiredate: '2030-01-01'}]",
     "user-data:2:19: users[0].expiredate: a cloud-init key that osctl does not support"),
    ("users: [{name: a, lock-passwd: true}]",  # cloud-init's deprecated spelling
     "user-data:2:19: users[0].lock-passwd: unknown key (did you mean 'lock_passwd'?)"),
])
def test_standard_keys_are_validated(text: str, expected: str) -> None:
    data = parse(f"#cloud-config\n{text}\n")
    assert any(line.startswith(expected) for line in rendered(data.issues)), rendered(data.issues)


def test_yaml_syntax_error_is_located_and_duplicate_values_are_not_quoted() -> None:
    data = parse("#cloud-config\nhostname: [unclosed\n")
    assert data.issues[0].render().startswith("user-data:3:1: not valid YAML")
    dup = parse("#cloud-config\nusers:\n  - name: a\n    passwd: hunter2\n    passwd: swordfish\n")
    assert rendered(dup.issues) == ['user-data:5:5: not valid YAML: found duplicate key "passwd"']


def test_top_level_must_be_a_mapping() -> None:
    data = parse("#cloud-config\n- a\n- b\n")
    assert rendered(data.issues) == ["user-data:1:1: must be a mapping of keys, but it is a list"]


# -- write_files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "expected"), [
    ("{content: x}", "write_files[0].path: required key is missing"),
    ("{path: etc/motd}", "write_files[0].path: must be an absolute path (starting with /)"),
    ("{path: /etc/../shadow}", "write_files[0].path: must be the absolute path of a file, without '..'"),
    ("{path: /etc/}", "write_files[0].path: must be the absolute path of a file"),
    ("{path: /a, encoding: rot13}", "write_files[0].encoding: 'rot13' is not one of 'text/plain', 'b64'"),
    ("{path: /a, permissions: 0644}", "write_files[0].permissions: must be a quoted octal string such as '0644'"),
    ("{path: /a, permissions: '0999'}", "write_files[0].permissions: '0999' is not an octal mode"),
    ("{path: /a, permissions: rw-r--r--}", "write_files[0].permissions: 'rw-r--r--' is not an octal mode"),
    ("{path: /a, owner: 'root:root:x'}", "write_files[0].owner: must be 'user:group'"),
    ("{path: /a, append: 1}", "write_files[0].append: input should be a valid boolean"),
    ("{path: /a, defer: yes}", "write_files[0].defer: 'yes' is a string in YAML 1.2, which osctl reads: write true"),
    ("{path: /a, encoding: b64, content: 'not base64!'}", "write_files[0]: content is not valid base64"),
    ("{path: /a, encoding: gz+b64, content: aGVsbG8=}", "write_files[0]: content is base64 but not of gzip data"),
    ("{path: /a, encoding: gzip, content: x}", "write_files[0]: with encoding gzip, content must be gzip data"),
    ("{path: /a, source: {uri: 'https://x/'}}", "write_files[0].source: not supported by osctl"),
    ("{path: /a, mode: '0644'}", "write_files[0].mode: unknown key"),
])
def test_write_files_entries_are_checked(entry: str, expected: str) -> None:
    data = parse(f"#cloud-config\nwrite_files:\n  - {entry}\n")
    assert any(expected in line for line in rendered(data.issues)), rendered(data.issues)
    assert not any("not base64!" in line for line in rendered(data.issues))  # content is never quoted


def test_write_files_accepts_cloud_init_spellings() -> None:
    packed = base64.b64encode(gzip.compress(b"hello\n")).decode()
    entries = [f"{{path: /a{i}, encoding: {enc}, content: {content}}}" for i, (enc, content) in enumerate([
        ("b64", "aGVsbG8K"), ("base64", "aGVsbG8K"), ("gz+b64", packed), ("gzip+base64", packed),
        ("gz+base64", packed), ("gzip+b64", packed), ("text/plain", "hi")])]
    entries += ["{path: /b, permissions: '0o600', owner: 'nobody:nogroup', append: true, defer: false}",
                "{path: /c, permissions: '600', owner: '1000'}",
                f"{{path: /d, encoding: gzip, content: !!binary {base64.b64encode(gzip.compress(b'x')).decode()}}}"]
    data = parse("#cloud-config\nwrite_files:\n" + "".join(f"  - {e}\n" for e in entries))
    assert data.valid, rendered(data.issues)


# -- effective configuration -------------------------------------------------------------------------


def test_effective_config_redacts_secrets_and_file_contents() -> None:
    data = parse("#cloud-config\nusers:\n  - name: ops\n    passwd: $6$salt$hash\n    plain_text_passwd: hunter2\n"
                 "    lock_passwd: false\nchpasswd: {list: 'root:pw'}\nssh_keys: {rsa_private: KEY}\n"
                 "osctl:\n  services:\n    app:\n      environment: {DB_PASSWORD: pw, API_TOKEN: t, MODE: prod}\n"
                 "write_files:\n  - path: /etc/app.conf\n    content: 'secret=1'\n")
    shown = effective_config(data)
    assert shown["users"] == [{"name": "ops", "passwd": "<redacted>", "plain_text_passwd": "<redacted>",
                               "lock_passwd": False}]
    assert shown["chpasswd"] == "<redacted>" and shown["ssh_keys"] == {"rsa_private": "<redacted>"}
    assert shown["osctl"]["services"]["app"]["environment"] == {
        "DB_PASSWORD": "<redacted>", "API_TOKEN": "<redacted>", "MODE": "prod"}
    assert shown["write_files"] == [{"path": "/etc/app.conf", "content": "<redacted: 8 bytes>"}]
    text = json.dumps(shown)
    for secret in ("hunter2", "$6$salt", "root:pw", "KEY\"", "secret=1", '"pw"'):
        assert secret not in text
    assert data.config["users"][0]["plain_text_passwd"] == "hunter2"  # the data itself is untouched


def test_invalid_user_data_raises_all_issues_for_appliers() -> None:
    data = parse("#cloud-config\nhostname: [a]\nruncmd: []\n")
    with pytest.raises(UserDataError) as caught:
        data.raise_if_invalid("user-data")
    assert caught.value.message.startswith("invalid user data: user-data:2:1: hostname:")
    assert "(and 1 more)" in caught.value.message and caught.value.exit_code == 2


# -- the CLI -------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_validate_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good, warned, bad = tmp_path / "good.yaml", tmp_path / "warned.yaml", tmp_path / "bad.yaml"
    good.write_text("#cloud-config\nhostname: a\n")
    warned.write_text("#cloud-config\nhostnme: a\n")
    bad.write_text("#cloud-config\nosctl:\n  update: {policy: sometimes}\n")
    assert run(capsys, "cloud-init", "validate", str(good)) == (0, f"{good}: valid\n", "")
    code, out, _ = run(capsys, "cloud-init", "validate", str(warned))
    assert code == 2 and out == (f"{warned}:2:1: hostnme: unknown key (did you mean 'hostname'?)\n"
                                 f"{warned}: 1 warning\n")
    assert run(capsys, "cloud-init", "validate", "--strict", str(warned))[0] == 1
    code, out, _ = run(capsys, "cloud-init", "validate", str(bad))
    assert code == 1 and out.startswith(f"{bad}:3:12: osctl.update.policy: 'sometimes' is not one of")


def test_cli_validate_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "ud.yaml"
    path.write_text("#cloud-config\nhostnme: a\nruncmd: []\n")
    code, out, err = run(capsys, "cloud-init", "validate", str(path), "--json")
    assert code == 1 and err == ""
    assert json.loads(out) == {
        "valid": False,
        "errors": [{"source": str(path), "path": "runcmd", "line": 3, "column": 1, "severity": "error",
                    "message": "list should have at least 1 item after validation, not 0"}],
        "warnings": [{"source": str(path), "path": "hostnme", "line": 2, "column": 1, "severity": "warning",
                      "message": "unknown key (did you mean 'hostname'?)"}],
    }
    code, out, _ = run(capsys, "--json", "cloud-init", "validate", str(EXAMPLES / "pinned-version.yaml"))
    assert code == 0 and json.loads(out) == {"valid": True, "errors": [], "warnings": []}


@pytest.mark.parametrize("target", ["missing.yaml", "."])
def test_cli_validate_unreadable_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  target: str) -> None:
    code, out, err = run(capsys, "cloud-init", "validate", str(tmp_path / target))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_cli_validate_mime_issue_names_the_part(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "ud.mime"
    path.write_bytes(mime(cloud_config_part("#cloud-config\nhostname: a\n"),
                          cloud_config_part("#cloud-config\n\nntp: {servers: 5}\n")))
    code, out, _ = run(capsys, "cloud-init", "validate", str(path))
    assert code == 1 and out.splitlines()[0] == f"{path}[part 2]:3:7: ntp.servers: input should be a valid list"


def test_cli_show_prints_redacted_config_and_script_sizes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "ud.mime"
    path.write_bytes(mime(cloud_config_part("#cloud-config\nhostname: a\nusers: [{name: ops, passwd: hunter2}]\n"
                                            "write_files: [{path: /etc/x, content: topsecret}]\n"),
                          cloud_config_part("#!/bin/sh\necho topsecret\n", subtype="x-shellscript",
                                            filename="setup.sh")))
    code, out, err = run(capsys, "cloud-init", "show", "--user-data", str(path))
    assert code == 0 and "hunter2" not in out + err and "topsecret" not in out + err
    assert out.startswith("#cloud-config\n") and "hostname: a\n" in out and "passwd: <redacted>" in out
    assert "#   setup.sh (25 bytes)" in out and "users[0].passwd: not supported by osctl" in err
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    assert run(capsys, "cloud-init", "validate", str(shown))[0] == 2  # what show prints validates again
    code, out, _ = run(capsys, "cloud-init", "show", "--user-data", str(path), "--json")
    data = json.loads(out)
    assert code == 0 and data["scripts"] == [{"name": "setup.sh", "size": 25}]
    assert data["config"]["write_files"] == [{"path": "/etc/x", "content": "<redacted: 9 bytes>"}]
    assert data["parts"] == ["text/cloud-config", "text/x-shellscript"]


def test_cli_show_refuses_invalid_user_data_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "ud.yaml"
    path.write_text("#cloud-config\nusers: [{name: ops, passwd: hunter2, groups: 5}]\n")
    code, out, err = run(capsys, "cloud-init", "show", "--user-data", str(path))
    assert code == 2 and out == "" and "hunter2" not in err
    assert err.startswith(f"error: invalid user data: {path}:2:38: users[0].groups:")


# -- the shipped examples ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "errors", "warnings"), [
    ("pinned-version.yaml", [], []),
    ("extra-service.yaml", [], []),
    ("multi-part.txt", [], []),
    ("invalid.yaml", ["7:3: osctl.verison: unknown key (did you mean 'version'?)",
                      "9:5: osctl.update.policy: 'sometimes' is not one of 'manual', 'download-only', 'auto'",
                      "11:5: write_files[0].path: must be an absolute path (starting with /)"], []),
])
def test_examples_validate_as_intended(name: str, errors: list[str], warnings: list[str]) -> None:
    data = parse_user_data((EXAMPLES / name).read_bytes(), name)
    assert rendered(data.issues) == [f"{name}:{e}" for e in errors]
    assert rendered(data.warnings) == [f"{name}:{w}" for w in warnings]


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir()) == [
        "extra-service.yaml", "invalid.yaml", "multi-part.txt", "pinned-version.yaml"]


def test_example_contents() -> None:
    pinned = parse_user_data((EXAMPLES / "pinned-version.yaml").read_bytes(), "p").config
    assert pinned["osctl"] == {"image": "127.0.0.1:5000/osctl/os", "version": "v1.4", "update": {"policy": "manual"}}
    assert pinned["hostname"] and pinned["users"][0]["ssh_authorized_keys"]
    service = parse_user_data((EXAMPLES / "extra-service.yaml").read_bytes(), "e").config
    exporter = service["osctl"]["services"]["node-exporter"]
    assert exporter["image"] == "127.0.0.1:5000/osctl/node-exporter:1.0" and exporter["network_mode"] == "bridge"
    assert "http://127.0.0.1:9100/metrics" in exporter["healthcheck"]["test"]
    assert service["ntp"]["servers"] == ["127.0.0.1"]
    multi = parse_user_data((EXAMPLES / "multi-part.txt").read_bytes(), "m")
    assert multi.parts == ["text/cloud-config", "text/x-shellscript"]
    assert multi.config["write_files"][0]["path"] == "/etc/motd"
    assert b"/var/log/" in multi.scripts[0].content
