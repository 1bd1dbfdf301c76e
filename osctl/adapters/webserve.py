"""A small read-only web server for a live view: one page, its data as JSON, and its changes
pushed as Server-Sent Events. Standard library only (``http.server``), no framework.

Why SSE: the browser's ``EventSource`` reconnects by itself, the stream is plain HTTP that any
proxy passes, and the data only ever flows one way. Why threads: each open page holds one
request open for as long as it is shown; ``ThreadingHTTPServer`` gives each its own thread, and
they all wait on the same ``LiveSource`` (one etcd watch for every viewer, never one per page).

Routes: ``/`` the page (``text/html``), ``/status.json`` the source's data now, ``/events`` an
event stream: ``event: status`` with the data as one line of JSON, at once, then at every
change, and every ``heartbeat`` seconds regardless (clocks on the page move, a dead connection
is noticed). Anything else is 404; anything but GET and HEAD is 405. Responses forbid caching
and framing, and the page's Content-Security-Policy allows nothing but itself.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from osctl.adapters.netaddr import is_loopback
from osctl.errors import OsctlError, UsageError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
_ADDR_HINT = "give PORT, HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:8080"
# The page's scripts and styles are inline; nothing else may load, connect elsewhere, or frame it.
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")  # a name or an IPv4 address


class LiveSource(Protocol):
    """What the server shows: data that changes, numbered by a sequence that grows."""

    def data(self, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
        """The sequence number and data once the sequence is past ``after``, or as they are
        after ``timeout`` seconds (``after=-1, timeout=0``: now)."""
        ...

    @property
    def closing(self) -> bool:
        """True once the source stops: event streams end."""
        ...


def parse_addr(addr: str | None) -> tuple[str, int]:
    """``PORT``, ``HOST``, ``HOST:PORT``, ``:PORT`` or ``[V6]:PORT`` as (host, port); the defaults
    for what is left out. A one-line ``UsageError`` for anything else."""
    text = (addr or "").strip()
    if not text:
        return DEFAULT_HOST, DEFAULT_PORT
    if text.isdigit():
        host, port_text = DEFAULT_HOST, text
    elif text.startswith("["):
        inside, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise UsageError(f"{addr!r} is not an address to listen on", hint=_ADDR_HINT)
        host, port_text = inside, rest[1:] or str(DEFAULT_PORT)
        if ":" not in host:
            raise UsageError(f"{addr!r}: brackets are for IPv6 addresses", hint=_ADDR_HINT)
    elif text.count(":") > 1:  # a bare IPv6 address, no port
        host, port_text = text, str(DEFAULT_PORT)
    else:
        host, _, port_text = text.partition(":")
        host, port_text = host or DEFAULT_HOST, port_text or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"{addr!r}: the port must be a number from 0 to 65535", hint=_ADDR_HINT)
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"{addr!r}: {host!r} is not an IPv6 address", hint=_ADDR_HINT) from None
    elif not _HOST_NAME.fullmatch(host):
        raise UsageError(f"{addr!r}: {host!r} is not a host name or address", hint=_ADDR_HINT)
    return host, int(port_text)


def loopback_only(host: str) -> bool:
    """Whether a server bound to ``host`` can only be reached from this machine."""
    return is_loopback(host)


class LiveServer(ThreadingHTTPServer):
    """Serves ``page`` and ``source`` on (host, port); port 0 picks a free one (see ``url``)."""

    daemon_threads = True  # a viewer's open stream never keeps the process alive
    allow_reuse_address = True  # a restart right after a stop binds again at once

    def __init__(self, host: str, port: int, page: str, source: LiveSource, *, heartbeat: float = 5.0) -> None:
        self.page = page.encode()
        self.source = source
        self.heartbeat = heartbeat
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise OsctlError(f"cannot listen on {where}: the port is in use",
                                 hint="stop what listens there, or give another port, e.g. 127.0.0.1:0") from None
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"cannot listen on {where}: no such address on this machine",
                                 hint=_ADDR_HINT) from None
            raise OsctlError(f"cannot listen on {where}: {exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="webserve",
                                  daemon=True)
        thread.start()
        return thread

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A viewer that went away mid-answer is not worth a traceback on the terminal."""
        log.debug("web view: request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: LiveServer
    protocol_version = "HTTP/1.1"
    server_version = "osctl"
    timeout = 60  # seconds a viewer may take to send its request or to take an event

    def version_string(self) -> str:
        return self.server_version  # no Python version: nothing a viewer needs

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", b"read-only\n",
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _route(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page, head=head,
                       extra={"Content-Security-Policy": _CSP})
        elif path == "/status.json":
            _seq, data = self.server.source.data(-1, 0)
            body = json.dumps(data, sort_keys=True).encode()
            self._send(HTTPStatus.OK, "application/json", body, head=head)
        elif path == "/events":
            self._events(head)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", head=head)

    def _send(self, code: HTTPStatus, kind: str, body: bytes, *, head: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self._common_headers(kind)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _common_headers(self, kind: str) -> None:
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")

    def _events(self, head: bool) -> None:
        """The event stream: until the viewer goes away or the source closes."""
        self.send_response(HTTPStatus.OK)
        self._common_headers("text/event-stream; charset=utf-8")
        self.send_header("X-Accel-Buffering", "no")  # a buffering proxy in front would hold events back
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        source, seen = self.server.source, -1
        try:
            self.wfile.write(b"retry: 2000\n\n")
            while not source.closing:
                seen, data = source.data(seen, 0 if seen < 0 else self.server.heartbeat)
                if source.closing:
                    break
                self.wfile.write(_event(seen, data))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer closed the page

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("web view: %s %s", self.address_string(), format % args)


def _event(seq: int, data: dict[str, Any]) -> bytes:
    """One SSE message; the data is one line (JSON escapes every newline inside strings)."""
    return f"id: {seq}\nevent: status\ndata: {json.dumps(data, sort_keys=True)}\n\n".encode()


def serve(server: LiveServer, until: Callable[[], bool], poll: float = 0.2) -> None:
    """Serve on a thread of its own until ``until()``; used by callers that must stay in the
    main thread to receive signals (Ctrl-C, SIGTERM)."""
    thread = server.serve_in_thread()
    try:
        while not until():
            thread.join(poll)
    finally:
        server.shutdown()
        server.server_close()
