"""Whether the release keys vouch for a version: the host side of signed releases (docs/trust.md).

With a trusted root configured (``trust.root``, ``--trust-root``, ``OSCTL_TRUST_ROOT``) and
``trust.mode`` not ``off``, a host

- installs new content only for a version the fresh, verified metadata signs and does not
  revoke, and only the signed digest (``require``): the registry's tag is never asked;
- switches to or boots into a stored version only if it was verified when stored (or the
  metadata signs its digest now), and no revocation the host has seen names it, offline too
  (``check_stored``): with the registry gone or the metadata expired, what the host last trusted
  decides, with one warning;
- without a root, works as before and says once per command that nothing is verified.

One ``HostTrust`` per invocation (``for_settings``): the metadata is refreshed at most once per
command, and each warning is given once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from osctl.adapters.registry import Registry
from osctl.constants import TUF_DIR
from osctl.domain.settings import Settings
from osctl.errors import OsctlError, RegistryUnavailable, TrustError
from osctl.models.store import StoreRecord
from osctl.models.trust import ReleaseIndex, SignedRelease

if TYPE_CHECKING:  # python-tuf and its crypto cost ~0.2 s to import: only hosts with a root pay it
    from osctl.adapters.tufclient import TufClient

log = logging.getLogger(__name__)  # the CLI shows this logger's warnings as `warning:` lines

CACHE_DIR = TUF_DIR
TUF_SUFFIX = "-tuf"


def metadata_repository(image: str) -> str:
    """The registry repository that holds the release metadata of the OS image repository ``image``."""
    return image + TUF_SUFFIX


@dataclass
class HostTrust:
    settings: Settings
    _index: ReleaseIndex | None = None
    _client: TufClient | None = None
    _said: set[str] = field(default_factory=set)
    _failed: OsctlError | None = None  # a refresh that failed: not tried again in this command

    @property
    def enforced(self) -> bool:
        return self.settings.trust.enforced

    @property
    def cache(self) -> Path:
        return self.settings.root / CACHE_DIR

    def note_unverified(self) -> None:
        """Say once per command that nothing is verified, when that is so: after what was not
        verified was listed or stored, so that an error (the registry down) stays one line."""
        trust = self.settings.trust
        if trust.root is None:
            self._warn("unverified", "no trust root is configured: versions are not verified against release keys "
                       "(set trust.root, see docs/trust.md)")
        elif trust.mode == "off":
            self._warn("unverified", "trust.mode is off: versions are not verified against the release keys")

    def index(self) -> ReleaseIndex:
        """The fresh, verified metadata (refreshed once per command); raises what the refresh met."""
        if self._failed is not None:
            raise self._failed
        if self._index is None or not self._index.fresh:
            try:
                self._index = self._new_client().refresh()
            except (RegistryUnavailable, TrustError) as exc:  # its retries were paid once
                self._failed = exc
                raise
        return self._index

    def offline_files(self) -> dict[str, bytes]:
        """The metadata files a host needs to verify what this one trusts now, offline (a bundle)."""
        self.index()
        assert self._client is not None
        return self._client.files_for_offline()

    def known(self) -> ReleaseIndex | None:
        """What the host last trusted, read offline (expiry not checked); None if it never refreshed."""
        if self._index is not None:
            return self._index
        from osctl.adapters.tufclient import read_index

        return read_index(self.cache)

    def require(self, version: str) -> SignedRelease:
        """The signed release of ``version`` for installing new content; ``TrustError`` otherwise.

        Needs fresh metadata: new content never installs on expired or unreachable metadata.
        The manifest the signed digest names is fetched and checked by TUF (length and hash).
        """
        index = self.index()
        refusal = index.refusal(version)
        if refusal is not None:
            raise TrustError(f"{version} is {refusal}; refused", hint=signed_hint(index, version))
        assert self._client is not None
        return self._client.check_manifest(version)

    def check_stored(self, record: StoreRecord) -> None:
        """May this host switch to or boot into the stored ``record``? ``TrustError`` if not.

        Fresh metadata when it can be had; else what the host last trusted, with one warning.
        """
        if not self.enforced:
            return
        try:
            index = self.index()
        except (RegistryUnavailable, TrustError) as exc:
            index = self.known()
            self._warn("offline", f"the release metadata could not be refreshed ({exc.message}); going by what "
                       "this host last trusted" + ("" if index is None else f" (targets version {index.targets_version})"))
        self.check_known(record, index)

    def check_known(self, record: StoreRecord, index: ReleaseIndex | None) -> None:
        """The offline rule: a seen revocation wins; otherwise verified when stored, or signed now."""
        version = record.version
        if index is not None and (revoked := index.revocation(version)) is not None:
            raise TrustError(f"{version} is {revoked}; refused",
                             hint="a revoked version is never installed or booted again; pick another")
        signed = index.release(version) if index is not None else None
        if signed is not None and signed.digest != record.digest:
            raise TrustError(f"the stored {version} is {record.digest[:19]}..., but the release keys sign "
                             f"{signed.digest[:19]}... for it; refused", hint=f"osctl prune, then osctl pull {version}")
        if not record.verified and signed is None:
            raise TrustError(f"the stored {version} was not verified when it was stored, and the release metadata "
                             "does not vouch for it; refused", hint=f"osctl pull {version} once the metadata signs it")

    def warn_if_revoked(self, version: str) -> None:
        """Booting the default version is never refused (the host would have nothing to run), but a
        revocation the host has seen for it is said, once."""
        index = self.known() if self.enforced else None
        revoked = index.revocation(version) if index is not None else None
        if revoked is not None:
            self._warn("running-revoked", f"{version}, the version this host boots, is {revoked}; move to a "
                       "version the release keys vouch for (osctl list-versions)")

    def _new_client(self) -> TufClient:
        from osctl.adapters.tufclient import TufClient

        trust = self.settings.trust
        assert trust.root is not None, "refresh without a trust root"
        if self.settings.bundle is not None:  # --from: the bundle's copy of the metadata, judged alike
            from osctl.operations.bundlesource import bundle_metadata

            self._client = TufClient(self.cache, trust.root, metadata=bundle_metadata(self.settings), images=None)
            return self._client
        image = self.settings.require_image()
        images = Registry(image)
        metadata: Registry | str = trust.metadata_url or Registry(metadata_repository(image))
        self._client = TufClient(self.cache, trust.root, metadata=metadata, images=images)
        return self._client

    def _warn(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning("%s", message)


def for_settings(settings: Settings) -> HostTrust:
    """The one ``HostTrust`` of this invocation."""
    found = settings.memo.get("trust")
    if not isinstance(found, HostTrust):
        found = HostTrust(settings)
        settings.memo["trust"] = found
    return found


def signed_hint(index: ReleaseIndex, version: str) -> str:
    """The signed versions nearest to ``version`` that may be installed: what the user likely meant."""
    from osctl.models.version import OsVersion

    usable = sorted(OsVersion.parse(v) for v in index.installable())
    if not usable:
        return "the release keys sign no version that may be installed"
    asked = OsVersion.parse(version)
    near = [v for v in usable if v < asked][-1:] + [v for v in usable if v > asked][:1]
    return "nearest signed: " + ", ".join(v.tag for v in near) + " (osctl list-versions shows them all)"
