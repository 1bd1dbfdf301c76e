"""What osctl learned about images in the registry, kept by digest: whether a tag is an OS image.

Knowing a tag is not a valid OS image must not cost a pull (``list-versions`` checks 200 tags),
so two facts are kept, each under the digest it is true of, and so true forever:

- the ``io.osctl.os.version`` label of an image config blob (``<config hex>.json``), read
  from the registry once (``Registry.image_labels``);
- why a pull of a manifest found it not to be an OS image (``<manifest hex>.json``): the one
  thing only a pull can tell (the release manifest inside differs from the tag, say).

Files under ``<root>/var/lib/osctl/cache/images/``. A cache: any of it may be removed, and a
file that cannot be read or written (a read-only root, damage) is as if it were not there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from osctl.adapters import fsutil
from osctl.constants import STATE_DIR
from osctl.errors import StateError
from osctl.models.refs import Digest

log = logging.getLogger(__name__)

CACHE_DIR = f"{STATE_DIR}/cache/images"
NO_LABEL = ""  # how "the config has no version label" is written ("" is never a version)


class ImageFacts:
    """The facts kept for one host root; nothing is read before it is asked for."""

    def __init__(self, root: Path) -> None:
        self.folder = root / CACHE_DIR

    def version_label(self, config: Digest) -> str | None:
        """The config's version label; ``""`` when it has none; None when not known yet."""
        value = self._read(config).get("os_version")
        return value if isinstance(value, str) else None

    def remember_label(self, config: Digest, label: str | None) -> None:
        self._write(config, {"os_version": label or NO_LABEL})

    def failure(self, manifest: Digest) -> str | None:
        """Why a pull of ``manifest`` found it not to be an OS image, if one did."""
        value = self._read(manifest).get("not_an_os_image")
        return value if isinstance(value, str) and value else None

    def remember_failure(self, manifest: Digest, reason: str) -> None:
        self._write(manifest, {"not_an_os_image": reason[:500]})

    def forget_failure(self, manifest: Digest) -> None:
        """A pull of ``manifest`` passed (a newer osctl may judge what an older one refused)."""
        try:
            self._path(manifest).unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cannot forget what was known of %s: %s", manifest[:19], exc)

    def _path(self, digest: Digest) -> Path:
        return self.folder / f"{Digest(digest).hex}.json"

    def _read(self, digest: Digest) -> dict[str, object]:
        try:
            text = fsutil.read_text(self._path(digest))
            value = json.loads(text) if text is not None else {}
        except (StateError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _write(self, digest: Digest, value: dict[str, str]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write(self._path(digest), json.dumps(value) + "\n")
        except (OSError, StateError) as exc:  # a cache: the next run asks the registry again
            log.debug("cannot keep what is known of %s: %s", digest[:19], exc)

