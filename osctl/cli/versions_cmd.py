"""``osctl list-versions``, ``pull``, ``pin``, ``unpin``, ``prune``: the host's store."""

from __future__ import annotations

import click

from osctl.cli import render
from osctl.cli.context import AppContext, from_option, json_option, pass_app
from osctl.cli.progress import pull_bars


@click.command("list-versions")
@click.option("--all", "include_all", is_flag=True, help="Also show pre-releases.")
@click.option("--offline", is_flag=True, help="Do not ask the registry; show stored versions only.")
@json_option
@pass_app
def list_versions(app: AppContext, include_all: bool, offline: bool, as_json: bool) -> None:
    """Show every version in the registry or on this host, newest first."""
    from osctl.operations.versions import list_versions as run

    rows = run(app.settings, app.engine, include_prereleases=include_all, offline=offline, warn=render.warn)
    if as_json:
        render.print_json([row.as_dict() for row in rows])
        return
    from rich.markup import escape
    from rich.table import Table

    notes = any(row.invalid or row.revoked for row in rows)
    trusted = any(row.signed is not None for row in rows)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("VERSION", "STATE", "DIGEST", "SIZE", "DATE", *(("TRUST",) if trusted else ()),
                   *(("WHY",) if notes else ())):
        table.add_column(column)
    for row in rows:
        valid = row.available and not row.invalid
        marks = [name for flag, name in ((row.running, "[green]running[/]"), (row.next_boot, "[cyan]next-boot[/]"),
                                         (row.previous, "previous"), (row.stored, "stored"),
                                         (valid, "[dim]available[/]"), (bool(row.invalid), "[red]invalid[/]"),
                                         (row.pinned, "[yellow]pinned[/]"))
                 if flag]
        if row.registry_digest and row.registry_digest != (row.signed_digest or row.digest):
            marks.append("[red]tag-moved[/]")
        size = render.size(row.size) if row.stored else f"[dim]{render.size(row.download_size)} to pull[/]"
        cells = [row.version, " ".join(marks), (row.digest or "-").removeprefix("sha256:")[:12], size,
                 (row.date or "")[:10]]
        if trusted:
            cells.append(_trust_cell(row.signed, row.revoked))
        table.add_row(*cells, *((escape(row.revoked or row.invalid or ""),) if notes else ()))
    if rows:
        render.stdout.print(table)
        expires = next((row.expires for row in rows if row.expires), None)
        if expires:  # one statement for every row: the metadata's earliest expiry
            render.info(f"the release metadata saying so is valid until {expires.replace('T', ' ')}")
    else:
        render.info("no versions: the registry holds none and nothing is stored")


def _trust_cell(signed: bool | None, revoked: str | None) -> str:
    if revoked:
        return "[red]revoked[/]"
    return "signed" if signed else "[yellow]unsigned[/]"


@click.command()
@click.argument("version")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@from_option
@json_option
@pass_app
def pull(app: AppContext, version: str, quiet: bool, as_json: bool) -> None:
    """Pull VERSION and store it, so it can be booted or switched to without the network."""
    from osctl.operations.pull import pull_version

    with pull_bars(not (quiet or as_json)) as progress:
        result = pull_version(app.settings, app.engine, version, progress=progress)
    record = result.record
    if as_json:
        render.print_json({**record.model_dump(mode="json"), "already_stored": result.already_stored})
    elif result.already_stored:
        render.stdout.print(f"{record.version} is already stored ({record.digest[:19]})")
    else:
        verified = ", verified: signed by the release keys" if record.verified else ""
        render.stdout.print(f"[green]stored[/] {record.version} ({record.digest[:19]}, {render.size(record.size)}{verified})")


def _pin_command(name: str, pinned: bool, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("version")
    @json_option
    @pass_app
    def command(app: AppContext, version: str, as_json: bool) -> None:
        from osctl.operations.versions import set_pinned

        record = set_pinned(app.settings, version, pinned)
        if as_json:
            render.print_json({"version": record.version, "pinned": record.pinned})
        else:
            render.stdout.print(f"{record.version} is {'pinned' if pinned else 'no longer pinned'}")

    return command


pin = _pin_command("pin", True, "Keep stored VERSION through every prune.")
unpin = _pin_command("unpin", False, "Let prune remove VERSION again.")


@click.command()
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=0),
              help="How many of the newest stored versions to keep.")
@click.option("--dry-run", is_flag=True, help="Show what would go, change nothing.")
@json_option
@pass_app
def prune(app: AppContext, keep: int, dry_run: bool, as_json: bool) -> None:
    """Remove stored versions beyond the newest KEEP; never the running, next-boot, previous
    or pinned ones."""
    from osctl.operations.prune import prune as run

    plan = run(app.settings, app.engine, keep=keep, dry_run=dry_run)
    if as_json:
        render.print_json({**plan.as_dict(), "dry_run": dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    render.stdout.print(f"{verb}: {', '.join(plan.remove) or 'nothing'}")
    for version, why in plan.keep.items():
        render.stdout.print(f"kept {version}: {why}")
    if plan.images_kept_in_use:
        render.warn(f"{len(plan.images_kept_in_use)} image(s) stay because containers use them")
