"""What operations tell the CLI while they work: small typed events, rendered by the CLI alone.

Operations never print; they hand these to an ``Events`` callback. Nothing may branch on the
words of a detail: what a caller needs to decide on (why a service was skipped, what happened to
it) is an enum here, and the words are only for people.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from osctl.models.fleet import HostPhase


class ServiceResult(enum.StrEnum):
    """What bringing a service up or down did to it."""

    CREATED = "created"
    RECREATED = "recreated"  # its spec changed: the old container went, a new one was made
    STARTED = "started"
    UNCHANGED = "unchanged"  # already running as specified
    COMPLETED = "completed"  # a one-shot that exited 0 (now or before)
    SKIPPED = "skipped"  # not started: see ``SkipReason`` or a dependency that failed
    FAILED = "failed"
    STOPPED = "stopped"
    REMOVED = "removed"


class SkipReason(enum.StrEnum):
    """Why a service is left alone when its set is brought up."""

    DISABLED = "disabled"  # the operator disabled it: survives boots and swaps
    STOPPED = "stopped"  # the operator stopped it: until they start it again, or the next boot
    NOT_ASKED_FOR = "not-asked-for"  # another service was started alone
    FAILED = "failed"  # the supervisor gave up on it after repeated crashes
    RESTART_PENDING = "restart-pending"  # the supervisor restarts it after its backoff
    DEPENDENCY = "dependency"  # something it depends on did not get ready
    CHANGED = "changed"  # the host changed while the supervisor waited: it looks again

    def describe(self) -> str:
        return _SKIP_WORDS[self]


_SKIP_WORDS = {
    SkipReason.DISABLED: "disabled (osctl service enable NAME)",
    SkipReason.STOPPED: "stopped by the operator (osctl service start NAME)",
    SkipReason.NOT_ASKED_FOR: "not asked for",
    SkipReason.FAILED: "failed: it kept crashing",
    SkipReason.RESTART_PENDING: "waiting to be restarted",
    SkipReason.DEPENDENCY: "not started: a dependency is not ready",
    SkipReason.CHANGED: "not started: the host changed meanwhile; the supervisor looks again",
}


@dataclass(frozen=True)
class ServiceOutcome:
    """What happened to one service; ``logs`` are its last lines when it failed."""

    service: str
    result: ServiceResult
    detail: str = ""
    skip: SkipReason | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result is not ServiceResult.FAILED


class Step(enum.StrEnum):
    """The moments of a transaction or a boot worth telling a person about."""

    RECOVER = "recover"  # finished what a crash interrupted
    PULL = "pull"
    SWAP = "swap"
    TRIAL = "trial"  # a staged version is being booted
    ROLLBACK = "rollback"  # the new version failed: the old one is brought back
    FALLBACK = "fallback"  # a trial failed: the default boots instead


@dataclass(frozen=True)
class StepEvent:
    step: Step
    detail: str

    @property
    def bad(self) -> bool:
        return self.step in (Step.ROLLBACK, Step.FALLBACK)


AgentMoment = Literal["slot", "swapped", "lease", "recovered"]
AgentNews = HostPhase | AgentMoment


@dataclass(frozen=True)
class AgentEvent:
    """The agent's news: a phase it entered (``HostPhase``) or a moment of a swap."""

    what: AgentNews
    detail: str


Event = ServiceOutcome | StepEvent | AgentEvent
Events = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The callback of a caller that wants no news."""
