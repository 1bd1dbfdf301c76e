"""The fleet's records in etcd: a group's rollout, each host's state, each semaphore slot's holder.

They are the JSON values of the keys laid out in ``osctl.domain.fleetkeys``. Unlike the files a
user writes, these are written by programs, possibly by agents of another osctl version during
an upgrade of osctl itself: a reader ignores fields it does not know (``Record``) rather than
refusing the whole fleet's state. What a user types (``--waves``, ``--max-concurrent``) is
validated strictly before it becomes a record. Times are timezone-aware, stored in UTC.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from osctl.models.base import Duration, StrictModel
from osctl.models.version import validate_version_tag

VersionTag = Annotated[str, AfterValidator(validate_version_tag)]


class Record(BaseModel):
    """A value in etcd: frozen, unknown fields ignored (a newer writer must not break a reader)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Wave(StrictModel):
    """From ``after`` past the rollout's start, hosts whose wave position is below ``share`` may
    swap. Shares are cumulative: ``[{share: 0.1, after: 0s}, {share: 1.0, after: 30m}]`` lets a
    tenth of the fleet go at once and everyone else half an hour later."""

    share: float = Field(gt=0, le=1, description="cumulative fraction of the group, in (0, 1]")
    after: Duration = Field(default=0.0, description="time after the rollout started, e.g. 10m")


def _waves(waves: tuple[Wave, ...]) -> tuple[Wave, ...]:
    """Waves open more of the fleet as time passes, and the last one opens all of it."""
    if not waves:
        raise ValueError("give at least one wave (e.g. one with share 1.0)")
    for earlier, later in zip(waves, waves[1:], strict=False):
        if later.after < earlier.after or later.share <= earlier.share:
            raise ValueError("waves must be in order: each one later (or as late) and with a larger share")
    if waves[-1].share != 1.0:
        raise ValueError(f"the last wave must have share 1.0 (it has {waves[-1].share:g}): "
                         "otherwise part of the fleet would never update")
    return waves


Waves = Annotated[tuple[Wave, ...], AfterValidator(_waves)]
ALL_AT_ONCE: tuple[Wave, ...] = (Wave(share=1.0, after=0.0),)

RolloutState = Literal["staging", "active", "paused", "aborted", "done"]


class RolloutFailure(Record):
    """One host that rolled back (or failed to stage) during the rollout, and why."""

    host_id: str
    version: str
    reason: str
    at: AwareDatetime


class Rollout(Record):
    """A group's rollout: what every host of the group converges to, and how fast.

    ``state``: ``staging`` (hosts download the target, nobody swaps yet: a slot is then held only
    for the swap itself), ``active`` (hosts swap), ``paused`` (nobody starts a swap; ``reason``
    says why, e.g. the failure budget is spent), ``aborted`` (given up for good), ``done``.
    ``stage_deadline``: when staging ends whoever has not staged yet (the last host to stage
    ends it sooner, ``osctl fleet resume`` at once).
    ``failure_budget``: the rollout pauses once this many hosts have failed.
    ``seed``: mixes each host's wave position (``osctl.domain.updatepolicy.wave_position``), so
    that a new rollout does not always start with the same hosts.
    """

    target: VersionTag
    max_concurrent: int = Field(ge=1)
    waves: Waves = ALL_AT_ONCE
    seed: int = Field(ge=0)
    failure_budget: int = Field(default=1, ge=1)
    state: RolloutState = "active"
    reason: str | None = None
    stage_deadline: AwareDatetime | None = None
    started_at: AwareDatetime
    updated_at: AwareDatetime
    failures: tuple[RolloutFailure, ...] = ()


HostPhase = Literal[
    "idle",            # nothing to do: running the target, or no rollout / policy manual
    "waiting-wave",    # the host's wave has not opened yet
    "staging",         # pulling and storing the target version
    "staged",          # stored, nothing swapped (download-only stops here; the others wait for the swaps)
    "waiting-window",  # outside the maintenance window
    "waiting-slot",    # all of the group's slots are taken
    "swapping",        # holds a slot, replacing the service set
    "healthy",         # swapped and healthy; the slot is given back
    "rolled-back",     # the target failed its health checks; back on the previous version
    "failed",          # could not stage (registry, disk, ...); see last_result
    "refused",         # the release keys do not vouch for the target (unsigned, revoked, stale metadata)
]


class HostState(Record):
    """What a host publishes about itself, under its lease: gone when the host is."""

    host_id: str
    phase: HostPhase
    running: str | None = None  # the version whose services run
    next_boot: str | None = None
    target: str | None = None  # the version it is converging to, when it has one
    last_result: str | None = None  # one line: "upgraded v1.3 -> v1.5", "rolled back: service x unhealthy"
    failed_versions: tuple[str, ...] = ()  # rolled back here once: never tried again by this host
    wave_position: float | None = None  # in [0, 1): where the host sits in the rollout's waves
    updated_at: AwareDatetime


class SlotHolder(Record):
    """The value of a taken semaphore slot: who swaps, to what, since when."""

    host_id: str
    version: str
    acquired_at: AwareDatetime


class QueueEntry(Record):
    """The value of a host's place in the group's queue for slots."""

    host_id: str
    version: str
    joined_at: AwareDatetime


class StagedMark(Record):
    """The value of a staging mark: the host has the target (``outcome`` staged), or has nothing
    to download for it (already runs it, pinned elsewhere, policy manual, failed to download...)."""

    host_id: str
    version: str
    outcome: str


class AgentMemory(BaseModel):
    """``<root>/var/lib/osctl/agent.json``: what the agent remembers across restarts, the versions
    that rolled back on this host (never tried again)."""

    model_config = ConfigDict(extra="ignore")

    failed_versions: list[str] = Field(default_factory=list)
