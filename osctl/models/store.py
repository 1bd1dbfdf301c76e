"""Records osctl keeps under the host root: what is stored, and what boots.

These are files osctl writes itself; they are still validated on read, because a disk can
hand back a truncated or corrupted file and the answer must then be a clear error, not a crash.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    # Unknown keys are kept out but tolerated: a newer osctl may add fields to its records.
    model_config = ConfigDict(extra="ignore", frozen=True)


class BootFile(_Record):
    """One boot artifact copied out of the OS image into ``<root>/boot/osctl/<version>/``."""

    source: str  # path inside the image
    name: str  # file name in the version's boot folder
    size: int
    sha256: str


class StoreRecord(_Record):
    """A stored version: everything needed to boot or switch to it without the network."""

    version: str
    repository: str
    digest: str  # manifest digest of the OS image in the registry (sha256:...)
    image_id: str  # the engine's image id (sha256:...)
    size: int  # bytes the OS image takes in the engine
    created: str = ""  # when the image was built
    stored_at: str  # when this host stored it (UTC, ISO 8601)
    pinned: bool = False
    # Images named by services (other than the OS image itself): reference -> engine image id.
    service_images: dict[str, str] = Field(default_factory=dict)
    boot_files: list[BootFile] = Field(default_factory=list)
    cmdline: str = ""
    # True when the digest was the one the release keys signed for this version when it was
    # stored (docs/trust.md): such a version boots and can be switched to offline.
    verified: bool = False

    @property
    def image_ids(self) -> set[str]:
        return {self.image_id, *self.service_images.values()}


class BootPointer(_Record):
    """What the boot loader starts: the default, the previous default, and an optional trial."""

    default: str | None = None
    previous: str | None = None
    trial: str | None = None
    trial_tries: int = 0

    @property
    def next_boot(self) -> str | None:
        return self.trial if self.trial and self.trial_tries > 0 else self.default
