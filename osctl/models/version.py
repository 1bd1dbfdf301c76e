"""OS versions: tags like ``v1.4`` or ``1.4.2`` ordered as versions, not as strings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

from packaging.version import InvalidVersion, Version

from osctl.errors import UsageError

# A Docker tag is at most 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@total_ordering
@dataclass(frozen=True)
class OsVersion:
    """A version tag and its parsed value; equal tags compare equal, ``v`` prefix optional."""

    tag: str
    value: Version = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> OsVersion:
        """Parse a tag; raise ``UsageError`` with the reason when it is not a version."""
        version = try_parse(text)
        if version is None:
            raise UsageError(
                f"{text!r} is not a version",
                hint="versions look like v1.4 or 1.4.2 (an optional 'v', then numbers and dots)",
            )
        return version

    @property
    def is_prerelease(self) -> bool:
        return self.value.is_prerelease or self.value.is_devrelease

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OsVersion):
            return NotImplemented
        return (self.value, self.tag) < (other.value, other.tag)

    def __str__(self) -> str:
        return self.tag


def try_parse(text: object) -> OsVersion | None:
    """The version a tag names, or None for tags that are not versions (``latest``, ``main``)."""
    if not isinstance(text, str) or not _TAG.fullmatch(text):
        return None
    body = text[1:] if text[:1] in ("v", "V") else text
    if not body[:1].isdigit():
        return None
    try:
        value = Version(body)
    except InvalidVersion:
        return None
    if value.local is not None or value.epoch:
        return None
    return OsVersion(text, value)


def validate_version_tag(text: object) -> str:
    """Pydantic validator: accept a version tag string, else explain why not."""
    if not isinstance(text, str):
        raise ValueError("a version must be a string like 'v1.4'")
    if try_parse(text) is None:
        raise ValueError(f"{text!r} is not a version (use e.g. v1.4 or 1.4.2)")
    return text
