"""``osctl agent``: the long-running per-host update agent (see ``osctl.operations.agent``)."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import click

from osctl.cli import render
from osctl.cli.context import AppContext, pass_app
from osctl.cli.events import show
from osctl.cli.metrics import chosen, metrics_option, start
from osctl.models.events import Event
from osctl.models.listen import ListenAddress


@click.command()
@click.option("--once", is_flag=True, help="Check once, act on it, and exit (for cron and tests).")
@click.option("--lease-ttl", default=30, show_default=True, type=click.IntRange(min=2, max=3600),
              help="Seconds after which a host that stopped answering frees its slot and leaves the inventory.")
@metrics_option("agent")
@pass_app
def agent(app: AppContext, once: bool, lease_ttl: int, metrics: ListenAddress | None) -> None:
    """Apply the host's update policy (manual, download-only, auto) until SIGTERM.

    With fleet settings (--etcd, OSCTL_ETCD or fleet.etcd) the host follows its group's
    rollout and swaps only in a slot of the group's semaphore; without, it takes the pinned
    version or the newest release. A swap in progress is finished before the agent stops.
    With --metrics (or metrics.agent) it serves Prometheus metrics: the host's, and its phase,
    last check and rollout (docs/metrics.md).
    """
    from osctl.operations.agent import Agent
    from osctl.operations.agenthost import LocalHost

    settings = app.settings
    settings.file.update  # noqa: B018 - a bad settings file is reported before anything starts
    address = chosen(app, metrics, "agent")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        render.info(f"received {signal.Signals(signum).name}; stopping after the current step")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fleet = f"group {settings.group} via {','.join(settings.etcd_endpoints)}" if settings.etcd_endpoints else "alone"
    render.info(f"agent for host {settings.host_id} (pid {os.getpid()}), {fleet}, "
                f"policy {settings.file.update.policy}")
    observed = None
    if address is not None:
        from osctl.operations.metrics import AgentMetrics

        observed = AgentMetrics(settings.group if settings.etcd_endpoints else None)
    events = show
    if observed is not None:
        metrics_view = observed

        def events(event: Event) -> None:  # the phase a long check enters shows before the check ends
            metrics_view.on_event(event)
            show(event)

    runner = Agent(settings, LocalHost(settings, app.engine, events), lease_ttl=lease_ttl, events=events,
                   on_tick=observed.on_tick if observed is not None else None)
    server = start(app, address, observed) if address is not None else None
    try:
        runner.run(stop, once=once)
    finally:
        if server is not None:
            server.close()
