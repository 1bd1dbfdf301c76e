"""Preflight: measure the places a download writes to, and refuse it before its first byte when
it would not fit (``domain.preflight`` says what is needed and decides; this looks).

Called by ``pull`` (registry) and bundle loading with the images to come and the size of the
version's boot files; a refusal is a ``SpaceError`` (exit 8) and nothing has changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any
from pathlib import Path

from osctl.adapters import fsutil
from osctl.adapters.engine import Engine
from osctl.adapters.registry import Registry
from osctl.domain.preflight import (
    ESP_MARGIN_FLOOR,
    ImageNeed,
    PlaceNeed,
    Skipped,
    SpaceReport,
    engine_need,
    esp_need,
    margin,
)
from osctl.domain import esp
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import OsctlError
from osctl.models.refs import Digest
from osctl.models.store import BootFile

ENGINE_PLACE, ROOT_PLACE, ESP_PLACE = "engine data root", "host root", "ESP"


def preflight(settings: Settings, engine: Engine, images: Sequence[ImageNeed], boot_bytes: int, *,
              subject: str = "the download", esp_bytes: int | None = None) -> SpaceReport:
    """The figures of this download; raises ``SpaceError`` when a place cannot take its share.

    ``subject`` names what is downloaded in the message ("v1.6"). ``boot_bytes``: the version's
    boot files (kernel, initrd, release.yaml), staged under the host root; when the caller cannot
    know them before the download, an upper estimate. ``esp_bytes``: what goes on the ESP
    (default ``boot_bytes``; 0 when nothing will).
    """
    report = measure(settings, engine, images, boot_bytes, subject=subject, esp_bytes=esp_bytes)
    report.check()
    return report


def measure(settings: Settings, engine: Engine, images: Sequence[ImageNeed], boot_bytes: int, *,
            subject: str = "the download", esp_bytes: int | None = None) -> SpaceReport:
    """``preflight`` without the verdict: the figures, for ``--dry-run`` and the JSON plan
    (``SpaceReport.fits`` and ``check()`` give the verdict)."""
    present = engine.layer_chains() if images else set()
    download, unpack = engine_need(images, present)
    places: list[PlaceNeed] = []
    skipped: list[Skipped] = []
    if download:
        _engine_place(engine, download + unpack, places, skipped)
    if boot_bytes > 0:
        _local_place(ROOT_PLACE, str(settings.root), Store(settings.root).records_dir, boot_bytes, places)
    esp_total = esp_need(boot_bytes if esp_bytes is None else esp_bytes)
    if esp_total > 0:
        _local_place(ESP_PLACE, str(settings.esp), settings.esp, esp_total, places, floor=ESP_MARGIN_FLOOR)
    return SpaceReport(places, download, unpack, boot_bytes, skipped, subject=subject,
                       keep_hint=_keep_hint(settings))


def esp_bytes(settings: Settings, files: dict[str, tuple[int, bytes | None]]) -> int:
    """The bytes of a version's loader files (loader name -> size and content) that the ESP does
    not hold yet. Versions that share a kernel share its file there (``domain.esp``), so only
    new content needs room; a file too large to have been read counts whole."""
    folder = esp.Esp(settings.esp).files_dir
    missing = 0
    for name, (size, data) in files.items():
        if data is not None:
            held = BootFile(source="", name=name, size=size, sha256=hashlib.sha256(data).hexdigest())
            path = folder / esp.file_name(held)
            if path.is_file() and path.stat().st_size == size:
                continue
        missing += size
    return missing


def registry_need(registry: Registry, digest: Digest, name: str) -> ImageNeed:
    """What pulling the image ``digest`` of ``registry`` brings: its layers, from its manifest and
    config (two small requests; the layers themselves are not touched)."""
    image = registry.image_manifest(digest)
    return ImageNeed.of(name, image.layers, diff_ids(registry.image_config(image.config.digest, name)))


def diff_ids(config: dict[str, Any]) -> list[str]:
    """An image config's ``rootfs.diff_ids`` (empty when it has none that are text: an estimate
    then counts every layer as missing)."""
    rootfs = config.get("rootfs")
    found = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [d for d in found if isinstance(d, str)] if isinstance(found, list) else []


def _engine_place(engine: Engine, need: int, places: list[PlaceNeed], skipped: list[Skipped]) -> None:
    """The engine's data root, measured only where it is this machine's folder.

    With ``DOCKER_HOST`` naming another machine (tcp://, ssh://) a local folder of that name,
    if any, belongs to another engine; a unix socket's engine may still keep its data where this
    process cannot see it (another mount namespace). Either way it is skipped, and said.
    """
    root = engine.data_root()
    if not engine.address.startswith("unix://"):
        skipped.append(Skipped(ENGINE_PLACE, root or "?", f"the engine at {engine.address} is on another machine"))
        return
    if not root or not os.path.isdir(root):
        skipped.append(Skipped(ENGINE_PLACE, root or "?", "that folder is not on this machine"))
        return
    _local_place(ENGINE_PLACE, root, Path(root), need, places)


def _local_place(place: str, shown: str, path: Path, need: int, places: list[PlaceNeed], *,
                 floor: int | None = None) -> None:
    space = fsutil.free_space(path)
    kept = margin(space.size) if floor is None else margin(space.size, floor=floor)
    places.append(PlaceNeed(place, shown, need, space.free, kept, space.device))


def _keep_hint(settings: Settings) -> int | None:
    """A ``--keep`` for the hint that would remove the oldest stored version (None: say N)."""
    try:
        stored = len(Store(settings.root).records())
    except OsctlError:
        return None
    return stored - 1 if stored > 1 else None
