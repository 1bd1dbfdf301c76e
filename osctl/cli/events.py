"""How the operations' events look on a terminal: one line each, on stderr.

Operations hand typed events (``osctl.models.events``) to a callback; this is the one place
that turns them into words and colours, for every command that reports progress.
"""

from __future__ import annotations

from rich.markup import escape

from osctl.cli import render
from osctl.models.events import AgentEvent, Event, Events, ServiceOutcome, ServiceResult, StepEvent, ignore

_SERVICE_COLOURS = {ServiceResult.FAILED: "red", ServiceResult.SKIPPED: "yellow"}


def show(event: Event) -> None:
    if isinstance(event, ServiceOutcome):
        colour = _SERVICE_COLOURS.get(event.result, "green")
        detail = f" [dim]({escape(event.detail)})[/]" if event.detail else ""
        render.stderr.print(f"  [{colour}]{event.result:>10}[/] {escape(event.service)}{detail}")
    elif isinstance(event, StepEvent):
        style = "bold red" if event.bad else "bold"
        render.stderr.print(f"[{style}]{event.step}[/]: {escape(event.detail)}")
    elif isinstance(event, AgentEvent):
        render.info(f"{event.what}: {event.detail}")


def shown(as_json: bool) -> Events:
    """The callback for a command: quiet with ``--json`` (stdout is for the document)."""
    return ignore if as_json else show
