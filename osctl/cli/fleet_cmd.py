"""``osctl fleet``: roll a version out to a group of hosts through etcd, and watch it go."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app

F = TypeVar("F", bound=Callable[..., Any])


def group_option(func: F) -> F:
    """``--group`` on each fleet command; the global ``osctl --group`` means the same."""

    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        app = ctx.find_object(AppContext)
        if value is not None and app is not None:
            app.group = value
        return value

    return click.option("--group", "_group", metavar="G", expose_value=False, callback=callback,
                        help="The group (default: --group, OSCTL_GROUP, fleet.group, 'default').")(func)


@click.group()
def fleet() -> None:
    """Roll versions out to groups of hosts in coordinated waves (etcd)."""


def _etcd(app: AppContext):  # type: ignore[no-untyped-def]
    from osctl.adapters.etcd import Etcd

    return Etcd(app.settings.require_etcd())


@fleet.command()
@click.option("--to", "target", required=True, metavar="V", help="The version every host of the group converges to.")
@click.option("--max-concurrent", default=1, show_default=True, type=click.IntRange(min=1, max=1000),
              help="Hosts of the group swapping at once, at most.")
@click.option("--waves", default="100%@0s", show_default=True, metavar="SHARE@AFTER,...",
              help="Cumulative shares of the group opened over time, e.g. 10%@0s,50%@10m,100%@30m.")
@click.option("--failure-budget", default=1, show_default=True, type=click.IntRange(min=1),
              help="Hosts that may roll back before the rollout pauses for everyone.")
@click.option("--stage-timeout", default="30m", show_default=True, metavar="DURATION",
              help="Download first: no host swaps until every host has the version, or this long at most.")
@click.option("--no-stage", is_flag=True, help="No download-only phase: hosts swap as soon as they have the version.")
@click.option("--no-check", is_flag=True, help="Do not look the version up in the registry (--image) first.")
@group_option
@json_option
@pass_app
def rollout(app: AppContext, target: str, max_concurrent: int, waves: str, failure_budget: int, stage_timeout: str,
            no_stage: bool, no_check: bool, as_json: bool) -> None:
    """Start (or replace) the group's rollout to version V.

    Every host first downloads V (the rollout is "staging"); swaps start, at most
    --max-concurrent at once, when the last host has it or after --stage-timeout.
    """
    from osctl.domain.updatepolicy import parse_waves
    from osctl.models.base import parse_duration
    from osctl.operations.fleet import RolloutRequest, start_rollout

    try:
        stage = None if no_stage else parse_duration(stage_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--stage-timeout") from None
    request = RolloutRequest(target, max_concurrent, parse_waves(waves), failure_budget, stage)
    with _etcd(app) as etcd:
        started, previous = start_rollout(app.settings, etcd, request, check_registry=not no_check)
    if as_json:
        render.print_json(started.model_dump(mode="json"))
        return
    if previous is not None and previous.state in ("active", "paused"):
        render.warn(f"replaced the {previous.state} rollout of {previous.target}")
    staging = (f"hosts download it first (swaps start when all have it, by {started.stage_deadline:%H:%M:%S}Z at "
               "the latest); then " if started.stage_deadline else "")
    render.stdout.print(f"rollout of {started.target} started in group {app.settings.group}: {staging}at most "
                        f"{started.max_concurrent} host(s) at once, pauses after {started.failure_budget} failure(s)")


@fleet.command()
@group_option
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show the group: hosts by version and phase, the rollout's progress, failures and why."""
    from osctl.operations.fleet import status as fleet_status

    with _etcd(app) as etcd:
        found = fleet_status(app.settings, etcd)
    if as_json:
        render.print_json(found.as_dict())
        return
    _print_status(found.as_dict())


def _print_status(data: dict[str, Any]) -> None:
    from rich.table import Table

    out = render.stdout
    rollout = data["rollout"]
    progress = data["progress"]
    if rollout is None:
        out.print(f"group {data['group']}: no rollout")
    else:
        why = f" ({rollout['reason']})" if rollout.get("reason") else ""
        out.print(f"group {data['group']}: rollout of {rollout['target']} {rollout['state']}{why}; "
                  f"{progress['on_target']}/{progress['hosts']} hosts on it, {progress['failed']} failed, "
                  f"{len(data['slots'])}/{rollout['max_concurrent']} slots taken")
    versions = ", ".join(f"{v}: {n}" for v, n in data["by_version"].items()) or "none"
    phases = ", ".join(f"{p}: {n}" for p, n in data["by_phase"].items()) or "none"
    out.print(f"versions: {versions}\nphases: {phases}")
    if rollout and rollout["failures"]:
        out.print("failures:")
        for failure in rollout["failures"]:
            out.print(f"  {failure['host_id']} on {failure['version']}: {failure['reason']}")
    table = Table("host", "running", "next boot", "phase", "last result", box=None, pad_edge=False)
    for host in data["hosts"]:
        table.add_row(host["host_id"], host["running"] or "-", host["next_boot"] or "-", host["phase"],
                      host["last_result"] or "")
    if data["hosts"]:
        out.print(table)


def _state_command(name: str, state: str, doc: str) -> None:
    @fleet.command(name=name, help=doc)
    @click.option("--reason", default=None, help="Why, shown by fleet status.")
    @group_option
    @json_option
    @pass_app
    def command(app: AppContext, reason: str | None, as_json: bool) -> None:
        from osctl.operations.fleet import set_state

        with _etcd(app) as etcd:
            updated = set_state(app.settings, etcd, state, reason or f"{name}d by an operator")  # type: ignore[arg-type]
        if as_json:
            render.print_json(updated.model_dump(mode="json"))
        else:
            render.stdout.print(f"rollout of {updated.target} in group {app.settings.group}: {updated.state}")


_state_command("pause", "paused", "Stop new swaps in the group (hosts swapping now finish).")
_state_command("resume", "active", "Let a paused rollout go on (its failures stay counted), or end staging now.")
_state_command("abort", "aborted", "Give the rollout up for good; hosts keep what they run.")
