"""``osctl release`` against the real registry: the metadata lands in ``<image>-tuf`` as OCI
artifacts that python-tuf's client verifies, ``--out`` writes the same files as a plain folder,
and every refusal is one line with nothing published.

Each test signs its own copy of shipped versions (``osctl-test/rel-<random>``), so tests never
share metadata; both repositories are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface, Updater

from osctl.adapters import ociartifact
from osctl.adapters.registry import Registry
from osctl.errors import NotFoundError
from tests.support import registry_tools
from tests.support.hosts import registry_tags



@dataclass
class Publisher:
    """A publisher's machine: a keys folder, an --out folder, an OS image repository of its own."""

    image: str
    root: Path
    keys: Path
    out: Path

    def osctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSCTL_")}
        env.update(OSCTL_ROOT=str(self.root), OSCTL_IMAGE=self.image, OSCTL_RELEASE_KEYS=str(self.keys))
        return subprocess.run([sys.executable, "-m", "osctl", "release", *args], capture_output=True, text=True,
                              env=env, timeout=60, stdin=subprocess.DEVNULL, check=False)

    def ok(self, *args: str) -> str:
        proc = self.osctl(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    @property
    def tuf_repo(self) -> Registry:
        return Registry(f"{self.image}-tuf")

    def published(self, name: str) -> bytes:
        return ociartifact.get_file(self.tuf_repo, name, 1 << 20)


@pytest.fixture
def publisher(registry: str, tmp_path: Path) -> Iterator[Publisher]:
    repo = f"osctl-test/rel-{uuid.uuid4().hex[:10]}"
    for version in ("v1.3", "v1.4"):
        registry_tools.copy_tags(registry, "osctl/os", version, repo, [version])
    (tmp_path / "root").mkdir()
    yield Publisher(f"{registry}/{repo}", tmp_path / "root", tmp_path / "keys", tmp_path / "out")
    registry_tools.delete_repository(registry, repo)
    registry_tools.delete_repository(registry, f"{repo}-tuf")


class ArtifactFetcher(FetcherInterface):
    """What a host does: each metadata file name is a tag in ``<image>-tuf``."""

    def __init__(self, repo: Registry) -> None:
        self.repo = repo

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            return iter([ociartifact.get_file(self.repo, url.rsplit("/", 1)[-1], 1 << 20)])
        except NotFoundError:
            raise DownloadHTTPError("not found", 404) from None


def host_client(tmp_path: Path, publisher: Publisher, root: bytes) -> Updater:
    cache = tmp_path / "host-tuf"
    cache.mkdir(exist_ok=True)
    trusted = cache / "root.json"
    return Updater(str(cache), "http://registry.invalid/", fetcher=ArtifactFetcher(publisher.tuf_repo),
                   bootstrap=trusted.read_bytes() if trusted.exists() else root)


def test_signed_versions_are_published_beside_the_images_and_verify(tmp_path: Path, publisher: Publisher,
                                                                    registry: str) -> None:
    out = publisher.ok("init", "--root-keys", "3", "--root-threshold", "2", "--out", str(publisher.out))
    assert "2 of 3 root key(s)" in out and f"hosts trust {publisher.keys / 'root.json'}" in out
    out = publisher.ok("sign", "v1.3", "v1.4", "--min-version", "v1.4", "--reason", "v1.3 is vulnerable",
                       "--out", str(publisher.out))
    body, digest = registry_tools.get_manifest(registry, publisher.image.split("/", 1)[1], "v1.4")
    assert f"signed v1.4 {digest[:19]} ({len(body)} bytes)" in out
    assert "minimum version v1.4: every older version is revoked (v1.3 is vulnerable)" in out
    assert f"published 1.root.json, 2.targets.json, 2.snapshot.json, timestamp.json to {publisher.image}-tuf" in out

    tags = set(registry_tags(f"{publisher.image}-tuf"))
    assert {"1.root.json", "1.targets.json", "2.targets.json", "1.snapshot.json", "2.snapshot.json",
            "timestamp.json"} <= tags
    plain = sorted(p.name for p in publisher.out.iterdir())
    assert plain == ["1.root.json", "1.snapshot.json", "1.targets.json", "2.snapshot.json", "2.targets.json",
                     "timestamp.json"]
    for name in plain:
        assert publisher.published(name) == (publisher.out / name).read_bytes(), name

    updater = host_client(tmp_path, publisher, (publisher.keys / "root.json").read_bytes())
    updater.refresh()
    info = updater.get_targetinfo("v1.4")
    assert info is not None and info.length == len(body) and info.hashes == {"sha256": digest.removeprefix("sha256:")}
    assert info.custom["digest"] == digest and info.custom["repository"] == publisher.image


def test_revoke_rotate_and_timestamp_reach_the_registry(tmp_path: Path, publisher: Publisher) -> None:
    publisher.ok("init")
    root_v1 = (publisher.keys / "root.json").read_bytes()
    publisher.ok("sign", "v1.3", "v1.4")
    host_client(tmp_path, publisher, root_v1).refresh()

    assert "revoked v1.3: boots into a read-only /var" in publisher.ok("revoke", "v1.3", "--reason",
                                                                        "boots into a read-only /var")
    out = publisher.ok("rotate", "timestamp")
    assert "rotated the timestamp keys" in out and "new metadata: root v2, timestamp v4" in out
    out = publisher.ok("timestamp", "--expiry", "2h", "--out", str(publisher.out))
    assert "timestamp v5, expires " in out and "wrote 9 files to" in out

    assert json.loads(publisher.published("timestamp.json"))["signed"]["version"] == 5
    assert json.loads(publisher.published("2.root.json"))["signed"]["version"] == 2
    updater = host_client(tmp_path, publisher, root_v1)  # the same host, on its trusted metadata
    updater.refresh()
    assert updater.get_targetinfo("v1.3").custom["revoked"]["reason"] == "boots into a read-only /var"  # type: ignore[union-attr]

    doc = json.loads(publisher.ok("status", "--json"))
    assert {row["version"]: row["revoked"] for row in doc["versions"]} == {"v1.4": False, "v1.3": True}
    assert {role["role"]: role["version"] for role in doc["roles"]} == {"root": 2, "targets": 3, "snapshot": 3,
                                                                        "timestamp": 5}


def test_refusals_are_one_line_and_publish_nothing(publisher: Publisher, registry: str) -> None:
    """(The refusals that need no registry are in tests/unit/test_release_repo.py.)"""
    publisher.ok("init")
    publisher.ok("sign", "v1.4")
    stamp = publisher.published("timestamp.json")
    cases = [
        (("sign", "v1.9"), 2, f"{publisher.image}:v1.9 does not exist in the registry"),
        (("revoke", "v1.3", "--reason", "never signed"), 2, "v1.3 is not signed, so it cannot be revoked"),
        (("init",), 2, "already exists and is not an empty folder"),
    ]
    for args, code, message in cases:
        proc = publisher.osctl(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.startswith(f"error: {message}") or message in proc.stderr.splitlines()[0], proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 2, proc.stderr

    # The tag moved to other content: a signed version never changes (exit 7: not trusted).
    registry_tools.copy_tags(registry, "osctl/os", "v1.5", publisher.image.split("/", 1)[1], ["v1.4"])
    proc = publisher.osctl("sign", "v1.4")
    assert proc.returncode == 7 and "v1.4 is signed as sha256:" in proc.stderr and "never changes" in proc.stderr
    assert publisher.published("timestamp.json") == stamp, "nothing was published by a refusal"
