"""osctl is at least as strict as cloud-init on the keys it applies: each document that Debian's
``cloud-init schema`` rejects is rejected by osctl too, at the same key.

Runs only where cloud-init is installed (``apt-get install -y cloud-init``); CI does not install
it, and this module is then skipped as a whole.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from osctl.domain.userdata import validate

CLOUD_INIT = Path("/usr/bin/cloud-init")

pytestmark = pytest.mark.skipif(
    not CLOUD_INIT.exists(), reason="cloud-init is not installed (apt-get install -y cloud-init to run this check)")

# (document body after "#cloud-config", the key path cloud-init reports the error at)
INVALID = [
    ("hostname: [1, 2]", "hostname"),
    ("hostname: 123", "hostname"),
    ("fqdn: {a: 1}", "fqdn"),
    ("timezone: 5", "timezone"),
    ("timezone: [UTC]", "timezone"),
    ("runcmd: []", "runcmd"),
    ("runcmd: echo hi", "runcmd"),
    ("runcmd: [[echo, 1]]", "runcmd.0"),
    ("runcmd: [{a: 1}]", "runcmd.0"),
    ("bootcmd: []", "bootcmd"),
    ("bootcmd: [null]", "bootcmd.0"),
    ("ssh_authorized_keys: []", "ssh_authorized_keys"),
    ("ssh_authorized_keys: ssh-ed25519 AAAA", "ssh_authorized_keys"),
    ("ssh_authorized_keys: [1]", "ssh_authorized_keys.0"),
    ("write_files: []", "write_files"),
    ("write_files: [{content: x}]", "write_files.0"),
    ("write_files: [{path: 5}]", "write_files.0.path"),
    ("write_files: [{path: /a, content: 5}]", "write_files.0.content"),
    ("write_files: [{path: /a, permissions: 0644}]", "write_files.0.permissions"),
    ("write_files: [{path: /a, encoding: rot13}]", "write_files.0.encoding"),
    ("write_files: [{path: /a, owner: 5}]", "write_files.0.owner"),
    ("write_files: [{path: /a, append: maybe}]", "write_files.0.append"),
    ("write_files: [{path: /a, defer: 1}]", "write_files.0.defer"),
    ("write_files: [{path: /a, mode: '0644'}]", "write_files.0"),
    ("ntp: [a]", "ntp"),
    ("ntp: {servers: 5}", "ntp.servers"),
    ("ntp: {servers: [a, a]}", "ntp.servers"),
    ("ntp: {pools: [1]}", "ntp.pools.0"),
    ("ntp: {enabled: maybe}", "ntp.enabled"),
    ("ntp: {enabled: 'yes'}", "ntp.enabled"),  # quoted: a string to cloud-init too
    ("ntp: {severs: [a]}", "ntp"),
    ("users: 5", "users"),
    ("users: []", "users"),
    ("users: [{groups: 1}]", "users.0"),
    ("users: [{name: 5}]", "users.0"),
    ("users: [{name: a, groups: []}]", "users.0"),
    ("users: [{name: a, shell: 5}]", "users.0"),
    ("users: [{name: a, lock_passwd: maybe}]", "users.0"),
    ("users: [{name: a, ssh_authorized_keys: []}]", "users.0"),
    ("users: [{name: a, ssh_authorized_keys: [1]}]", "users.0"),
    ("users: [{name: a, uid: [1]}]", "users.0"),
    ("users: [{name: a, bogus: 1}]", "users.0"),
]

# Ordinary documents both accept: osctl's extra strictness must not reach everyday input.
VALID = [
    "hostname: edge-01\nfqdn: edge-01.example.com",
    "timezone: Europe/Berlin",
    "runcmd: [ls, [echo, hi]]\nbootcmd: [echo boot]",
    "ssh_authorized_keys: [ssh-ed25519 AAAAC3Nz me@example]",
    "users:\n  - default\n  - name: ops\n    groups: wheel,adm\n    shell: /bin/sh\n"
    "    ssh_authorized_keys: [ssh-ed25519 AAAAC3Nz me@example]\n    lock_passwd: true",
    "write_files:\n  - path: /etc/motd\n    content: hi\n    permissions: '0644'\n    owner: root:root\n"
    "  - path: /etc/x\n    encoding: b64\n    content: aGkK\n    append: true\n    defer: false",
    "ntp:\n  enabled: true\n  servers: [127.0.0.1, ntp.example.com]\n  pools: [pool.ntp.org]",
    "ntp: null",
]

ERRORS = re.compile(r"schema errors: (.*)", re.S)


def cloud_init_schema(body: str) -> tuple[int, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(f"#cloud-config\n{body}\n")
        handle.flush()
        done = subprocess.run([str(CLOUD_INIT), "schema", "--config-file", handle.name],
                              capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def verdicts() -> dict[str, tuple[int, str]]:
    """cloud-init's verdict on every document, run in parallel (each run takes a third of a second)."""
    bodies = [body for body, _ in INVALID] + VALID
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(bodies, pool.map(cloud_init_schema, bodies), strict=True))


def osctl_error_paths(body: str) -> list[str]:
    errors, _ = validate(f"#cloud-config\n{body}\n".encode(), "user-data")
    return [re.sub(r"\[(\d+)\]", r".\1", issue.path) for issue in errors]


def same_place(ours: str, theirs: str) -> bool:
    """The same key, or one inside the other (cloud-init stops at the object when a oneOf fails)."""
    return ours == theirs or ours.startswith(theirs + ".") or theirs.startswith(ours + ".")


def test_osctl_rejects_what_cloud_init_rejects_at_the_same_key(verdicts: dict[str, tuple[int, str]]) -> None:
    disagreements = []
    for body, path in INVALID:
        code, output = verdicts[body]
        found = ERRORS.search(output)
        if code == 0 or not found or f"{path}: " not in found.group(1):
            disagreements.append(f"{body!r}: cloud-init did not report {path} (exit {code}: {output.strip()})")
            continue
        ours = osctl_error_paths(body)
        if not any(same_place(p, path) for p in ours):
            disagreements.append(f"{body!r}: cloud-init reports {path}, osctl reports {ours or 'no error'}")
    assert disagreements == []


def test_everyday_documents_are_valid_in_both(verdicts: dict[str, tuple[int, str]]) -> None:
    disagreements = []
    for body in VALID:
        code, output = verdicts[body]
        ours = osctl_error_paths(body)
        if code != 0 or ours:
            disagreements.append(f"{body!r}: cloud-init exit {code} ({output.strip()}), osctl errors {ours}")
    assert disagreements == []
