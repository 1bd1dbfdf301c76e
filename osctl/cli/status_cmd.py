"""``osctl status``: the host at a glance."""

from __future__ import annotations

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app


@click.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show the host's id, root, OS image repository, engine and system containers."""
    from osctl.operations.hoststatus import host_status

    report = host_status(app.settings, app.engine)
    if as_json:
        render.print_json(report.as_dict())
        return
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_row("host", f"{report.host_id} [dim]({report.host_id_source})[/]")
    table.add_row("root", report.root)
    table.add_row("image", f"{report.image or '-'} [dim]({report.image_source})[/]")
    table.add_row("engine", f"Docker {report.engine_version} at {report.engine_address}")
    table.add_row("containers", f"{report.running} running of {report.containers}")
    render.stdout.print(table)
