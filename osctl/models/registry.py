"""What the registry adapter returns about a repository's tags: typed values only.

Everything here was parsed at the adapter's edge (``osctl.adapters.registry``): a digest is a
``Digest``, a size an int, so nothing above the adapter handles the registry's raw text.
"""

from __future__ import annotations

from dataclasses import dataclass

from osctl.models.refs import Digest


@dataclass(frozen=True)
class TagManifest:
    """A tag as the registry serves it now: its manifest digest and the bytes a pull moves."""

    tag: str
    digest: Digest  # from the Docker-Content-Digest header, checked against the body
    size: int  # config + layer sizes from the manifest (compressed bytes); 0 for a manifest list
    media_type: str
    config: Digest | None = None  # the image config blob (its labels); None for a manifest list


@dataclass(frozen=True)
class Unreadable:
    """A tag whose manifest the registry serves in a form osctl refuses: why, in one line."""

    tag: str
    reason: str


@dataclass(frozen=True)
class Descriptor:
    """One blob a manifest names: its digest, its declared size, and what it is."""

    digest: Digest
    size: int
    media_type: str


@dataclass(frozen=True)
class ImageManifest:
    """A single-platform image manifest as served: its own bytes, its config and its layers.

    ``body`` is kept byte for byte: its digest is what a registry, a store record and the release
    keys know the image by, so a copy (a bundle) must carry these bytes and not a re-encoding.
    """

    digest: Digest
    media_type: str
    body: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)
