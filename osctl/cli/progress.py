"""Pull progress: one rich bar per image, in bytes, on stderr, only for a person at a terminal.

When the total to download is known (given, or handed over as the preflight's ``SpaceReport``
through the same callback), one more bar shows the bytes fetched of that total across all
images: per-image bars cannot tell how much of the whole pull is left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from osctl.cli import render

if TYPE_CHECKING:
    from osctl.domain.preflight import SpaceReport
    from osctl.models.engine import PullProgress

    Update = Callable[[PullProgress | SpaceReport], None]

DONE = ("Pull complete", "Already exists", "Download complete")
FETCHED = ("Download complete", "Verifying Checksum", "Extracting", "Pull complete")  # all of the layer is here
TOTAL_LABEL = "all images"


class Totals:
    """Bytes fetched of the whole download, from the engine's per-layer events.

    Only "Downloading" moves a layer's count (its "Extracting" events count the same bytes
    again); a layer is counted once however many images share it, and one the engine already
    had ("Already exists") is not part of the total, as the preflight does not count it either.
    """

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self._layers: dict[str, tuple[int, int]] = {}  # layer -> (fetched, size)

    def add(self, event: PullProgress) -> None:
        fetched, size = self._layers.get(event.layer, (0, 0))
        if event.status == "Downloading" and event.total:
            self._layers[event.layer] = (max(fetched, event.current), event.total)
        elif event.status in FETCHED and size:
            self._layers[event.layer] = (size, size)

    def done_all(self) -> None:
        """The download is over: every byte of the total is here."""
        self._layers = {"": (self.total or 0, self.total or 0)}

    @property
    def done(self) -> int:
        return sum(fetched for fetched, _ in self._layers.values())


@contextlib.contextmanager
def pull_bars(enabled: bool, total: int | None = None) -> Iterator[Update | None]:
    """Yield a progress callback (None when quiet: no terminal, --quiet or --json).

    ``total``: the bytes the whole pull downloads, when known now; otherwise the callback takes
    it from a ``SpaceReport`` handed to it before the first byte (its ``download``).
    """
    if not enabled or not render.stderr.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from osctl.domain.preflight import SpaceReport

    layers: dict[str, dict[str, tuple[int, int]]] = {}
    tasks: dict[str, int] = {}
    totals = Totals(total)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=render.stderr, transient=False) as bars:
        overall: list[int] = []  # the task of the whole, once there is a total

        def show_total() -> None:
            if totals.total is None:
                return
            if not overall:
                overall.append(bars.add_task(TOTAL_LABEL, total=totals.total))
            bars.update(overall[0], completed=min(totals.done, totals.total), total=totals.total)

        def update(event: PullProgress | SpaceReport) -> None:
            if isinstance(event, SpaceReport):
                totals.total = event.download
                show_total()
                return
            image = layers.setdefault(event.image, {})
            done_before = image.get(event.layer, (0, 0))
            if event.total:
                image[event.layer] = (event.current, event.total)
            elif event.status in DONE and done_before[1]:
                image[event.layer] = (done_before[1], done_before[1])
            if event.image not in tasks:
                tasks[event.image] = bars.add_task(event.image.rsplit("/", 1)[-1][:40], total=None)
            total = sum(t for _, t in image.values())
            bars.update(tasks[event.image], completed=sum(c for c, _ in image.values()), total=total or None)
            totals.add(event)
            show_total()

        show_total()
        yield update
        if totals.total is not None:  # the pull ended well: layers too small for "Downloading" events are in
            totals.done_all()
            show_total()
