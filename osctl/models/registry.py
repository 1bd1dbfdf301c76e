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
