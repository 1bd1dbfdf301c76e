"""``osctl fleet``: roll a version out to a group of hosts through etcd, and watch it go."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app

if TYPE_CHECKING:
    from rich.console import RenderableType

    from osctl.operations.fleet import FleetStatus
    from osctl.operations.fleetview import GroupWatch

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


def _etcd(app: AppContext, **options: float):  # type: ignore[no-untyped-def]
    from osctl.adapters.etcd import Etcd

    return Etcd(app.settings.require_etcd(), **options)  # type: ignore[arg-type]


# A live view gives up on one etcd request sooner than a command does: it says etcd is away
# within seconds and tries again, rather than waiting 15 s for an answer.
LIVE_ETCD: dict[str, float] = {"timeout": 2.0, "attempts": 2, "deadline": 5.0}
CLOCK_TICK = 2.0  # seconds between redraws when nothing changes: the next wave's countdown moves


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
@click.option("--watch", is_flag=True,
              help="Keep showing the group, redrawn as etcd changes, until Ctrl-C. Without a terminal: a frame "
                   "per change (with --json: a JSON line per change).")
@group_option
@json_option
@pass_app
def status(app: AppContext, watch: bool, as_json: bool) -> None:
    """Show the group: hosts by version and phase, the rollout's progress, failures and why."""
    from osctl.operations.fleet import status as fleet_status

    if watch:
        _watch(app, as_json)
        return
    with _etcd(app) as etcd:
        found = fleet_status(app.settings, etcd)
    if as_json:
        render.print_json(found.as_dict())
        return
    _print_status(found)


def _print_status(found: FleetStatus) -> None:
    from datetime import UTC, datetime

    from rich.table import Table
    from rich.text import Text

    from osctl.operations.fleetview import summarize

    out = render.stdout
    out.print(_frame(summarize(found, datetime.now(UTC), group=found.group, failures=None)))
    table = Table("host", "running", "next boot", "phase", "last result", box=None, pad_edge=False)
    for host in found.hosts:
        table.add_row(*(Text(v) for v in (host.host_id, host.running or "-", host.next_boot or "-", host.phase,
                                          host.last_result or "")))
    if found.hosts:
        out.print(table)


def _frame(summary: dict[str, Any]) -> RenderableType:
    """The group as lines of text, from ``fleetview.summarize``: what ``fleet status`` prints
    and ``fleet status --watch`` redraws. Every value from etcd goes in as plain ``Text``
    (never as rich markup: a host id or a reason is untrusted text)."""
    from rich.console import Group
    from rich.text import Text

    lines: list[Text] = []
    rollout, slots = summary["rollout"], summary["slots"]
    if summary["revision"] == 0:  # nothing read yet: "no rollout" would be a guess
        lines.append(Text(f"group {summary['group']}: " + ("reading etcd..." if summary["error"] is None
                                                           else "not read yet"), style="dim"))
    elif rollout is None:
        lines.append(Text(f"group {summary['group']}: no rollout"))
    else:
        why = f" ({rollout['reason']})" if rollout.get("reason") else ""
        failed = summary["budget"]["used"]
        lines.append(Text(f"group {summary['group']}: rollout of {rollout['target']} {rollout['state']}{why}; "
                          f"{summary['on_target']}/{summary['hosts']} hosts on it, {failed} failed, "
                          f"{slots['taken']}/{slots['max']} slots taken"))
    versions = ", ".join(f"{v}: {n}" for v, n in summary["by_version"].items()) or "none"
    phases = ", ".join(f"{p}: {n}" for p, n in summary["by_phase"].items()) or "none"
    lines += [Text(f"versions: {versions}"), Text(f"phases: {phases}")]
    if rollout is not None:
        if rollout["state"] == "staging":
            by = f", swaps start by {_clock(rollout['stage_deadline'])} at the latest" if rollout["stage_deadline"] else ""
            lines.append(Text(f"staging: {rollout['staged']}/{summary['hosts']} hosts done downloading{by}"))
        elif rollout["queued"]:
            lines.append(Text(f"queue: {rollout['queued']} host(s) waiting for a slot"))
        lines.append(Text(f"wave: {_wave_text(summary)}"))
        budget = summary["budget"]
        state = "spent" if budget["spent"] else f"{budget['left']} left"
        lines.append(Text(f"failure budget: {budget['used']}/{budget['budget']} used, {state}",
                          style="red" if budget["spent"] else ("yellow" if budget["used"] else "")))
    if slots["holders"]:
        lines.append(Text("swapping: " + ", ".join(f"{h['host_id']} (slot {h['index']}, to {h['version']}, since "
                                                    f"{_clock(h['since'])})" for h in slots["holders"])))
    failures = summary["last_failures"]
    if failures:
        used = summary["budget"]["used"]
        more = f" ({len(failures)} of {used}, newest first)" if len(failures) < used else " (newest first)"
        lines.append(Text(f"failures{more}:"))
        lines += [Text(f"  {f['host_id']} on {f['version']} at {_clock(f['at'])}: {f['reason']}") for f in failures]
    if summary["error"]:
        seen = f"; showing what was read at {_clock(summary['read_at'])}" if summary["read_at"] else ""
        lines.append(Text(f"etcd: {summary['error']} (trying again{seen})", style="bold red"))
    return Group(*lines)


