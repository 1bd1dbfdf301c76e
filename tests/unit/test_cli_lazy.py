"""The lazy command table of ``osctl``: every command reachable, ``--help`` listing them all
without importing one (nor click, at the usual width), summaries that match the commands' own
help, the static top-level help equal to click's, one-line usage errors."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from osctl.cli.app import COMMANDS, cli, run, top_help
from osctl.cli.helptext import TOP_HELP
from osctl.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _real(name: str) -> click.Command:
    module, _, attr = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_reachable_under_its_name(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command)
    assert command.name == name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_summary_matches_the_commands_own_help(name: str) -> None:
    """The table's summary is what click would list for the real command, at any width."""
    real = _real(name)
    stand_in = cli.summary(click.Context(cli), name)  # type: ignore[attr-defined]
    assert stand_in is not None and not real.hidden
    for limit in (20, 45, 60, 74, 120, 400):
        assert stand_in.get_short_help_str(limit) == real.get_short_help_str(limit), (name, limit)


def test_the_table_lists_every_command_of_the_modules() -> None:
    """A command added to a module (a click.Command at module level that no group holds) and
    forgotten in the table would be unreachable: every top-level command is in the table."""
    modules = {target.partition(":")[0] for target, _summary in COMMANDS.values()}
    listed = {target for target, _summary in COMMANDS.values()}
    for module in modules:
        mod = importlib.import_module(module)
        for attr, value in vars(mod).items():
            defined_here = getattr(getattr(value, "callback", None), "__module__", None) == module
            if isinstance(value, click.Command) and defined_here:
                nested = any(isinstance(g, click.Group) and value in g.commands.values() for g in vars(mod).values())
                if not nested:
                    assert f"{module}:{attr}" in listed, f"{module}:{attr} ({value.name}) is not in main.COMMANDS"


def _fresh_python(code: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_help_lists_every_command_without_importing_one() -> None:
    found = _fresh_python(
        "import contextlib, io, json, sys\n"
        "from osctl.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    code = main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('click', 'docker', 'requests', 'rich', 'pydantic', 'tuf', 'etcd3gw', 'yaml', 'ruamel', 'logging')"
        " or m.endswith('_cmd'))\n"
        "print(json.dumps({'code': code, 'out': out.getvalue(), 'heavy': heavy}))\n")
    assert found["code"] == 0
    assert found["heavy"] == []
    listed = [line.split()[0] for line in str(found["out"]).split("Commands:")[1].splitlines() if line.strip()]
    assert listed == sorted(COMMANDS)


def test_the_static_help_is_what_click_renders(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """helptext.TOP_HELP (printed without click) is click's own output at 80 columns and more;
    when it is not, `python -m osctl.cli.helptext` writes it again."""
    assert TOP_HELP == top_help(), "osctl/cli/helptext.py is stale: run python -m osctl.cli.helptext"
    for columns in ("80", "200"):
        monkeypatch.setenv("COLUMNS", columns)
        assert run(["--help"], debug=False) == 0
        assert capsys.readouterr().out == TOP_HELP
        assert main(["--help"]) == 0 and main(["-h"]) == 0
        assert capsys.readouterr().out == TOP_HELP * 2


def test_a_narrow_terminal_gets_clicks_wrapping(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out != TOP_HELP and max(len(line) for line in out.splitlines()) <= 58
    assert "list-versions" in out


def test_json_status_and_list_do_not_load_rich() -> None:
    """``--json`` output never needs rich; a command module pulls in only what it uses."""
    found = _fresh_python(
        "import json, sys\n"
        "from osctl.cli.main import cli\n"
        "import click\n"
        "for name in ('status', 'list-versions'):\n"
        "    cli.get_command(click.Context(cli), name)\n"
        "print(json.dumps({'heavy': sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'docker', 'tuf'))}))\n")
    assert found["heavy"] == []


@pytest.mark.parametrize("args", [["frobnicate"], ["service", "frobnicate"], ["status", "--frobnicate"]])
def test_unknown_command_or_option_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: see 'osctl")
    assert "Traceback" not in err


def test_command_help_still_comes_from_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["list-versions", "--help"])
    out, _ = capsys.readouterr()
    assert code == 0 and "--offline" in out and "newest first" in out

