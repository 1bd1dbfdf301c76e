"""The HTTP endpoint that Prometheus scrapes: ``GET /metrics`` from a registry of osctl's own.

The only module that imports prometheus_client's server side. It serves in threads of its own
(one per request, daemon threads), so a slow or stuck scraper never holds up the supervisor or
the agent, and the program's main loop never waits for a scrape.

A collector that raises is osctl's bug, but it must not become a traceback on the supervisor's
stderr (wsgiref prints one) nor stop later scrapes: the request gets a 500 with one line, and
the line goes to the log.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

from osctl.errors import UsageError
from osctl.models.listen import ListenAddress

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr: a scrape every 15 s would drown what matters."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("metrics: " + format, *args)


def _guarded(app: WsgiApp) -> WsgiApp:
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except Exception as exc:  # a collector's bug: one line, and the next scrape tries again
            log.warning("collecting metrics failed: %s: %s", type(exc).__name__, exc)
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"collecting metrics failed: {type(exc).__name__}\n".encode()]

    return guarded


class MetricsServer:
    """A running endpoint; ``close`` stops it (the process ending does too: its threads are daemons)."""

    def __init__(self, address: ListenAddress, httpd: ThreadingWSGIServer, thread: threading.Thread) -> None:
        self.address, self._httpd, self._thread = address, httpd, thread

    @property
    def port(self) -> int:
        """The port bound (the one asked for)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(address: ListenAddress, registry: CollectorRegistry) -> MetricsServer:
    """Listen on ``address`` and serve ``registry``; a bind that fails is one ``UsageError``.

    Fails before the caller starts its real work: a supervisor whose metrics port is taken says
    so and exits, instead of running unobserved.
    """
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]

        class Server(ThreadingWSGIServer):
            address_family = family

        httpd = make_server(sockaddr[0], address.port, _guarded(make_wsgi_app(registry)), Server,
                            handler_class=_QuietHandler)
    except OSError as exc:  # taken, not an address of this machine, a name that does not resolve, < 1024
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot serve metrics on {address}: {reason[:1].lower()}{reason[1:]}",
                         hint="give another HOST:PORT (--metrics, or the metrics: section of the settings file)") \
            from None
    thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsServer(address, httpd, thread)