def _wave_text(summary: dict[str, Any]) -> str:
    wave = summary["wave"]
    if wave["number"]:
        text = (f"{wave['number']} of {wave['of']} open, {wave['share']:.0%} of the group "
                f"({wave['hosts_open']} of {summary['hosts']} hosts)")
    else:
        text = "none open yet"
    following = wave["next"]
    if following is not None:
        text += (f"; wave {following['number']} ({following['share']:.0%}) opens in "
                 f"{_duration(following['in_seconds'])} at {_clock(following['opens_at'])}")
    return text


def _duration(seconds: float) -> str:
    left = max(0, round(seconds))
    hours, rest = divmod(left, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _clock(iso: str) -> str:
    """An ISO time from the summary as local wall-clock time, to the second."""
    from datetime import datetime

    return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")


def _watch(app: AppContext, as_json: bool) -> None:
    """``fleet status --watch``: until Ctrl-C (or SIGTERM), which end it with exit 0.

    On a terminal, rich's ``Live`` redraws in place. Anywhere else (a pipe, a file, a log),
    redrawing means nothing: each new state is printed as a frame of its own, headed by the
    time and the etcd revision, and the clock alone never prints one; with ``--json`` each
    is one line of JSON (the summary), for scripts.
    """
    from osctl.operations.fleetview import GroupWatch

    etcd = _etcd(app, **LIVE_ETCD)
    watch = GroupWatch(etcd, app.settings.group)
    watch.start()
    try:
        if as_json:
            _watch_lines(watch, lambda summary: json.dumps(summary, sort_keys=True))
        elif render.stdout.is_terminal:
            _watch_live(watch)
        else:
            _watch_frames(watch)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (osctl.cli.app.Terminated): how a watch ends
        pass
    finally:
        watch.stop()
        etcd.close()


def _watch_live(watch: GroupWatch) -> None:
    from rich.live import Live

    snap = watch.current()
    with Live(_frame(watch.summary(snap)), console=render.stdout, auto_refresh=False) as live:
        while True:
            # Changes come at most min_interval apart (GroupWatch coalesces bursts); without
            # one, the clock tick redraws the countdowns.
            snap = watch.wait(snap.seq, CLOCK_TICK)
            live.update(_frame(watch.summary(snap)), refresh=True)


def _watch_frames(watch: GroupWatch) -> None:
    from datetime import datetime

    from rich.text import Text

    seen = 0  # 0: nothing read yet, not worth a frame
    while True:
        snap = watch.wait(seen, CLOCK_TICK)
        if snap.seq == seen:
            continue
        seen = snap.seq
        summary = watch.summary(snap)
        render.stdout.print(Text(f"--- {datetime.now().strftime('%H:%M:%S')}, etcd revision {summary['revision']}",
                                 style="dim"))
        render.stdout.print(_frame(summary))
        sys.stdout.flush()


def _watch_lines(watch: GroupWatch, line: Callable[[dict[str, Any]], str]) -> None:
    seen = 0  # 0: nothing read yet, not worth a frame
    while True:
        snap = watch.wait(seen, CLOCK_TICK)
        if snap.seq != seen:
            seen = snap.seq
            sys.stdout.write(line(watch.summary(snap)) + "\n")
            sys.stdout.flush()


@fleet.command()
@click.argument("addr", required=False, metavar="[ADDR]")
@group_option
@pass_app
def serve(app: AppContext, addr: str | None) -> None:
    """Serve a live, read-only web page of the group (default 127.0.0.1:8080; no login).

    ADDR is PORT, HOST:PORT or [IPv6]:PORT. The page shows what fleet status --watch shows,
    pushed to every open page from one etcd watch; /status.json has the same data. There is
    no login: listening anywhere but on loopback shows the group to whoever can reach it.
    Ctrl-C or SIGTERM stops it.
    """
    from rich.text import Text

    from osctl.adapters.webserve import LiveServer, loopback_only, parse_addr
    from osctl.cli.fleetpage import PAGE
    from osctl.operations.fleetview import GroupWatch

    host, port = parse_addr(addr)
    group = app.settings.group
    etcd = _etcd(app, **LIVE_ETCD)
    watch = GroupWatch(etcd, group)
    server = LiveServer(host, port, PAGE, watch)
    watch.start()
    thread = server.serve_in_thread()
    if loopback_only(host):
        render.stdout.print(Text(f"serving group {group} at {server.url} (loopback only: no login, so only this "
                                 "machine can see it; Ctrl-C stops)"))
    else:
        render.stdout.print(Text(f"serving group {group} at {server.url}; Ctrl-C stops"))
        render.warn(f"{host} is not loopback: there is no login, so anyone who can reach it sees the group's "
                    "hosts, versions and failure reasons")
    sys.stdout.flush()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop serving, exit 0
        pass
    finally:
        watch.stop()  # first: every open event stream ends at once
        server.shutdown()
        server.server_close()
        etcd.close()


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
