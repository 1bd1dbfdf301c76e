"""The expanded-size and tag check on YAML node graphs (osctl.domain.yamlbounds)."""

from __future__ import annotations

import time

import pytest

from osctl.domain import yamlbounds
from osctl.domain.yamlbounds import MAX_EXPANDED_BYTES, Refused, load


def doubling(levels: int, leaf: str = "x") -> str:
    """Each level two aliases of the one before: 2^levels copies of ``leaf`` once expanded."""
    lines = [f"a0: &a0 {leaf}"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_the_check_is_linear_in_the_graph_not_in_the_expansion() -> None:
    started = time.monotonic()
    with pytest.raises(Refused, match="more than 1000000 values"):
        load(doubling(200))  # 2^200 values: summed once per node, never walked
    assert time.monotonic() - started < 2


def test_bytes_are_bounded_as_well_as_values() -> None:
    leaf = "y" * 1000
    assert load(doubling(12, leaf))  # 4096 copies of 1 kB: 4 MB of text, fewer than 10^4 values
    with pytest.raises(Refused, match=f"more than {MAX_EXPANDED_BYTES >> 20} MiB of text"):
        load(doubling(14, leaf))  # 16 MB


def test_keys_and_merge_keys_count() -> None:
    big = "k" * (256 << 10)  # an explicit key (?): plain keys are limited to 1024 characters
    text = f"base: &b\n  ? {big}\n  : 1\n" + "".join(f"m{i}: {{<<: *b}}\n" for i in range(40))
    with pytest.raises(Refused, match="MiB of text"):
        load(text)


def test_a_cycle_is_refused_where_it_closes() -> None:
    with pytest.raises(Refused) as caught:
        load("a: &x\n  b: [*x]\n")
    assert caught.value.issue.path == "a.b[0]" and "refers to a node that contains it" in caught.value.issue.message


@pytest.mark.parametrize(("text", "tag"), [("a: !!set {x}\n", "!!set"), ("a: !!binary aGk=\n", "!!binary"),
                                           ("a: !!omap [x: 1]\n", "!!omap"), ("a: !mine x\n", "!mine"),
                                           ("a: !!pairs [x: 1]\n", "!!pairs")])
def test_tags_beyond_plain_yaml_are_refused_with_their_place(text: str, tag: str) -> None:
    with pytest.raises(Refused) as caught:
        load(text)
    issue = caught.value.issue
    assert (issue.path, issue.line, issue.column) == ("a", 1, 4) and f"YAML tag {tag} is not allowed" in issue.message


def test_binary_only_when_asked_for() -> None:
    assert load("a: !!binary aGk=\n", binary=True)["a"] == b"hi"


def test_plain_yaml_is_built_as_before() -> None:
    data = load("a: [1, 2.5, true, null, 2024-01-01, '!!set']\nb: &x {k: v}\nc: {<<: *x, j: w}\n")
    assert data["a"][:4] == [1, 2.5, True, None] and data["c"]["k"] == "v"
    assert yamlbounds.PLAIN_TAGS >= {"tag:yaml.org,2002:str", "tag:yaml.org,2002:map"}
