"""Will a download fit? The figures of a preflight and the verdict, before the first byte moves.

A download that runs out of space half-way fails late, leaves partial layers behind, and can
break whatever else writes to that filesystem (the engine's own metadata, the journal). So
every download (registry or bundle) is first measured against the free bytes of each place it
writes to:

- the engine's data root: layers arrive compressed in the engine's tmp folder and are unpacked
  next to it, and the compressed copy stays until the layer is unpacked, so it needs the
  download *plus* the unpacked size (only for layers the engine does not hold yet);
- the host root: the version's boot files staged in the store (``domain.store``);
- the ESP: the kernel and initrd the loader reads (``domain.esp``).

Places on one filesystem (the ESP is ``<root>/boot`` by default) are summed and checked once
against its free bytes, with one margin. This module computes; it reads nothing
(``operations.preflight`` measures the places).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from osctl.adapters.engine import chain_ids
from osctl.domain import esp
from osctl.errors import SpaceError

__all__ = ["EXPANSION", "BOOT_ESTIMATE", "MARGIN_FLOOR", "ESP_MARGIN_FLOOR", "MARGIN_SHARE", "MARGIN_CAP", "Layer", "ImageNeed",
           "PlaceNeed", "Skipped", "SpaceReport", "chain_ids", "margin", "engine_need", "esp_need", "check", "human"]

MIB = 1 << 20
GIB = 1 << 30

EXPANSION = 3.0
"""How many bytes a compressed layer takes once unpacked: an estimate.

