"""``osctl cloud-init apply``: the command that configures a host from its user data."""

from __future__ import annotations

from pathlib import Path

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app

COLOURS = {"failed": "red", "changed": "green", "ran": "green", "would-change": "yellow", "would-run": "yellow"}


@click.command()
@click.option("--user-data", "user_data", type=click.Path(path_type=Path, dir_okay=False),
              help="A user data file (default: the NoCloud seed under <root>/var/lib/osctl/seed/nocloud/).")
@click.option("--instance-id", metavar="ID", help="The instance id (default: from the seed's meta-data).")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--strict", is_flag=True, help="Refuse user data with warnings (unknown or unsupported keys).")
@json_option
@pass_app
def apply(app: AppContext, user_data: Path | None, instance_id: str | None, dry_run: bool, strict: bool,
          as_json: bool) -> None:
    """Apply user data: every-boot settings now, once-per-instance steps once."""
    from osctl.operations import cloudinit, transaction

    def converge(version: str) -> str:
        return transaction.converge(app.settings, app.engine, version)

    report = cloudinit.apply(app.settings, app.engine, user_data=user_data, instance_id=instance_id,
                             dry_run=dry_run, strict=strict, converge=None if dry_run else converge)
    if report is None:
        if as_json:
            render.print_json(None)
        else:
            render.stdout.print("no user data: nothing to apply (pass --user-data FILE or use the NoCloud seed)")
        return
    if as_json:
        render.print_json(report.as_dict())
    else:
        for warning in report.warnings:
            render.warn(warning)
        for step in report.steps:
            colour = COLOURS.get(step.result, "dim")
            render.stdout.print(f"[{colour}]{step.result:>12}[/] {step.name}" + (f"  [dim]{step.detail}[/]" if step.detail else ""))
    if report.failed:
        from osctl.errors import OsctlError

        first = report.failed[0]
        raise OsctlError(f"cloud-init step {first.name} failed: {first.detail}",
                         hint="it runs again at the next boot or apply; see <root>/var/log/osctl/cloud-init.log")
