"""Output for people and for scripts: rich on a terminal, JSON with --json, errors on stderr.

Data goes to stdout, everything else (progress, warnings, errors) to stderr, so
``osctl ... --json | jq`` always sees clean JSON.

rich is loaded on first use (``render.stdout``, ``render.stderr``), not when this module is:
``--json`` output never needs it, and a message to a stderr that is not a terminal is written
as the plain line rich would write there (no colours, no wrapping), without loading it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    stdout: Console
    stderr: Console

# What makes rich colour a stream that is not a terminal (rich.console.Console): with any of
# these set, messages go through rich.
_FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def __getattr__(name: str) -> Any:
    """``stdout`` and ``stderr``: rich consoles, made (and rich imported) when first asked for."""
    if name not in ("stdout", "stderr"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    console = Console(stderr=name == "stderr", highlight=False, soft_wrap=True)
    globals()[name] = console
    return console


def _stderr() -> Console:
    console = globals().get("stderr")
    return console if console is not None else __getattr__("stderr")  # type: ignore[no-any-return]


def print_json(data: Any) -> None:
    """Machine output: stable, sorted keys, no colour, one document."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def error(message: str, hint: str | None = None) -> None:
    """One red line, and the hint on the next line when there is one."""
    if _plain():
        _line(f"error: {message}")
        if hint:
            _line(f"hint: {hint}")
        return
    from rich.markup import escape

    _stderr().print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        _stderr().print(f"[dim]hint:[/] {escape(hint)}")


def warn(message: str) -> None:
    if _plain():
        _line(f"warning: {message}")
        return
    from rich.markup import escape

    _stderr().print(f"[yellow]warning:[/] {escape(message)}")


def info(message: str) -> None:
    if _plain():
        _line(message)
        return
    from rich.markup import escape

    _stderr().print(escape(message))


def _plain() -> bool:
    """Messages can skip rich: stderr is no terminal, nothing forces colours, and rich has not
    been set up yet (once it has, it writes everything, so the order of lines is kept)."""
    if "stderr" in globals():
        return False
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr: let rich decide
        return False
    return not terminal and not any(os.environ.get(name) for name in _FORCING)


def _line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def size(value: int | None) -> str:
    """Bytes for a person: decimal units, as ``docker images`` shows them."""
    if value is None:
        return "-"
    count = float(value)
    for unit in ("B", "KB", "MB"):
        if count < 1000:
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"
