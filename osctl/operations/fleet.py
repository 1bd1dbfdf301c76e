"""What an operator does to a group of hosts: start a rollout, watch it, pause, resume, abort it.

Nothing here touches a host: the rollout record in etcd is the whole interface. The hosts'
agents read it at every check and act on their own (``osctl.operations.agent``); a pause or an
abort stops new swaps at once, while a host already swapping finishes (or rolls back).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from osctl.adapters.registry import Registry
from osctl.domain.imagefacts import ImageFacts
from osctl.domain.fleetslots import FleetSemaphore, Slot
from osctl.domain.fleetstate import read_hosts, read_rollout, update_rollout, write_rollout
from osctl.errors import NotFoundError, TrustError, UsageError
from osctl.models.fleet import ALL_AT_ONCE, HostState, Rollout, RolloutState, Wave
from osctl.models.version import OsVersion
from osctl.operations.pull import resolve
from osctl.operations.releases import judge_tags
from osctl.operations.trust import for_settings

if TYPE_CHECKING:
    from osctl.adapters.etcd import Etcd
    from osctl.domain.settings import Settings


STAGE_TIMEOUT = 1800.0  # 30 min: the staging phase ends then even if some host never said it staged


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RolloutRequest:
    """What ``osctl fleet rollout`` asks for, before it becomes a record."""

    target: str
    max_concurrent: int = 1
    waves: tuple[Wave, ...] = ALL_AT_ONCE
    failure_budget: int = 1
    stage_timeout: float | None = STAGE_TIMEOUT  # seconds of download-only phase at most; None: no such phase


def start_rollout(settings: Settings, etcd: Etcd, request: RolloutRequest, *, check_registry: bool = True,
                  clock: Callable[[], datetime] = _utcnow) -> tuple[Rollout, Rollout | None]:
    """Write the group's rollout (replacing any other); returns it and the one it replaced.

    The version is looked up in the registry first when one is configured, and judged as
    ``list-versions`` judges it: a typo, or a tag that is not an OS image, would otherwise only
    show up as every host of the group failing to stage.
    """
    tag = OsVersion.parse(request.target).tag
    trust = for_settings(settings)
    if trust.enforced:  # every host would refuse it: say so before etcd is asked
        refusal = trust.index().refusal(tag)
        if refusal is not None:
            raise TrustError(f"{tag} is {refusal}; not rolled out", hint="osctl list-versions shows what is signed")
    elif check_registry and settings.image:  # without a root, the registry's tag is what hosts take
        registry = Registry(settings.image)
        resolve(registry, settings.image, tag)
        judged = judge_tags(registry, [tag], ImageFacts(settings.root)).get(tag)
        if judged is not None and judged.invalid is not None:
            raise UsageError(f"{settings.image}:{tag} is not a valid OS version ({judged.invalid})",
                             hint="roll out another version, or publish a valid image under that tag")
    now = clock()
    staging = request.stage_timeout is not None
    rollout = Rollout(target=tag, max_concurrent=request.max_concurrent, waves=request.waves,
                      seed=random.SystemRandom().randrange(2**31), failure_budget=request.failure_budget,
                      state="staging" if staging else "active", started_at=now, updated_at=now,
                      stage_deadline=now + timedelta(seconds=request.stage_timeout) if staging else None)
    previous = read_rollout(etcd, settings.group)
    write_rollout(etcd, settings.group, rollout)
    return rollout, previous[0] if previous else None


def set_state(settings: Settings, etcd: Etcd, state: RolloutState, reason: str | None,
              clock: Callable[[], datetime] = _utcnow) -> Rollout:
    """Pause, resume or abort the group's rollout (compare-and-swap: a racing agent's failure report stays)."""
    # resume also ends a staging phase at once: the hosts that have staged start swapping
    allowed: dict[RolloutState, set[str]] = {"paused": {"active", "staging"}, "active": {"paused", "staging"},
                                             "aborted": {"active", "paused", "staging"}}

    def change(rollout: Rollout) -> Rollout | None:
        if rollout.state == state:
            return None
        if rollout.state not in allowed[state]:
            raise UsageError(f"the rollout of {rollout.target} in group {settings.group} is {rollout.state}; "
                             f"it cannot become {state}", hint="osctl fleet rollout --to V starts a new one")
        return rollout.model_copy(update={"state": state, "reason": reason, "updated_at": clock()})

    updated = update_rollout(etcd, settings.group, change)
    if updated is None:
        raise NotFoundError(f"group {settings.group} has no rollout", hint="osctl fleet rollout --to V starts one")
    return updated


@dataclass
class FleetStatus:
    """A group at one moment: its rollout, its live hosts, who holds a slot."""

    group: str
    rollout: Rollout | None
    hosts: list[HostState]
    slots: list[Slot] = field(default_factory=list)

    @property
    def on_target(self) -> int:
        return sum(1 for h in self.hosts if self.rollout and h.running == self.rollout.target)

    def as_dict(self) -> dict[str, Any]:
        rollout = self.rollout.model_dump(mode="json") if self.rollout else None
        return {
            "group": self.group,
            "rollout": rollout,
            "progress": {"hosts": len(self.hosts), "on_target": self.on_target,
                         "failed": len(self.rollout.failures) if self.rollout else 0},
            "by_version": dict(sorted(Counter(h.running or "none" for h in self.hosts).items())),
            "by_phase": dict(sorted(Counter(h.phase for h in self.hosts).items())),
            "slots": [{"index": s.index, "host_id": s.holder.host_id, "version": s.holder.version,
                       "acquired_at": s.holder.acquired_at.isoformat()} for s in self.slots],
            "hosts": [h.model_dump(mode="json") for h in self.hosts],
        }


def status(settings: Settings, etcd: Etcd) -> FleetStatus:
    found = read_rollout(etcd, settings.group)
    return FleetStatus(settings.group, found[0] if found else None, read_hosts(etcd, settings.group),
                       FleetSemaphore(etcd, settings.group).slots())
