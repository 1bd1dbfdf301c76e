"""What the release keys vouch for, as typed values: the settings that name a trusted root, and
the signed releases a host learned from verified metadata.

Parsing and verifying the metadata is the TUF adapter's job (``osctl.adapters.tufclient``);
what is here was already verified when it was built, so the rules that decide what a host may
install (``ReleaseIndex.refusal``) are plain comparisons, testable without a key.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from osctl.models.base import DocumentModel
from osctl.models.refs import Digest
from osctl.models.version import try_parse

TrustMode = Literal["enforce", "off"]


def validate_metadata_url(value: str) -> str:
    """An http(s) URL of a folder served by a static web server (no credentials, no query)."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{value[:80]!r} is not an http(s) URL of a folder (e.g. https://releases.example/os/)")
    if parts.username or parts.password:
        raise ValueError("a metadata URL carries no credentials: the metadata is public, its signatures protect it")
    return value


def _root_value(value: object) -> object:
    """A path (a non-empty string) or the root document inline (a mapping shaped like TUF root
    metadata); anything else is one message, not pydantic's one per member of the union.

    Only the shape is looked at here (models do no I/O and know no TUF): whether it is valid,
    correctly signed root metadata is python-tuf's to say when the root is used.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text or "\0" in value:
            raise ValueError("the trusted root is a path to root.json, or the root document inline; not an empty string")
        if text.startswith("{"):
            raise ValueError("this is a string, not a mapping: give the root document inline unquoted (JSON is YAML), "
                             "or a path to root.json")
        return value
    if isinstance(value, dict):
        signed = value.get("signed")
        if not isinstance(signed, dict) or signed.get("_type") != "root" or not isinstance(value.get("signatures"), list):
            raise ValueError("an inline root is the root.json document itself: a mapping with 'signatures' and "
                             "'signed' (whose _type is root)")
        return value
    kind = ("a boolean" if isinstance(value, bool) else "a number" if isinstance(value, int | float)
            else "a list" if isinstance(value, list) else "binary data" if isinstance(value, bytes)
            else type(value).__name__)
    raise ValueError(f"the trusted root is a path to root.json or the root document inline (a mapping), not {kind}")


class TrustSettings(DocumentModel):
    """The ``trust:`` key of the settings file and of the ``osctl:`` user-data section."""

    root: Annotated[str | dict[str, Any], BeforeValidator(_root_value)] | None = Field(
        default=None,
        description="the root metadata hosts trust: a path to root.json (relative paths are read from the "
                    "settings file's folder), or the document itself, inline")
    mode: TrustMode | None = Field(
        default=None, description="enforce (the default whenever a root is configured) or off")
    metadata_url: Annotated[str, AfterValidator(validate_metadata_url)] | None = Field(
        default=None, description="read the metadata from this plain TUF folder instead of the registry's "
                                  "<image>-tuf repository")


@dataclass(frozen=True)
class SignedRelease:
    """One version as the targets metadata signs it."""

    version: str
    digest: Digest  # the OS image's manifest digest: the only content a host takes for this version
    length: int  # the manifest's length in bytes
    repository: str | None = None  # where the publisher found it (informative: mirrors may differ)
    revoked: str | None = None  # the reason given at revoke; None while it is not revoked
    revoked_at: str | None = None


@dataclass(frozen=True)
class ReleaseIndex:
    """Everything the trusted targets metadata says, and how fresh that statement is."""

    releases: dict[str, SignedRelease]
    floor: str | None = None  # every version below it is revoked (the anti-rollback index)
    floor_reason: str | None = None
    expires: datetime = field(default_factory=lambda: datetime.max.replace(tzinfo=UTC))  # the earliest role's
    expiring_role: str = "timestamp"
    root_version: int = 1
    targets_version: int = 1
    fresh: bool = True  # refreshed from the repository now; False: the last trusted copy, read offline

    def release(self, version: str) -> SignedRelease | None:
        return self.releases.get(version)

    def revocation(self, version: str) -> str | None:
        """Why ``version`` is revoked (at revoke, or by the floor); None while it is not."""
        release = self.releases.get(version)
        if release is not None and release.revoked:
            return f"revoked: {release.revoked}"
        parsed, floor = try_parse(version), try_parse(self.floor) if self.floor else None
        if parsed is not None and floor is not None and parsed < floor:
            why = f": {self.floor_reason}" if self.floor_reason else ""
            return f"revoked: older than the signed minimum version {self.floor}{why}"
        return None

    def refusal(self, version: str) -> str | None:
        """Why a host must not install ``version``; None when the release keys vouch for it."""
        if version not in self.releases:
            return "not signed by the release keys"
        return self.revocation(version)

    def installable(self) -> list[str]:
        """Signed, not revoked versions, newest first."""
        found = [(parsed, name) for name in self.releases if (parsed := try_parse(name)) is not None
                 and self.refusal(name) is None]
        return [name for _, name in sorted(found, reverse=True)]

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expires

