"""``osctl prune``: drop stored versions beyond the newest N, never one the host may need.

Protected whatever N is: the running version, the next boot, the previous one (rollback
target) and pinned versions. An image is removed only when no remaining stored version names
it, no other host on the same engine holds it (``naming.hold_ref``), and no container, of any
owner, is made from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from osctl.adapters.engine import Engine
from osctl.adapters.locking import host_lock
from osctl.domain import bootpointer
from osctl.domain.current import make_current
from osctl.domain.naming import HOLD_REPOSITORY, hold_ref
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import UsageError
from osctl.operations.versions import running_versions


@dataclass
class PrunePlan:
    remove: list[str] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)  # version -> why it stays
    images_removed: list[str] = field(default_factory=list)
    images_kept_in_use: list[str] = field(default_factory=list)
    images_held_elsewhere: list[str] = field(default_factory=list)  # other hosts on this engine store them

    def as_dict(self) -> dict[str, object]:
        return {"remove": self.remove, "keep": self.keep, "images_removed": self.images_removed,
                "images_kept_in_use": self.images_kept_in_use, "images_held_elsewhere": self.images_held_elsewhere}


def prune(settings: Settings, engine: Engine, *, keep: int, dry_run: bool = False) -> PrunePlan:
    if keep < 0:
        raise UsageError(f"--keep {keep}: must be 0 or more")
    store = Store(settings.root)
    with host_lock(settings.root, "prune"):
        plan = plan_prune(settings, engine, store, keep)
        if dry_run:
            return plan
        records = {r.version: r for r in store.records()}
        for version in plan.remove:
            store.remove(version)
        store.clean_leftovers()
        make_current(settings)  # the loader forgets the removed versions' entries
        still_needed = {image for v, r in records.items() if v not in plan.remove for image in r.image_ids}
        for version in plan.remove:
            for image in sorted(records[version].image_ids):
                engine.untag(hold_ref(settings.host_id, version, image))
            for image in sorted(records[version].image_ids - still_needed):
                still_needed.add(image)  # handled once, even when two versions share it
                # Any host's hold tag (ours are gone now) keeps it: checked by the engine adapter
                # right before the removal, so a host that holds it since the plan is respected.
                outcome = engine.remove_image(image, unless_tagged=f"{HOLD_REPOSITORY}/")
                if outcome != "gone":
                    {"removed": plan.images_removed, "held": plan.images_held_elsewhere,
                     "in-use": plan.images_kept_in_use}[outcome].append(image)
        return plan


def plan_prune(settings: Settings, engine: Engine, store: Store, keep: int) -> PrunePlan:
    plan = PrunePlan()
    pointer = bootpointer.read(settings.root)
    protected = {v: "running" for v in running_versions(engine, settings.host_id)}
    for version, why in ((pointer.previous, "previous"), (pointer.default, "default boot"),
                         (pointer.next_boot, "next boot")):
        if version:
            protected.setdefault(version, why)
    for index, record in enumerate(store.records()):  # newest first
        if record.version in protected:
            plan.keep[record.version] = protected[record.version]
        elif record.pinned:
            plan.keep[record.version] = "pinned"
        elif index < keep:
            plan.keep[record.version] = f"among the newest {keep}"
        else:
            plan.remove.append(record.version)
    return plan
