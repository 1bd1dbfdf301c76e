"""An independent TUF client, tuf-js (npm, pinned in tests/interop/package.json), reads what
``osctl release --out DIR`` wrote, served over plain HTTP on 127.0.0.1: it must accept it, see
the same lengths, hashes and custom data osctl signed, and refuse a replayed older timestamp.

Needs Node and ``npm install`` in tests/interop (scripts/setup does it); skipped otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import registry_tools

INTEROP = Path(__file__).resolve().parents[1] / "interop"
SCRIPT = INTEROP / "tufjs_refresh.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: the tuf-js interoperability check needs Node 20 or later")
    if not (INTEROP / "node_modules" / "tuf-js" / "package.json").is_file():
        pytest.skip("tuf-js is not installed: run scripts/setup, or 'npm ci' in tests/interop")
    return found


@pytest.fixture
def image(registry: str) -> Iterator[str]:
    """An OS image repository of this test's own (copies of shipped versions) and, after, no trace of it."""
    repo = f"osctl-test/rel-{uuid.uuid4().hex[:10]}"
    for version in ("v1.3", "v1.4"):
        registry_tools.copy_tags(registry, "osctl/os", version, repo, [version])
    yield f"{registry}/{repo}"
    for name in (repo, f"{repo}-tuf"):
        registry_tools.delete_repository(registry, name)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served by a static web server on 127.0.0.1, and its URL."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def osctl_release(tmp_path: Path, image: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSCTL_")}
    env.update(OSCTL_ROOT=str(tmp_path / "root"), OSCTL_IMAGE=image, OSCTL_RELEASE_KEYS=str(tmp_path / "keys"))
    (tmp_path / "root").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "osctl", "release", *args], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tufjs(node: str, url: str, root: Path, cache: Path, *targets: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([node, str(SCRIPT), url, str(root), str(cache), *targets], capture_output=True,
                          text=True, timeout=60, cwd=INTEROP, stdin=subprocess.DEVNULL, check=False)
    assert proc.stdout.strip(), f"tuf-js printed nothing (exit {proc.returncode}): {proc.stderr[-500:]}"
    return proc.returncode, json.loads(proc.stdout)


def test_tufjs_agrees_with_what_osctl_signed_and_refuses_a_replayed_timestamp(
        node: str, image: str, served: tuple[Path, str], tmp_path: Path) -> None:
    folder, url = served
    out = ("--out", str(folder))
    osctl_release(tmp_path, image, "init", "--root-keys", "3", "--root-threshold", "2", *out)
    osctl_release(tmp_path, image, "sign", "v1.3", "v1.4", "--min-version", "v1.4", "--reason", "too old", *out)
    osctl_release(tmp_path, image, "revoke", "v1.3", "--reason", "CVE-2026-0001", *out)
    root = tmp_path / "keys" / "root.json"

    code, seen = tufjs(node, url, root, tmp_path / "host", "v1.3", "v1.4", "v1.5")
    assert code == 0, seen
    signed = json.loads((folder / "3.targets.json").read_bytes())["signed"]["targets"]
    assert seen["targets"] == {"v1.3": signed["v1.3"], "v1.4": signed["v1.4"], "v1.5": None}
    body, digest = registry_tools.get_manifest(image.split("/", 1)[0], image.split("/", 1)[1], "v1.4")
    assert seen["targets"]["v1.4"]["hashes"] == {"sha256": digest.removeprefix("sha256:")}
    assert seen["targets"]["v1.4"]["length"] == len(body)
    assert seen["targets"]["v1.3"]["custom"]["revoked"]["reason"] == "CVE-2026-0001"

    # The host has trusted timestamp v4; a server replaying v3 must be refused.
    older = (folder / "timestamp.json").read_bytes()
    osctl_release(tmp_path, image, "timestamp", *out)
    code, seen = tufjs(node, url, root, tmp_path / "host", "v1.4")
    assert code == 0, seen
    (folder / "timestamp.json").write_bytes(older)
    code, seen = tufjs(node, url, root, tmp_path / "host", "v1.4")
    assert code == 1 and seen["error"] == "BadVersionError", seen
    assert "timestamp version 3 is less than current version 4" in seen["message"]
