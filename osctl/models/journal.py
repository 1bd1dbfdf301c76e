"""The transaction journal and the host's history of version changes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["upgrade", "downgrade", "rollback", "install", "stage", "boot"]
Result = Literal["in-progress", "committed", "rolled-back", "aborted"]  # aborted: failed before changing anything


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Stop(_Doc):
    """A stop osctl asked the engine for: the engine carries it out even if osctl dies meanwhile."""

    container: str  # the container's id
    service: str
    timeout: float  # seconds between SIGTERM and SIGKILL


class Transaction(_Doc):
    """One version change, journaled step by step (``<root>/var/lib/osctl/journal.json``)."""

    id: str
    kind: Kind
    from_version: str | None = None
    to_version: str
    step: str = "begin"
    steps_done: list[str] = Field(default_factory=list)
    started_at: str
    pid: int
    # The stops in flight: written before they are issued, emptied once they are all done. A
    # crash leaves the engine finishing them, so recovery must not trust "running" for these.
    stopping: list[Stop] = Field(default_factory=list)
    result: Result = "in-progress"
    reason: str | None = None
    finished_at: str | None = None


class HistoryEntry(_Doc):
    """A finished transaction, as ``osctl status`` and the fleet agent remember it."""

    id: str
    kind: Kind
    from_version: str | None
    to_version: str
    result: Result
    reason: str | None = None
    started_at: str
    finished_at: str | None = None
    recovered: bool = False


class History(_Doc):
    entries: list[HistoryEntry] = Field(default_factory=list)
