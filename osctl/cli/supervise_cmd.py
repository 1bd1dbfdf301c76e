"""``osctl supervise``: the long-running supervisor of one host."""

from __future__ import annotations

import os
import signal
from types import FrameType

import click

from osctl.cli import render
from osctl.cli.context import AppContext, pass_app
from osctl.cli.metrics import chosen, metrics_option, start
from osctl.models.listen import ListenAddress


@click.command()
@click.option("--reconcile-every", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between full checks, beside the engine's events.")
@click.option("--stable-after", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds up after which a service's failure count starts again.")
@click.option("--max-failures", default=5, show_default=True, type=click.IntRange(min=1),
              help="Consecutive failures after which a service is marked failed.")
@click.option("--backoff-max", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="The longest wait between two restarts of a service.")
@metrics_option("supervise")
@pass_app
def supervise(app: AppContext, reconcile_every: float, stable_after: float, max_failures: int,
              backoff_max: float, metrics: ListenAddress | None) -> None:
    """Keep the active version's services running until SIGTERM (which leaves them running).

    With --metrics (or metrics.supervise in the settings file) it serves Prometheus metrics:
    versions, services up and restarts, transactions (docs/metrics.md).
    """
    from osctl.operations.supervisor import Policy, Supervisor

    address = chosen(app, metrics, "supervise")

    policy = Policy(reconcile_every=reconcile_every, stable_after=stable_after, max_failures=max_failures,
                    backoff_max=backoff_max)
    supervisor = Supervisor(app.settings, policy=policy, say=render.info)

    def stop(signum: int, _frame: FrameType | None) -> None:
        render.info(f"received {signal.Signals(signum).name}; stopping (services keep running)")
        supervisor.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    render.info(f"supervising host {app.settings.host_id} (pid {os.getpid()})")
    servers = []

    def serve_metrics() -> None:  # once this supervisor holds the host: a second one says so, not "port taken"
        if address is not None:
            servers.append(start(app, address))

    try:
        supervisor.run(ready=serve_metrics)
    finally:
        for server in servers:
            server.close()
