"""A misbehaving registry on loopback: a small threaded HTTP proxy in front of the real one.

``FlakyProxy(mode, failures)`` answers the first ``failures`` requests badly (``"500"``: HTTP 500,
``"503"``: HTTP 503, ``"reset"``: the connection is closed without an answer), then forwards
to the registry at 127.0.0.1:5000. ``failures=None`` misbehaves forever.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = ("127.0.0.1", 5000)
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class FlakyProxy:
    def __init__(self, mode: str, failures: int | None) -> None:
        self.mode, self.failures = mode, failures
        self.requests = 0
        self.bad_answers = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.requests += 1
                    misbehave = proxy.failures is None or proxy.bad_answers < proxy.failures
                    if misbehave:
                        proxy.bad_answers += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if misbehave:
                    if proxy.mode == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        self.close_connection = True
                        self.connection.close()
                        return
                    self.send_response(int(proxy.mode))
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(*UPSTREAM, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
