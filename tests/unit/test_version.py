from __future__ import annotations

import pytest

from osctl.errors import UsageError
from osctl.models.version import OsVersion, try_parse


def test_versions_sort_by_version_not_by_text() -> None:
    tags = ["v1.10", "v1.9", "v1.4.2", "1.4", "v2.0.0-rc1", "v1.4.10"]
    assert [str(v) for v in sorted(OsVersion.parse(t) for t in tags)] == [
        "1.4", "v1.4.2", "v1.4.10", "v1.9", "v1.10", "v2.0.0-rc1"]


def test_prerelease_is_known() -> None:
    assert OsVersion.parse("v2.0.0-rc1").is_prerelease
    assert not OsVersion.parse("v2.0.0").is_prerelease


@pytest.mark.parametrize("tag", ["latest", "main", "", "v", "vx1", "1.0+local", "-1.0", "a" * 200, "v1.4 ", "1!2.0"])
def test_non_versions_are_ignored(tag: str) -> None:
    assert try_parse(tag) is None


def test_parse_explains_a_bad_version() -> None:
    with pytest.raises(UsageError, match="'latest' is not a version"):
        OsVersion.parse("latest")


def test_equal_tags_are_equal() -> None:
    assert OsVersion.parse("v1.4") == OsVersion.parse("v1.4")
    assert OsVersion.parse("v1.4") != OsVersion.parse("1.4")
