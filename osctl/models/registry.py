"""What the registry adapter returns about a repository's tags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TagManifest:
    """A tag as the registry serves it now: its manifest digest and the bytes a pull moves."""

    tag: str
    digest: str  # sha256:..., from the Docker-Content-Digest header (or computed from the body)
    size: int  # config + layer sizes from the manifest (compressed bytes); 0 for a manifest list
    media_type: str
