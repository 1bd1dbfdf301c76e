"""``--metrics ADDR`` of the long-running commands (``supervise``, ``agent``): parse, choose, serve.

The option wins over the command's key in the settings file's ``metrics:`` section; neither
means no endpoint at all. ADDR is parsed by click's callback, so a bad one is the usual one-line
usage error naming the option before anything starts. prometheus_client is imported only when
an endpoint is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from osctl.cli import render
from osctl.cli.context import AppContext
from osctl.models.listen import ListenAddress

if TYPE_CHECKING:
    from osctl.adapters.metricsserver import MetricsServer
    from osctl.operations.metrics import AgentMetrics

F = TypeVar("F", bound=Callable[..., Any])
SCRAPE_ENGINE_TIMEOUT = 5.0  # seconds a scrape waits for the engine's listing (Prometheus gives up at 10)


def metrics_option(command: Literal["supervise", "agent"]) -> Callable[[F], F]:
    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> ListenAddress | None:
        if value is None:
            return None
        try:
            return ListenAddress.parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return click.option("--metrics", "metrics", metavar="ADDR", callback=callback,
                        help="Serve Prometheus metrics on http://ADDR/metrics; ADDR is HOST:PORT or :PORT "
                             f"(127.0.0.1).  [settings: metrics.{command}]")


def chosen(app: AppContext, option: ListenAddress | None, command: Literal["supervise", "agent"]) -> ListenAddress | None:
    """The option, else the settings file's ``metrics.<command>``, else None (no endpoint)."""
    if option is not None:
        return option
    if not app.settings.config_path.exists():
        return None
    return getattr(app.settings.file.metrics, command)  # type: ignore[no-any-return]


def start(app: AppContext, address: ListenAddress, agent: AgentMetrics | None = None) -> MetricsServer:
    """Serve the host's metrics (and the agent's, when given) on ``address``; says where."""
    from osctl.adapters.engine import Engine
    from osctl.adapters.metricsserver import serve
    from osctl.operations.metrics import host_registry

    registry, _collector = host_registry(
        app.settings, lambda: Engine(timeout=SCRAPE_ENGINE_TIMEOUT, connect_attempts=1), agent)
    server = serve(address, registry)
    exposed = "" if address.loopback else " (reachable from the network: this endpoint has no login)"
    render.info(f"metrics on {server.url}{exposed}")
    return server
