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

from pydantic import AfterValidator, Field

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


class TrustSettings(DocumentModel):
    """The ``trust:`` key of the settings file and of the ``osctl:`` user-data section."""

    root: str | dict[str, Any] | None = Field(
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

