"""What a host may install or boot, by the rules of signed releases (docs/trust.md), without keys.

The metadata's verification is python-tuf's (tested with real keys in tests/integration/
test_trust.py); these are the decisions osctl makes from what was verified: revoked versions,
the signed floor, the offline rule for stored versions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from osctl.domain.settings import Settings
from osctl.errors import TrustError
from osctl.models.refs import Digest
from osctl.models.store import StoreRecord
from osctl.models.trust import ReleaseIndex, SignedRelease
from osctl.operations.trust import HostTrust

A = Digest("sha256:" + "a" * 64)
B = Digest("sha256:" + "b" * 64)


def index(**revoked: str) -> ReleaseIndex:
    releases = {v: SignedRelease(v, A, 100, revoked=revoked.get(v.replace(".", "_"))) for v in
                ("v1.2", "v1.3", "v1.4", "v1.5-rc1", "v1.5")}
    return ReleaseIndex(releases, floor="v1.3", floor_reason="CVE-2026-1", targets_version=4)


def test_unsigned_revoked_and_below_the_floor_are_refused_with_their_reason() -> None:
    found = index(v1_4="broken network")
    assert found.refusal("v1.9") == "not signed by the release keys"
    assert found.refusal("v1.4") == "revoked: broken network"
    assert found.refusal("v1.2") == "revoked: older than the signed minimum version v1.3: CVE-2026-1"
    assert found.refusal("v1.3") is None
    assert found.installable() == ["v1.5", "v1.5-rc1", "v1.3"]


def test_expiry_is_the_earliest_roles() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert not ReleaseIndex({}, expires=soon).expired()
    assert ReleaseIndex({}, expires=soon).expired(soon)


def record(version: str, digest: Digest = A, verified: bool = True) -> StoreRecord:
    return StoreRecord(version=version, repository="127.0.0.1:5000/osctl/os", digest=digest,
                       image_id="sha256:" + "c" * 64, size=1, stored_at="2026-11-29T00:00:00+00:00",
                       verified=verified)


@pytest.fixture
def trust(tmp_path: Path) -> HostTrust:
    root = tmp_path / "root.json"
    root.write_text("{}")
    return HostTrust(Settings(str(tmp_path), "h1", "127.0.0.1:5000/osctl/os", env={},
                              trust_root_option=str(root)))


def test_offline_a_seen_revocation_wins_over_a_verified_store(trust: HostTrust) -> None:
    with pytest.raises(TrustError, match="v1.4 is revoked: broken network; refused"):
        trust.check_known(record("v1.4"), index(v1_4="broken network"))
    with pytest.raises(TrustError, match="older than the signed minimum version v1.3"):
        trust.check_known(record("v1.2"), index())


def test_offline_a_verified_version_passes_with_no_metadata_at_all(trust: HostTrust) -> None:
    trust.check_known(record("v1.4"), None)


def test_an_unverified_stored_version_needs_the_metadata_to_sign_its_digest(trust: HostTrust) -> None:
    trust.check_known(record("v1.4", verified=False), index())  # signed now: fine
    with pytest.raises(TrustError, match="not verified when it was stored"):
        trust.check_known(record("v1.4", verified=False), None)
    with pytest.raises(TrustError, match="the release keys sign sha256:aaaa"):
        trust.check_known(record("v1.4", digest=B), index())