The engine stores layers unpacked, and a registry manifest says only how large each layer is
compressed. gzip shrinks the files of an OS userland (binaries, libraries, text) to a third to a
half; 3.0 is the high end of that, so the estimate errs towards refusing a download that would
just have fit (the message says how much to free) rather than letting one fail half-way. A layer
that is a plain tar is counted 1:1; an image whose unpacked size is declared uses that instead.
"""

BOOT_ESTIMATE = 32 * MIB
"""What a version's boot files are taken to weigh when they cannot be known before the download
(a registry pull: they are inside the image). The kernels and initrds osctl has met weigh about
10 MB together (``domain.esp``); three times that, so that an unusual initrd still fits."""

MARGIN_FLOOR = 32 * MIB
MARGIN_SHARE = 0.01
MARGIN_CAP = 1 * GIB
ESP_MARGIN_FLOOR = 1 * MIB

_PLAIN_TAR = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar",
              "application/vnd.docker.image.rootfs.diff.tar")


class Layer(NamedTuple):
    """One layer of an image to come, as its manifest and config describe it.

    ``size`` is the blob's (compressed) size, ``diff_id`` the digest of its unpacked tar (from
    the config's ``rootfs.diff_ids``; empty when unknown: then it and every layer above it count
    as missing). A NamedTuple, so ``(digest, size, diff_id)`` triples work as they are.
    """

    digest: str
    size: int
    diff_id: str
    media_type: str = ""  # empty: a registry's usual gzip layer

    @property
    def compressed(self) -> bool:
        return self.media_type not in _PLAIN_TAR

    @property
    def unpacked_estimate(self) -> int:
        return math.ceil(self.size * EXPANSION) if self.compressed else self.size


@dataclass(frozen=True)
class ImageNeed:
    """An image a download brings: its layers (base first) and, when someone declared it, the
    unpacked size of the whole image (then used instead of ``EXPANSION``)."""

    name: str
    layers: tuple[Layer, ...]
    unpacked: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(Layer(*layer) for layer in self.layers))

    @classmethod
    def of(cls, name: str, layers: Sequence[Any], diff_ids: Sequence[str], unpacked: int | None = None) -> ImageNeed:
        """The need of an image from its manifest's layer descriptors (``digest``, ``size``,
        ``media_type``; a registry's or a bundle's) and its config's diff ids, base first.

        Diff ids that do not line up with the layers leave them unknown, which counts every layer
        as missing: this is an estimate before the download, and the download checks the content.
        """
        diffs = list(diff_ids) if len(diff_ids) == len(layers) else [""] * len(layers)
        return cls(name, tuple(Layer(layer.digest, layer.size, diff, layer.media_type)
                               for layer, diff in zip(layers, diffs, strict=True)), unpacked)


@dataclass(frozen=True)
class PlaceNeed:
    """What one place must take: ``need`` bytes written, plus ``margin`` left free afterwards.

    ``device`` tells filesystems apart (``fsutil.Space.device``): places with the same one are
    checked together.
    """

    place: str  # "engine data root", "host root", "ESP"
    path: str
    need: int
    free: int
    margin: int
    device: int = 0

    @property
    def required(self) -> int:
        return self.need + self.margin


@dataclass(frozen=True)
class Skipped:
    """A place that could not be measured from here, and why (e.g. the engine is remote)."""

    place: str
    path: str
    why: str


@dataclass
class SpaceReport:
    """The figures of a preflight, for ``--dry-run``, the JSON plan and the progress bar.

    ``download``: compressed bytes still to fetch (layers the engine lacks); ``unpack``: their
    estimated unpacked size; ``boot``: the boot files' bytes.
    """

    places: list[PlaceNeed]
    download: int
    unpack: int
    boot: int
    skipped: list[Skipped] = field(default_factory=list)
    subject: str = "the download"
    keep_hint: int | None = None

    @property
    def fits(self) -> bool:
        return not _shortfalls(self.places)

    def check(self) -> None:
        check(self.places, subject=self.subject, keep_hint=self.keep_hint)

    def as_dict(self) -> dict[str, object]:
        groups = {id(p): fits for group, fits in _groups_with_verdict(self.places) for p in group}
        return {
            "download": self.download, "unpack_estimate": self.unpack, "boot": self.boot,
            "expansion": EXPANSION, "fits": self.fits,
            "places": [{"place": p.place, "path": p.path, "need": p.need, "margin": p.margin, "free": p.free,
                        "fits": groups[id(p)]} for p in self.places],
            "skipped": [{"place": s.place, "path": s.path, "why": s.why} for s in self.skipped],
        }

    def lines(self) -> list[str]:
        """The figures in words, one line each, for ``--dry-run``."""
        out = [f"to download: {human(self.download)} (about {human(self.unpack)} unpacked), "
               f"boot files: {human(self.boot)}"]
        for group, fits in _groups_with_verdict(self.places):
            need = sum(p.need for p in group) + max(p.margin for p in group)
            verdict = "fits" if fits else "DOES NOT FIT"
            out.append(f"{_where(group)}: needs {human(need)} (incl. a {human(max(p.margin for p in group))} "
                       f"margin), {human(group[0].free)} free: {verdict}")
        out += [f"the {s.place} ({s.path}): not checked, {s.why}" for s in self.skipped]
        return out


def margin(size: int, *, floor: int = MARGIN_FLOOR) -> int:
    """The bytes to leave free on a filesystem of ``size`` bytes after a download.

    A filesystem filled to its last byte breaks whatever else writes there (the engine's
    metadata database, logs), and the unpacked size is only an estimate: so some room is kept.
    1% scales with the disk; the floor (32 MiB) covers small disks, but never more than a tenth
    of the filesystem (a 40 MiB root keeps 4 MiB, not most of itself); the cap (1 GiB) keeps a
    large disk from reserving tens of GiB. The ESP, which only osctl writes, a few MiB at a time,
    takes a floor of 1 MiB (``ESP_MARGIN_FLOOR``): 32 MiB would refuse versions that fit a
    100 MiB partition.
    """
    return max(min(floor, size // 10), min(MARGIN_CAP, math.ceil(size * MARGIN_SHARE)))


def engine_need(images: Iterable[ImageNeed], present_chains: set[str]) -> tuple[int, int]:
    """(bytes to download, estimated bytes unpacked) for the layers the engine lacks.

    A layer is present when its ChainID is among ``present_chains`` (``Engine.layer_chains``);
    one shared by several of ``images`` is counted once. An image with a declared unpacked size
    counts the share of it that its missing layers make up (by compressed bytes).
    """
    seen: set[str] = set()
    download = unpack = 0
    for image in images:
        chains = _chains(image.layers)
        missing = []
        for layer, chain in zip(image.layers, chains, strict=True):
            if chain is not None:  # unknown (None): counted, since nothing says it is shared
                if chain in present_chains or chain in seen:
                    continue
                seen.add(chain)
            missing.append(layer)
        fetched = sum(layer.size for layer in missing)
        download += fetched
        total = sum(layer.size for layer in image.layers)
        if image.unpacked is not None and total > 0:
            unpack += math.ceil(image.unpacked * fetched / total)
        else:
            unpack += sum(layer.unpacked_estimate for layer in missing)
    return download, unpack


def esp_need(boot_bytes: int) -> int:
    """What a version's loader files take on the ESP: whole clusters of a small FAT32 (one
    partly used cluster per file, kernel and initrd), and the room ``esp.Esp.place`` keeps for
    the entries written after them."""
    if boot_bytes <= 0:
        return 0
    return -(-boot_bytes // esp.CLUSTER) * esp.CLUSTER + len(esp.LOADER_FILES) * esp.CLUSTER + esp.SLACK


def check(places: Sequence[PlaceNeed], *, subject: str = "the download", keep_hint: int | None = None) -> None:
    """Raise ``SpaceError`` when some filesystem cannot take what its places need plus a margin.

    One line naming each short filesystem's places and paths, the bytes needed (margin included)
    and the bytes free; the hint says how to make room.
    """
    short = _shortfalls(places)
    if not short:
        return
    parts = []
    for group in short:
        top = max(p.margin for p in group)
        need, free = sum(p.need for p in group) + top, group[0].free
        need_text, free_text = human(need), human(free)
        if need_text == free_text:  # too close for the units: say the bytes
            need_text, free_text = f"{need_text} ({need} bytes)", f"{free_text} ({free} bytes)"
        parts.append(f"{_where(group)}: needs {need_text} (incl. a {human(top)} margin), {free_text} free")
    keep = "N" if keep_hint is None else str(keep_hint)
    raise SpaceError(f"not enough space for {subject} on " + "; and on ".join(parts),
                     hint=f"free space there, e.g. osctl prune --keep {keep} removes the oldest stored versions")


def human(size: int) -> str:
    """Bytes in binary units, with a decimal or two: 80.2 MiB, 1.25 GiB, 512.0 KiB."""
    if size >= GIB:
        return f"{size / GIB:.2f} GiB"
    if size >= MIB:
        return f"{size / MIB:.1f} MiB"
    return f"{size / 1024:.1f} KiB"


def _chains(layers: Sequence[Layer]) -> list[str | None]:
    """Each layer's ChainID, or None from the first layer whose diff id is unknown upwards."""
    known = []
    for layer in layers:
        if not layer.diff_id:
            break
        known.append(layer.diff_id)
    ids: list[str | None] = list(chain_ids(known))
    return ids + [None] * (len(layers) - len(ids))


def _by_device(places: Sequence[PlaceNeed]) -> list[list[PlaceNeed]]:
    groups: dict[int, list[PlaceNeed]] = {}
    for place in places:
        if place.need > 0:
            groups.setdefault(place.device, []).append(place)
    return list(groups.values())


def _groups_with_verdict(places: Sequence[PlaceNeed]) -> list[tuple[list[PlaceNeed], bool]]:
    return [(g, sum(p.need for p in g) + max(p.margin for p in g) <= g[0].free) for g in _by_device(places)] + [
        ([p], True) for p in places if p.need <= 0]


def _shortfalls(places: Sequence[PlaceNeed]) -> list[list[PlaceNeed]]:
    return [group for group, fits in _groups_with_verdict(places) if not fits]


def _where(group: Sequence[PlaceNeed]) -> str:
    return " and ".join(f"the {p.place} ({p.path})" for p in group)
