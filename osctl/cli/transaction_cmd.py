"""``osctl upgrade``, ``downgrade``, ``rollback`` and ``boot``: changing what the host runs."""

from __future__ import annotations

import sys

import click

from osctl.cli import render
from osctl.cli.context import AppContext, from_option, json_option, pass_app
from osctl.cli.events import shown


def _transaction(kind: str):  # type: ignore[no-untyped-def]
    def decorate(func):  # type: ignore[no-untyped-def]
        for option in reversed([
            click.option("--stage", is_flag=True, help="Pull and stage, point the next boot at it; swap nothing now."),
            click.option("--dry-run", is_flag=True, help="Print the plan; change nothing."),
            click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation."),
            click.option("--health-timeout", default=120.0, show_default=True, type=click.FloatRange(min=1),
                         help="Seconds the new version has to become healthy before it is rolled back."),
            click.option("--force", is_flag=True, help="Ignore the target's min_upgrade_from."),
            click.option("--tries", type=click.IntRange(min=1, max=100),
                         help="With --stage: how many boots may try the new version before the loader "
                              "falls back (default: the boot.tries setting, 3)."),
            json_option,
        ]):
            func = option(func)
        return func

    return decorate


def _run(app: AppContext, kind: str, to: str | None, stage: bool, dry_run: bool, yes: bool,
         health_timeout: float, force: bool, tries: int | None, as_json: bool) -> None:
    from osctl.operations import transaction

    plan = transaction.decide(app.settings, kind, to)  # type: ignore[arg-type]
    plan.stage = stage
    if plan.to_version == plan.from_version and not stage:
        if as_json:
            render.print_json({**plan.as_dict(), "result": "nothing-to-do"})
        else:
            render.stdout.print(f"{plan.to_version} is already running; nothing to do")
        return
    if dry_run:
        lines = _measure_space(app, plan) if not plan.stored else []
        if as_json:
            render.print_json({**plan.as_dict(), "result": "dry-run"})
        else:
            _print_plan(plan)
            for line in lines:
                render.stderr.print(f"  {line}")
        return
    if not yes and not as_json and sys.stdin.isatty() and sys.stderr.isatty():
        _print_plan(plan)
        if not click.confirm(f"{plan.kind} {app.settings.host_id} to {plan.to_version}?", default=False, err=True):
            raise click.Abort()
    outcome = transaction.run(app.settings, app.engine, plan, health_timeout=health_timeout, force=force,
                              tries=tries or app.settings.file.boot.tries, events=shown(as_json))
    if as_json:
        render.print_json(outcome.as_dict())
    elif outcome.result == "staged":
        render.stdout.print(f"[green]staged[/] {plan.to_version}: the next boots try it "
                            f"({tries or app.settings.file.boot.tries} tries), then fall back to {plan.from_version or 'nothing'}")
    elif outcome.result == "nothing-to-do":
        render.stdout.print(outcome.reason or "nothing to do")
    else:
        down = f", services down {outcome.downtime:.2f}s" if outcome.downtime is not None else ""
        render.stdout.print(f"[green]{plan.kind}[/] {plan.from_version or '(none)'} -> {plan.to_version} "
                            f"committed in {outcome.seconds:.1f}s{down}")


def _measure_space(app: AppContext, plan) -> list[str]:  # type: ignore[no-untyped-def]
    """The preflight's figures for the download the plan needs (``plan.space``), in words. A plan
    stays a plan when they cannot be had: the reason is shown instead (the run measures again)."""
    from osctl.errors import OsctlError
    from osctl.operations.pull import measure_space

    try:
        space = measure_space(app.settings, app.engine, plan.to_version)
    except OsctlError as exc:
        plan.space = {"error": exc.message}
        return [f"space: not measured ({exc.message}); the run checks it before its first byte"]
    plan.space = space.as_dict()
    return space.lines()


def _print_plan(plan) -> None:  # type: ignore[no-untyped-def]
    render.stderr.print(f"[bold]{plan.kind}[/] {plan.from_version or '(nothing installed)'} -> {plan.to_version}"
                        + (" (staged for the next boot)" if plan.stage else ""))
    if not plan.stored:
        render.stderr.print("  the version is pulled first")
    for label, names in (("added", plan.added), ("removed", plan.removed), ("changed", plan.changed),
                         ("unchanged", plan.unchanged)):
        if names:
            render.stderr.print(f"  {label:>9}: {', '.join(names)}")
    render.stderr.print("  named volumes are kept")


@click.command()
@click.option("--to", "to", metavar="V", help="The version (default: the newest release).")
@from_option
@_transaction("upgrade")
@pass_app
def upgrade(app: AppContext, to: str | None, **options: object) -> None:
    """Switch the host to a newer version (the first install, on a new host)."""
    _run(app, "upgrade", to, **options)  # type: ignore[arg-type]


@click.command()
@click.option("--to", "to", metavar="V", required=True, help="The older version.")
@from_option
@_transaction("downgrade")
@pass_app
def downgrade(app: AppContext, to: str, **options: object) -> None:
    """Switch the host to an older version (any stored one works offline)."""
    _run(app, "downgrade", to, **options)  # type: ignore[arg-type]


@click.command()
@_transaction("rollback")
@pass_app
def rollback(app: AppContext, **options: object) -> None:
    """Switch back to the previous version."""
    _run(app, "rollback", None, **options)  # type: ignore[arg-type]


@click.command()
@click.option("--health-timeout", default=120.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds a trial version has to become healthy.")
@json_option
@pass_app
def boot(app: AppContext, health_timeout: float, as_json: bool) -> None:
    """Start-up: recover, boot the trial or the default version, bring its services up."""
    from osctl.operations.boot import boot as run

    result = run(app.settings, app.engine, health_timeout=health_timeout, events=shown(as_json))
    if as_json:
        render.print_json(result.as_dict())
        return
    if result.recovered:
        render.stdout.print(f"recovered: {result.recovered}")
    if result.trial_result == "promoted":
        render.stdout.print(f"[green]booted[/] {result.version}: the trial is healthy and is now the default")
    elif result.trial_result == "fell-back":
        render.stdout.print(f"[yellow]trial of {result.trial} abandoned[/] ({result.reason}); "
                            f"booted {result.version or 'nothing'}")
    elif result.version:
        render.stdout.print(f"[green]booted[/] {result.version}")
    if result.note:
        render.stdout.print(f"[yellow]note[/]: {result.note}")
    else:
        render.stdout.print("nothing to boot: no version is installed (osctl upgrade --to V)")
    if result.user_data:
        render.stdout.print(f"user data: {result.user_data}")
