"""Hostile documents: manifests, settings and user data that try to exhaust or fool the parser.

Each is refused in one line with exit 2 (invalid input), run as a user runs osctl (a process)
under a 1 GiB address-space limit, so that a regression fails fast with MemoryError instead of
taking the machine with it. The last test builds images (tests/support/hostile_images.py): the
same bytes are the same refusal from a file and from an image.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from osctl.domain.manifest import parse_manifest
from osctl.domain.userdata import parse_user_data
from osctl.errors import ManifestError
from tests.support.hostile_images import GOOD_MANIFEST, os_image
from tests.support.hosts import Host

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/osctl-test.sock"}
MEMORY_LIMIT = 1 << 30


def alias_bomb(levels: int = 6) -> str:
    """One anchored 1 MB scalar and ``levels`` levels of ten aliases: under 1 MiB of text, about
    10^(levels + 6) bytes once expanded (a terabyte at six levels)."""
    lines = [f"big: &a0 {'x' * 1_000_000}"]
    lines += [f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def osctl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "osctl", "--root", str(root), *args], capture_output=True,
                          text=True, env={**os.environ, **NO_ENGINE}, timeout=120, stdin=subprocess.DEVNULL,
                          preexec_fn=_limited)


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one error line of a refusal with exit 2 (a hint may follow), which must contain ``words``."""
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("hint: ")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# -- memory bombs ---------------------------------------------------------------------------------

def test_alias_bomb_of_big_scalars_in_a_manifest_is_refused_quickly(tmp_path: Path) -> None:
    text = alias_bomb() + GOOD_MANIFEST
    assert len(text.encode()) < 1 << 20
    started = time.monotonic()
    proc = osctl(tmp_path, "image", "validate", str(write(tmp_path / "release.yaml", text)))
    refused(proc, "YAML aliases expand to more than 8 MiB")
    assert time.monotonic() - started < 30


def test_alias_bomb_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "etc/osctl/config.yaml", alias_bomb())
    refused(osctl(tmp_path, "status"), "invalid settings", "YAML aliases expand to more than 8 MiB")


def test_alias_bomb_in_user_data_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path / "user-data", "#cloud-config\n" + alias_bomb())
    refused(osctl(tmp_path, "cloud-init", "show", "--user-data", str(file)), "YAML aliases expand to more than 8 MiB")


def test_a_shared_anchor_that_expands_little_is_still_fine(tmp_path: Path) -> None:
    """The control: aliases are allowed; only their expanded size is bounded."""
    text = GOOD_MANIFEST.replace("  a: {command: [sleep, '9']}\n",
                                 "  a: {command: &cmd [sleep, '9']}\n  b: {command: *cmd}\n")
    proc = osctl(tmp_path, "image", "validate", str(write(tmp_path / "release.yaml", text)))
    assert proc.returncode == 0, proc.stderr


# -- types and names ------------------------------------------------------------------------------

TAGGED = [
    ("version: v1.4", "version: !!binary djEuNA==", "1:10: version: the YAML tag !!binary is not allowed"),
    ("command: [sleep, '9']", "command: !!set {sleep: null, '9': null}", "services.a.command: the YAML tag !!set"),
    ("command: [sleep, '9']", "command: !!omap [sleep: 1]", "services.a.command: the YAML tag !!omap"),
    ("command: [sleep, '9']", "command: !cmd sleep", "services.a.command: the YAML tag !cmd"),
    ("kernel: /boot/vmlinuz", "kernel: !!python/object:os.system x", "boot.kernel: the YAML tag !!python/object"),
]


@pytest.mark.parametrize(("old", "new", "words"), TAGGED,
                         ids=["binary-version", "set-command", "omap-command", "local-tag", "python-tag"])
def test_non_plain_tags_are_refused_in_a_manifest(old: str, new: str, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(GOOD_MANIFEST.replace(old, new), "release.yaml")
    assert words in caught.value.message


def test_non_plain_tag_is_one_line_from_the_cli(tmp_path: Path) -> None:
    old, new, words = TAGGED[1]
    text = GOOD_MANIFEST.replace(old, new)
    refused(osctl(tmp_path, "image", "validate", str(write(tmp_path / "release.yaml", text))), words)


def test_binary_is_no_string_in_user_data(tmp_path: Path) -> None:
    file = write(tmp_path / "user-data", "#cloud-config\nosctl:\n  version: !!binary djEuNA==\n")
    refused(osctl(tmp_path, "cloud-init", "show", "--user-data", str(file)), "osctl.version: input should be a valid string")


BAD_NAMES = ['"A B"', '"A\\nB"', '"1A"', '"A=B"', '""', '"A-B"', '"A\\0"']


@pytest.mark.parametrize("name", BAD_NAMES)
def test_environment_names_outside_posix_are_refused(name: str) -> None:
    manifest = GOOD_MANIFEST.replace("command: [sleep, '9']", f"command: [sleep, '9'], environment: {{{name}: x}}")
    with pytest.raises(ManifestError) as caught:
        parse_manifest(manifest, "release.yaml")
    assert "services.a.environment: " in caught.value.message
    assert "is not an environment variable name" in caught.value.message
    user_data = parse_user_data(f"#cloud-config\nosctl:\n  services:\n    extra:\n      environment: {{{name}: x}}\n"
                                .encode(), "user-data")
    assert [i.path for i in user_data.issues] == ["osctl.services.extra.environment"]
    assert "is not an environment variable name" in user_data.issues[0].message


def test_environment_name_with_a_space_is_one_line_from_the_cli(tmp_path: Path) -> None:
    file = write(tmp_path / "user-data", '#cloud-config\nosctl:\n  services:\n    extra:\n      environment: {"A B": x}\n')
    refused(osctl(tmp_path, "cloud-init", "show", "--user-data", str(file)),
            "osctl.services.extra.environment:", "'A B' is not an environment variable name")


# -- the same input, the same code ----------------------------------------------------------------

@pytest.mark.parametrize("content", [GOOD_MANIFEST.encode().replace(b"v1.4\n", b"v1.4\xff\n", 1),
                                     (alias_bomb(4) + GOOD_MANIFEST).encode()],
                         ids=["not-utf8", "alias-bomb"])
def test_a_manifest_is_refused_alike_from_a_file_and_from_an_image(
    host: Host, docker_client: docker.DockerClient, tmp_path: Path, content: bytes
) -> None:
    from_file = refused(osctl(tmp_path, "image", "validate", str(write(tmp_path / "release.yaml", content))))
    with os_image(docker_client, content) as ref:
        from_image = refused(host.osctl("image", "validate", ref, "--no-pull"))
    assert from_file.split("release.yaml", 1)[1] == from_image.split("release.yaml", 1)[1]
