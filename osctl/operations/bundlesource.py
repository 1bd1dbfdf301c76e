"""The bundle of this invocation (``--from FILE``), opened once, and its release metadata for TUF.

A command given ``--from`` takes every new version from that file instead of the registry: the
pull, the choice of the newest version, and the release metadata the host verifies (the same
TUF client, the same trusted root and the same rollback floor as for a registry; only the place
the bytes come from differs). The file is parsed once per invocation and shared, as the
refreshed metadata is (``Settings.memo``).
"""

from __future__ import annotations

from dataclasses import dataclass

from osctl.adapters.ocibundle import MAX_INDEX, Bundle
from osctl.domain.settings import Settings
from osctl.errors import BundleError
from osctl.models.refs import Digest


def open_bundle(settings: Settings) -> Bundle:
    """The bundle ``--from`` names, parsed (once per invocation); ``BundleError`` if it is not one."""
    assert settings.bundle is not None, "open_bundle() without --from"
    found = settings.memo.get("bundle")
    if not isinstance(found, Bundle):
        found = Bundle(settings.bundle)
        settings.memo["bundle"] = found
    return found


def bundle_repository(bundle: Bundle) -> str | None:
    """The OS image repository the bundle's versions were made from (None when it holds none)."""
    names = {entry.name.rsplit(":", 1)[0] for entry in bundle.entries if entry.role == "os"}
    if len(names) > 1:
        raise BundleError(f"{bundle.path} holds versions of several OS image repositories "
                          f"({', '.join(sorted(names)[:3])}); osctl cannot tell which is this host's",
                          hint="make one bundle per OS image repository")
    return next(iter(names), None)


@dataclass(frozen=True)
class BundleMetadata:
    """A bundle as TUF's source of metadata and signed manifests (``tufclient.LocalMetadata``)."""

    bundle: Bundle

    @property
    def name(self) -> str:
        return f"bundle {self.bundle.path}"

    def metadata_file(self, name: str) -> bytes | None:
        return self.bundle.metadata_file(name)

    def manifest(self, digest: Digest) -> bytes | None:
        try:
            return self.bundle.blob_bytes(digest, MAX_INDEX)
        except BundleError:
            return None


def bundle_metadata(settings: Settings) -> BundleMetadata:
    return BundleMetadata(open_bundle(settings))
