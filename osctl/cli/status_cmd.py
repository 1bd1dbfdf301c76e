"""``osctl status``: the host at a glance."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app

if TYPE_CHECKING:
    from osctl.operations.hoststatus import TrustStatus


@click.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show the host, its versions (running, next boot, previous), services, supervisor and trust.

    Trust is read from the metadata the host last verified: status never asks the registry."""
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
    counter = ", counted by the loader" if report.trial_counted_by_loader else ""
    trial = (f" [yellow](trial, {report.trial_tries} tries left{counter}, else {report.active_version})[/]"
             if report.trial else "")
    table.add_row("next boot", (report.next_boot or "-") + trial)
    table.add_row("previous", report.previous or "-")
    table.add_row("loader", f"ESP {report.esp}" + (f"; booted {report.booted}" if report.booted else ""))
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
    for label, text in _trust_rows(report.trust):
        table.add_row(label, text)
    if report.supervisor_running:
        table.add_row("supervisor", f"running (pid {report.supervisor_pid}), last update {report.supervisor_updated_at}")
    else:
        table.add_row("supervisor", "[yellow]not running[/] (osctl supervise keeps services running)")
    render.stdout.print(table)


def _trust_rows(trust: TrustStatus | None) -> list[tuple[str, str]]:
    """``trust``: the root and the mode; ``releases``: what the last verified metadata says."""
    if trust is None:
        return []
    from rich.markup import escape

    origin = {"unset": "", "option": "from --trust-root", "environment": "from OSCTL_TRUST_ROOT",
              "settings file": "from the settings file"}.get(trust.origin, f"from {trust.origin}")
    version = f" v{trust.configured_root_version}" if trust.configured_root_version else ""
    if trust.origin == "unset":
        head = "[yellow]not verified[/]: no trust root is configured (trust.root, see docs/trust.md)"
    elif not trust.enforced:
        head = f"[yellow]off[/] (trust.mode): root{version} {origin}; versions are not verified"
    else:
        head = f"enforced: root{version} {origin}"
    if trust.metadata_source and trust.origin != "unset":
        head += f" [dim](metadata: {escape(trust.metadata_source)})[/]"
    if trust.problem:
        head += f"; [red]{escape(trust.problem)}[/]"
    rows = [("trust", head)]
    if trust.trusted:
        parts = [f"root v{trust.root_version or '?'}, targets v{trust.targets_version}", f"{trust.signed} signed"]
        if trust.revoked:
            parts.append(f"revoked: {', '.join(trust.revoked)}")
        if trust.floor:
            parts.append(f"floor {trust.floor}" + (f" ({escape(trust.floor_reason)})" if trust.floor_reason else ""))
        if trust.expires:
            when = f"{trust.expiring_role} {'expired' if trust.expired else 'expires'} {trust.expires}"
            parts.append(f"[red]{when}[/] (stored verified versions still boot; nothing new installs)"
                         if trust.expired else when)
        rows.append(("releases", "; ".join(parts)))
    elif trust.enforced:
        rows.append(("releases", "no verified metadata yet (the next list-versions, pull or upgrade fetches it)"))
    return rows
