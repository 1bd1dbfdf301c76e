"""Whatever bytes arrive as user data, validation ends in a clean result: lists of issues from
``validate()``, exit status 0, 1 or 2 from ``osctl cloud-init validate`` (never 70, a bug), and a
redacted configuration that serialises."""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from osctl.cli.main import main
from osctl.domain.userdata import CLOUD_INIT_KEYS, effective_config, parse_user_data, validate
from osctl.errors import Issue
from osctl.models.cloudconfig import APPLIED_KEYS

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "user-data").iterdir())
BOUNDED = settings(max_examples=200, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
LONG_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)


def check(raw: bytes) -> None:
    """validate() and effective_config() finish cleanly on ``raw``."""
    errors, warnings = validate(raw, "user-data")
    assert all(isinstance(i, Issue) and isinstance(i.render(), str) for i in errors + warnings)
    data = parse_user_data(raw, "user-data", strict=True)
    json.dumps(effective_config(data))


def check_cli(capsys: pytest.CaptureFixture[str], raw: bytes) -> None:
    fd, name = tempfile.mkstemp(prefix="osctl-ud-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        for args in (["cloud-init", "validate", name], ["cloud-init", "validate", "--json", "--strict", name]):
            code = main(args)
            out, err = capsys.readouterr()
            assert code in (0, 1, 2) and "internal error" not in err, err
            if "--json" in args:
                assert json.loads(out)["valid"] == (code != 1)
        code = main(["cloud-init", "show", "--user-data", name])
        assert code in (0, 2) and "internal error" not in capsys.readouterr().err
    finally:
        os.unlink(name)


@BOUNDED
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)
    check(gzip.compress(raw))


@BOUNDED
@given(st.sampled_from([b"#cloud-config\n", b"#!/bin/sh\n", b"Mime-Version: 1.0\n", b"#include\n", b""]),
       LONG_TEXT.map(str.encode))
def test_arbitrary_text_after_a_header(capsys: pytest.CaptureFixture[str], header: bytes, body: bytes) -> None:
    check(header + body)
    check_cli(capsys, header + body)


def _mutate(text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["insert-char", "delete-char", "delete-line", "duplicate-line",
                                          "insert-line"]))
        if kind.endswith("char"):
            if not lines:
                continue
            row = data.draw(st.integers(0, len(lines) - 1))
            col = data.draw(st.integers(0, len(lines[row])))
            if kind == "insert-char":
                char = data.draw(st.sampled_from(list(" \t:-[]{}#&*!|>'\"\n\\%@`,?0aZ\u00e9")))
                lines[row] = lines[row][:col] + char + lines[row][col:]
            else:
                lines[row] = lines[row][:col] + lines[row][col + 1:]
        elif kind == "insert-line":
            row = data.draw(st.integers(0, len(lines)))
            lines.insert(row, data.draw(TEXT) + "\n")
        elif lines:
            row = data.draw(st.integers(0, len(lines) - 1))
            if kind == "delete-line":
                del lines[row]
            else:
                lines.insert(row, lines[row])
    return "".join(lines)


@BOUNDED
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_examples(capsys: pytest.CaptureFixture[str], example: Path, data: st.DataObject) -> None:
    raw = _mutate(example.read_text(), data).encode("utf-8", "surrogatepass")
    check(raw)
    check_cli(capsys, raw)


SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | TEXT
KEYS = st.sampled_from(sorted(set(APPLIED_KEYS) | {"name", "path", "content", "encoding", "permissions", "owner",
                                                 "groups", "servers", "pools", "enabled", "services", "update",
                                                 "policy", "image", "version", "boot", "tries", "healthcheck",
                                                 "test", "oneshot", "restart", "passwd"})) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=20)
TOP = st.dictionaries(st.sampled_from(sorted(set(APPLIED_KEYS) | set(sorted(CLOUD_INIT_KEYS)[:10]))) | TEXT,
                      VALUES, max_size=6)


def _dump(value: Any) -> bytes:
    buffer = io.StringIO()
    YAML(typ="safe", pure=True).dump(value, buffer)
    return ("#cloud-config\n" + buffer.getvalue()).encode("utf-8", "surrogatepass")


@BOUNDED
@given(TOP)
def test_arbitrary_yaml_data_under_cloud_config(capsys: pytest.CaptureFixture[str], value: dict[str, Any]) -> None:
    raw = _dump(value)
    check(raw)
    check_cli(capsys, raw)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["cloud-config", "x-shellscript", "plain", "x-include-url", "gzip"]),
                          TOP), min_size=1, max_size=4))
def test_arbitrary_mime_documents(parts: list[tuple[str, dict[str, Any]]]) -> None:
    message = MIMEMultipart()
    for subtype, value in parts:
        body = _dump(value)
        if subtype == "gzip":
            message.attach(MIMEApplication(gzip.compress(body), "gzip"))
        else:
            message.attach(MIMEText(body.decode("utf-8", "surrogatepass"), subtype, "utf-8"))
    check(message.as_bytes())
