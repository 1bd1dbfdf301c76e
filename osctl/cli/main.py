"""The ``osctl`` entry point (the console script and ``python -m osctl``).

``osctl --help`` at the usual width is answered from ``helptext.TOP_HELP``, the text click
renders for it (tests/unit/test_cli_lazy.py keeps the two equal), without loading click; every
other command line goes to the click application in ``osctl.cli.app``.
"""

from __future__ import annotations

import sys
from typing import Any

# What ``osctl.cli.app`` defines and code reaches through this module.
_APP_NAMES = ("cli", "COMMANDS", "LazyGroup", "Terminated", "INTERNAL_ERROR", "run", "top_help")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    code = _static_help(args)
    if code is None:
        from osctl.cli.app import run

        code = run(args, debug="--debug" in args)
    if argv is None:
        sys.exit(code)
    return code


def _static_help(args: list[str]) -> int | None:
    """``osctl --help`` / ``-h`` without click; None when click must render it (other
    arguments, or a terminal narrower than the 80 columns the text is laid out for)."""
    if args not in (["--help"], ["-h"]):
        return None
    import shutil

    if shutil.get_terminal_size().columns < 80:  # click wraps to the terminal, as the text does not
        return None
    from osctl.cli.helptext import TOP_HELP

    try:
        sys.stdout.write(TOP_HELP)
        sys.stdout.flush()
    except BrokenPipeError:
        return 1
    return 0


def __getattr__(name: str) -> Any:
    if name in _APP_NAMES:
        from osctl.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
