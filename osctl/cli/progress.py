"""Pull progress: one rich bar per image, in bytes, on stderr, only for a person at a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from osctl.cli import render

if TYPE_CHECKING:
    from osctl.models.engine import PullProgress

DONE = ("Pull complete", "Already exists", "Download complete")


@contextlib.contextmanager
def pull_bars(enabled: bool) -> Iterator[Callable[[PullProgress], None] | None]:
    """Yield a progress callback (None when quiet: no terminal, --quiet or --json)."""
    if not enabled or not render.stderr.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    layers: dict[str, dict[str, tuple[int, int]]] = {}
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=render.stderr, transient=False) as bars:

        def update(event: PullProgress) -> None:
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

        yield update
