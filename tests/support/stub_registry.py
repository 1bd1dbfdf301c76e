"""A registry that says what a test tells it to: crafted answers on 127.0.0.1, for hostile-registry tests.

A test plays a hostile or broken registry by setting answers per path::

    with StubRegistry() as stub:
        stub.tags("hostile/os", ["v1.0", "v2.0"])
        stub.manifest("hostile/os", "v2.0", {...}, digest="sha256:/../../../../volumes/x")
        host.image = stub.repository("hostile/os")

Everything not set is a 404 in the Distribution error format (``/v2/`` itself answers 200). ``seen`` records each request
(method and path), to check what osctl asked for. The engine treats loopback registries as
insecure, so it pulls from this one over plain http too: a test can let a real pull reach it.
Never used by osctl itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
Answer = tuple[int, dict[str, str], bytes]
_UNKNOWN: Answer = (404, {"Content-Type": "application/json"},
                    b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}')


def sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def body_of(doc: object) -> bytes:
    """Bytes are sent as they are; anything else as JSON."""
    return doc if isinstance(doc, bytes) else json.dumps(doc).encode()


class StubRegistry:
    """A threaded HTTP server on a free loopback port answering ``/v2/...`` as set per test."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Answer] = {}  # (method, path) -> answer
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # -- life ----------------------------------------------------------------------------------
    def __enter__(self) -> StubRegistry:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def repository(self, name: str) -> str:
        return f"{self.host}/{name}"

    # -- what it serves ------------------------------------------------------------------------
    def set(self, path: str, status: int, body: object = b"", headers: dict[str, str] | None = None,
            *, methods: tuple[str, ...] = ("GET", "HEAD")) -> None:
        """Answer ``methods`` of ``path`` (GET and HEAD unless told) with exactly this; HEAD without the body.

        Any HTTP server can be played so: a test of the engine adapter plays a dockerd that redirects.
        """
        answer = (status, {"Content-Type": "application/json", **(headers or {})}, body_of(body))
        with self._lock:
            for method in methods:
                self.answers[(method, path)] = answer

    def tags(self, name: str, tags: object) -> None:
        """``/v2/<name>/tags/list`` answers ``{"name": name, "tags": tags}`` (``tags`` as given, any type)."""
        self.set(f"/v2/{name}/tags/list", 200, {"name": name, "tags": tags})

    def manifest(self, name: str, ref: str, doc: object, *, digest: str | None = None,
                 media_type: str = V2) -> str:
        """Serve ``doc`` as the manifest of ``name:ref``; ``Docker-Content-Digest`` is ``digest``
        (by default the body's true digest, which is returned)."""
        body = body_of(doc)
        digest = sha256(body) if digest is None else digest
        self.set(f"/v2/{name}/manifests/{ref}", 200, body, {"Content-Type": media_type,
                                                             "Docker-Content-Digest": digest})
        return digest

    def blob(self, name: str, doc: object) -> str:
        """Serve ``doc`` as a blob of ``name`` under its true digest, which is returned."""
        body = body_of(doc)
        digest = sha256(body)
        self.set(f"/v2/{name}/blobs/{digest}", 200, body, {"Docker-Content-Digest": digest})
        return digest

    def image(self, name: str, ref: str, labels: dict[str, str] | None, *, digest: str | None = None,
              layers: list[dict[str, object]] | None = None) -> str:
        """A one-config image manifest whose config blob carries ``labels``; returns the digest served."""
        config_body = body_of({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                               "rootfs": {"type": "layers", "diff_ids": []}})
        config = self.blob(name, config_body)
        doc = {"schemaVersion": 2, "mediaType": V2,
               "config": {"mediaType": CONFIG, "size": len(config_body), "digest": config},
               "layers": layers if layers is not None else []}
        return self.manifest(name, ref, doc, digest=digest)

    def requested(self, part: str = "") -> list[tuple[str, str]]:
        with self._lock:
            return [s for s in self.seen if part in s[1]]

    def _answer(self, method: str, path: str) -> Answer:
        with self._lock:
            self.seen.append((method, path))
            if path in ("/v2/", "/v2"):
                return 200, {"Content-Type": "application/json"}, b"{}"
            return self.answers.get((method, path.split("?")[0]), _UNKNOWN)


def send_answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    """Write one whole answer, with its length (the stubs keep connections alive), no body to a HEAD."""
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        send_answer(self, *self.server.stub._answer(self.command, self.path))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    stub: StubRegistry
