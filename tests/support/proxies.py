"""A misbehaving registry on loopback: a small threaded HTTP proxy in front of the real one.

``FlakyProxy(mode, failures)`` answers the first ``failures`` requests badly (``"500"``: HTTP 500,
``"503"``: HTTP 503, ``"reset"``: the connection is closed without an answer), then forwards
to the registry at 127.0.0.1:5000. ``failures=None`` misbehaves forever; ``failures=0`` only
forwards, and ``paths`` says what was asked. ``StreamProxy`` relays
bytes slowly and can be stopped and started mid-transfer: a registry dying in the middle of a layer.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = ("127.0.0.1", 5000)
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class FlakyProxy:
    def __init__(self, mode: str, failures: int | None) -> None:
        self.mode, self.failures = mode, failures
        self.requests = 0
        self.paths: list[str] = []  # "METHOD /path" of every request, in order
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
                    proxy.paths.append(f"{self.command} {self.path}")
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


class StreamProxy:
    """A plain TCP relay to the registry that can be stopped and started again on the same port.

    ``FlakyProxy`` answers whole requests; this one relays bytes as they come, at ``rate`` bytes
    per second towards the client, so a large layer is still in flight when a test acts.
    ``on_bytes(total)`` is called (from a relay thread) as the bytes sent to clients grow; it is
    where a test stops the registry or moves a tag in the middle of a blob.
    """

    CHUNK = 64 * 1024

    def __init__(self, rate: int, on_bytes: Callable[[int], None] | None = None) -> None:
        self.rate, self.on_bytes = rate, on_bytes
        self.sent = 0
        self.port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again) on the same port; a stopped registry comes back."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """The registry dies: refuse new connections and cut every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = list(self._sockets), set()
        for sock in ([listener] if listener else []) + sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self) -> StreamProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(UPSTREAM, timeout=30)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close(), upstream.close()
                    return
                self._sockets |= {client, upstream}
            threading.Thread(target=self._relay, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._relay, args=(upstream, client, True), daemon=True).start()

    def _relay(self, source: socket.socket, target: socket.socket, to_client: bool) -> None:
        started, moved = time.monotonic(), 0
        try:
            while data := source.recv(self.CHUNK):
                target.sendall(data)
                if not to_client:
                    continue
                moved += len(data)
                with self._lock:
                    self.sent += len(data)
                    total = self.sent
                if self.on_bytes:
                    self.on_bytes(total)
                ahead = moved / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                with self._lock:
                    self._sockets.discard(sock)
                sock.close()
