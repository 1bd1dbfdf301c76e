"""``osctl status``: the host at a glance."""

from __future__ import annotations

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app


@click.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show the host, its versions (running, next boot, previous), services and supervisor."""
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
    table.add_row("running", ", ".join(report.running_versions) or "-")
    table.add_row("active", f"{report.active_version or '-'} [dim](desired: {report.desired})[/]")
    trial = f" [yellow](trial, {report.trial_tries} tries left, else {report.active_version})[/]" if report.trial else ""
    table.add_row("next boot", (report.next_boot or "-") + trial)
    table.add_row("previous", report.previous or "-")
    services = f"{report.services_running} running of {report.services_total}"
    for label, names, colour in (("failed", report.failed_services, "red"), ("stopped", report.stopped_services, "yellow"),
                                 ("disabled", report.disabled_services, "dim")):
        if names:
            services += f"; [{colour}]{label}: {', '.join(names)}[/]"
    table.add_row("services", services)
    if report.transaction:
        txn = report.transaction
        table.add_row("transaction", f"[red]{txn['kind']} {txn.get('from_version') or '(none)'} -> {txn['to_version']} "
                                     f"at step {txn['step']} (pid {txn['pid']})[/]; the next osctl command or boot "
                                     "finishes or undoes it")
    if report.last_rollback:
        rb = report.last_rollback
        table.add_row("last rollback", f"{rb['to_version']} at {rb.get('finished_at')}: {rb.get('reason')}")
    if report.cloud_init:
        ci = report.cloud_init
        failed = [f"{name} ({step['detail']})" for name, step in ci["steps"].items()  # type: ignore[union-attr]
                  if step["result"] == "failed"]
        table.add_row("user data", f"instance {ci['instance_id']}, applied {ci['applied_at']}"
                      + (f"; [red]failed: {'; '.join(failed)}[/]" if failed else ""))
    if report.supervisor_running:
        table.add_row("supervisor", f"running (pid {report.supervisor_pid}), last update {report.supervisor_updated_at}")
    else:
        table.add_row("supervisor", "[yellow]not running[/] (osctl supervise keeps services running)")
    render.stdout.print(table)
