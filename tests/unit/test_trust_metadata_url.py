"""Release metadata read from a plain folder over http (``trust.metadata_url``), as
``osctl release --out DIR`` writes it for a static web server; and what a host does when that
server does not answer: a stored, verified version may still be switched to (one warning), new
content is refused.

The server is Python's own on loopback, serving files signed by hand (tests/support/tuf_by_hand.py).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from osctl.adapters.tufclient import TufClient
from osctl.domain.settings import Settings
from osctl.errors import RegistryUnavailable, TrustError
from osctl.models.store import StoreRecord
from osctl.operations.trust import HostTrust
from tests.support.tuf_by_hand import HandRepo

MANIFEST = b'{"schemaVersion": 2, "note": "the manifest of v1.4"}'


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[HandRepo, str, http.server.ThreadingHTTPServer]]:
    """A publisher's plain TUF folder, served on 127.0.0.1: v1.4 signed, v1.3 revoked."""
    repo = HandRepo()
    repo.sign("v1.3", b"the manifest of v1.3")
    repo.sign("v1.4", MANIFEST)
    repo.revoke("v1.3", "broke the network")
    folder = tmp_path / "www"
    folder.mkdir()
    for name, data in repo.publish().items():
        (folder / name).write_bytes(data)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield repo, f"http://127.0.0.1:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()


def host(tmp_path: Path, repo: HandRepo, url: str) -> Settings:
    root = tmp_path / "host"
    (root / "etc/osctl").mkdir(parents=True)
    (root / "etc/osctl/root.json").write_bytes(repo.root_bytes)
    (root / "etc/osctl/config.yaml").write_text(
        f"image: 127.0.0.1:9/osctl/os\ntrust: {{root: root.json, metadata_url: '{url}'}}\n")
    return Settings(root_option=str(root), env={})


def record(version: str, digest: str, *, verified: bool) -> StoreRecord:
    return StoreRecord(version=version, repository="127.0.0.1:9/osctl/os", digest=digest, image_id="sha256:" + "e" * 64,
                       size=1, stored_at="2026-11-29T00:00:00+00:00", verified=verified)


def test_a_host_refreshes_from_a_plain_folder_over_http(tmp_path: Path, served: tuple) -> None:
    repo, url, _ = served
    index = TufClient(tmp_path / "tuf", repo.root_bytes, metadata=url, images=None).refresh()
    assert index.refusal("v1.4") is None and index.refusal("v1.3") == "revoked: broke the network"
    assert index.release("v1.4").digest == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()  # type: ignore[union-attr]


def test_a_metadata_server_that_does_not_answer_is_unreachable_not_an_error(tmp_path: Path, served: tuple) -> None:
    repo, url, server = served
    server.shutdown()
    server.server_close()
    with pytest.raises(RegistryUnavailable) as caught:
        TufClient(tmp_path / "tuf", repo.root_bytes, metadata=url, images=None).refresh()
    assert caught.value.exit_code == 4
    assert caught.value.message.startswith(f"cannot reach the release metadata at {url}: ")
    assert "refused" in caught.value.message.lower() and "\n" not in caught.value.message


def test_with_the_server_gone_a_stored_verified_version_may_be_switched_to_with_one_warning(
        tmp_path: Path, served: tuple, caplog: pytest.LogCaptureFixture) -> None:
    repo, url, server = served
    settings = host(tmp_path, repo, url)
    HostTrust(settings).index()  # the host refreshed once, while the server answered
    server.shutdown()
    server.server_close()
    trust = HostTrust(Settings(root_option=str(settings.root), env={}))
    digest = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    with caplog.at_level(logging.WARNING, logger="osctl.operations.trust"):
        trust.check_stored(record("v1.4", digest, verified=True))
        trust.check_stored(record("v1.4", digest, verified=True))
    warnings = [r.getMessage() for r in caplog.records if r.name == "osctl.operations.trust"]
    assert len(warnings) == 1 and "could not be refreshed" in warnings[0] and "last trusted" in warnings[0]
    with pytest.raises(TrustError, match="v1.3 is revoked: broke the network"):  # a seen revocation wins offline
        trust.check_stored(record("v1.3", "sha256:" + "c" * 64, verified=True))
    with pytest.raises(RegistryUnavailable):  # new content needs fresh metadata
        trust.require("v1.4")
