"""Messages on a stderr that is no terminal are the plain lines rich would write, without rich."""

from __future__ import annotations

import pytest

from osctl.cli import render


def test_plain_lines_when_stderr_is_no_terminal(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(vars(render), "stderr", raising=False)
    render.error("the [registry] is down", "start it")
    render.warn("no [trust] root")
    render.info("50% [done]")
    assert capsys.readouterr().err == ("error: the [registry] is down\nhint: start it\n"
                                       "warning: no [trust] root\n50% [done]\n")
    assert "stderr" not in vars(render), "rich was not needed"


def test_forced_colours_go_through_rich(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delitem(vars(render), "stderr", raising=False)  # put back (or removed again) afterwards
    try:
        render.warn("no [trust] root")
    finally:
        vars(render).pop("stderr", None)  # the console this test made, with colours forced
    err = capsys.readouterr().err
    assert "\x1b[" in err and "no [trust] root" in err
