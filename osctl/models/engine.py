"""What the engine adapter returns: plain data, so no layer above it ever sees a docker object."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EngineInfo:
    address: str
    version: str
    api_version: str


@dataclass(frozen=True)
class ImageInfo:
    id: str
    labels: dict[str, str]
    repo_digests: list[str]
    repo_tags: list[str]
    size: int
    created: str

    def digest_in(self, repository: str) -> str | None:
        """The manifest digest this image has in ``repository`` (``sha256:...``), if known."""
        for entry in self.repo_digests:
            repo, _, digest = entry.partition("@")
            if repo == repository:
                return digest
        return None


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    state: str
    image: str


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull: ``layer`` moved to ``current`` of ``total`` bytes (0 when unknown)."""

    image: str
    layer: str
    status: str
    current: int = 0
    total: int = 0
