"""Output for people and for scripts: rich on a terminal, JSON with --json, errors on stderr.

Data goes to stdout, everything else (progress, warnings, errors) to stderr, so
``osctl ... --json | jq`` always sees clean JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine output: stable, sorted keys, no colour, one document."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def error(message: str, hint: str | None = None) -> None:
    """One red line, and the hint on the next line when there is one."""
    stderr.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        stderr.print(f"[dim]hint:[/] {escape(hint)}")


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {escape(message)}")


def info(message: str) -> None:
    stderr.print(escape(message))
