"""``osctl cloud-init``: check user data and show what it amounts to, before a host applies it.

One group, so that later commands (``apply``, the NoCloud seed) join it with
``@cloud_init.command()`` and reuse ``read_user_data``. Values from user data are printed only
by ``show``, redacted; ``validate`` prints positions, key paths and messages.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape

from osctl.cli import render
from osctl.cli.context import json_option
from osctl.errors import Issue, UsageError


@click.group("cloud-init")
def cloud_init() -> None:
    """Check, show and apply cloud-init user data (docs/cloud-init.md)."""


def read_user_data(path: str) -> bytes:
    """The bytes of FILE ('-': standard input), at most one byte past the size osctl accepts."""
    from osctl.domain.userdata import MAX_USER_DATA_BYTES

    limit = MAX_USER_DATA_BYTES + 1
    try:
        if path == "-":
            if sys.stdin is None:  # started with standard input closed
                raise UsageError("cannot read - (standard input): it is closed")
            return sys.stdin.buffer.read(limit)
        with open(path, "rb") as handle:
            return handle.read(limit)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a user-data file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _as_dict(issue: Issue, source: str, severity: str) -> dict[str, Any]:
    return {"source": getattr(issue, "source", "") or source, "path": issue.path, "line": issue.line,
            "column": issue.column, "message": issue.message, "severity": severity}


@cloud_init.command()
@click.argument("file", metavar="FILE")
@click.option("--strict", is_flag=True, help="Unknown keys are errors, not warnings.")
@json_option
@click.pass_context
def validate(ctx: click.Context, file: str, strict: bool, as_json: bool) -> None:
    """Check user data for errors and warnings.

    FILE ('-' reads standard input) is checked whole: its format, every cloud-config part, and
    the parts merged.

    Each problem is printed as FILE:LINE:COL: key.path: message. Exit status: 0 valid, 1 errors,
    2 warnings only (unsupported or unknown keys).
    """
    from osctl.domain.userdata import parse_user_data

    data = parse_user_data(read_user_data(file), file, strict=strict)
    if as_json:
        render.print_json({"valid": data.valid,
                           "errors": [_as_dict(i, file, "error") for i in data.issues],
                           "warnings": [_as_dict(i, file, "warning") for i in data.warnings]})
    else:
        for issue in data.issues:
            render.stdout.print(f"[red]{escape(issue.render(file))}[/]")
        for issue in data.warnings:
            render.stdout.print(f"[yellow]{escape(issue.render(file))}[/]")
        render.stdout.print(escape(_summary(file, len(data.issues), len(data.warnings))))
    ctx.exit(1 if data.issues else 2 if data.warnings else 0)


def _summary(file: str, errors: int, warnings: int) -> str:
    if not errors and not warnings:
        return f"{file}: valid"
    counts = [f"{n} {word}{'' if n == 1 else 's'}" for n, word in ((errors, "error"), (warnings, "warning")) if n]
    return f"{file}: {', '.join(counts)}"


@cloud_init.command()
@click.option("--user-data", "user_data", metavar="FILE", required=True,
              help="The user-data file ('-' reads standard input).")
@json_option
def show(user_data: str, as_json: bool) -> None:
    """Show the configuration user data amounts to.

    Every cloud-config part merged, with passwords, secrets and file contents redacted, and the
    scripts it carries (names and sizes). Invalid user data is refused (exit 2).
    """
    from osctl.domain.userdata import effective_config, parse_user_data

    data = parse_user_data(read_user_data(user_data), user_data)
    data.raise_if_invalid(user_data)
    for issue in data.warnings:
        render.warn(issue.render(user_data))
    config = effective_config(data)
    scripts = [{"name": script.name, "size": script.size} for script in data.scripts]
    if as_json:
        render.print_json({"config": config, "scripts": scripts, "parts": data.parts})
        return
    sys.stdout.write(_as_yaml(config, scripts, len(data.parts)))


def _as_yaml(config: dict[str, Any], scripts: list[dict[str, Any]], parts: int) -> str:
    """A #cloud-config document (so it validates again), scripts listed in comments."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # keep the user's key order
    buffer = io.StringIO()
    yaml.dump(config, buffer)
    lines = ["#cloud-config", f"# effective configuration of {parts} part(s), merged; secrets redacted"]
    lines.append(buffer.getvalue().rstrip("\n"))
    if scripts:
        lines.append("# scripts (contents not shown), in order:")
        lines += [f"#   {script['name']} ({script['size']} bytes)" for script in scripts]
    return "\n".join(lines) + "\n"


from osctl.cli.cloudinit_apply import apply  # noqa: E402 - the command lives in its own module

cloud_init.add_command(apply)
