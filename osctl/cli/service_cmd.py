"""``osctl service ...``: the system services of the active version."""

from __future__ import annotations

import sys

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app
from osctl.cli.events import show, shown

COLOURS = {"running": "green", "completed": "green", "failed": "red", "exited": "red", "missing": "red",
           "stopped": "yellow", "disabled": "dim", "created": "yellow"}


@click.group()
def service() -> None:
    """List, inspect, start and stop the system services of the active version."""


@service.command()
@click.option("--version", "version", metavar="V", help="A stored version (default: the active one).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds to wait for one-shots to complete and services to become healthy.")
@json_option
@pass_app
def up(app: AppContext, version: str | None, timeout: float, as_json: bool) -> None:
    """Start the service set in dependency order; unchanged services are left running."""
    from osctl.operations import services

    outcomes = services.up(app.settings, app.engine, version, events=shown(as_json), timeout=timeout)
    if as_json:
        render.print_json([{"service": o.service, "result": o.result, "detail": o.detail, "skip": o.skip}
                           for o in outcomes])


@service.command()
@pass_app
def down(app: AppContext) -> None:
    """Stop and remove the service set, every service at once; volumes are kept."""
    from osctl.operations import services

    done = services.down(app.settings, app.engine, events=show)
    render.stdout.print(f"stopped {len(done)} service(s)")


@service.command("list")
@json_option
@pass_app
def list_services(app: AppContext, as_json: bool) -> None:
    """Name, state, health, restarts, uptime, image and version of each service."""
    from osctl.operations import services

    rows = services.service_rows(app.settings, app.engine)
    if as_json:
        render.print_json([row.as_dict() for row in rows])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SERVICE", "STATE", "HEALTH", "RESTARTS", "UPTIME", "IMAGE", "VERSION"):
        table.add_column(column)
    for row in rows:
        colour = COLOURS.get(row.state, "white")
        table.add_row(row.name, f"[{colour}]{row.state}[/]", row.health or "-", str(row.restarts),
                      _duration(row.uptime), row.image, row.version)
    render.stdout.print(table)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


@service.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("-n", "--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@pass_app
def logs(app: AppContext, name: str, follow: bool, tail: int | None) -> None:
    """Print what service NAME wrote."""
    from osctl.operations import services

    out = sys.stdout.buffer
    for chunk in services.logs(app.settings, app.engine, name, tail=tail, follow=follow):
        out.write(chunk)
        out.flush()


def _flag_command(action: str, doc: str) -> click.Command:
    @click.command(action, help=doc)
    @click.argument("name")
    @pass_app
    def command(app: AppContext, name: str) -> None:
        from osctl.operations import services

        render.stdout.print(services.set_flag(app.settings, app.engine, name, action, events=show))

    return command


for _action, _doc in (
    ("start", "Start service NAME (and what it needs); clears a stop or a failed state."),
    ("stop", "Stop service NAME; the supervisor leaves it alone until it is started again."),
    ("restart", "Stop and start service NAME."),
    ("enable", "Let service NAME start at boots and swaps again."),
    ("disable", "Keep service NAME from starting at the next boot or swap (persisted)."),
):
    service.add_command(_flag_command(_action, _doc))
