"""Binds of host paths stay under the host root, at every start.

A bind's source is a path of the host, under ``--root``. The engine follows symbolic links in it
again each time it starts the container, so a check made once, when the spec was built, is not
enough: a service that can write an ancestor of another bind's source can swap that source for
a link out of the root, and the other service reads the machine's own files at its next start
(a restart by the supervisor included). Two rules keep the promise:

- a read-write bind whose source contains another bind's source is refused when a manifest is
  validated (``check``). A version stored before that rule existed is not refused as a whole
  (it must stay loadable, so that the host can be listed, brought down and swapped away from):
  only the services holding such a bind are refused when they would be created or started
  (``conflicts``);
- every bind source is resolved again immediately before each create and each start
  (``resolve_now``); one that leads outside the root fails that service, not the command.

Nothing that only observes or stops containers resolves a bind.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from osctl.errors import Issue, UsageError
from osctl.models.manifest import ServiceSpec


def conflicts(services: Mapping[str, ServiceSpec]) -> dict[str, str]:
    """Each service with a read-write bind that contains a bind source of the set, and why.

    Equal sources are fine: a service cannot replace the directory it is given, only what is
    inside it. Read-only binds of an ancestor are fine too: they cannot write.
    """
    binds = [(name, vol.host_path) for name, spec in services.items() for vol in spec.volumes if not vol.is_named]
    found: dict[str, str] = {}
    for name, spec in services.items():
        for vol in spec.volumes:
            if vol.is_named or vol.read_only or name in found:
                continue
            for other, inner in binds:
                if vol.host_path in inner.parents:
                    whose = "its own bind source" if other == name else f"the bind source of {other}"
                    found[name] = (f"read-write bind of {vol.host_path} contains {whose} {inner}, which it could "
                                   f"replace with a symbolic link out of the host root (bind {vol.host_path} read-only)")
                    break
    return found


def check(services: Mapping[str, ServiceSpec]) -> list[Issue]:
    """``conflicts`` as validation issues, one per service."""
    return [Issue(f"services.{name}.volumes", why) for name, why in conflicts(services).items()]


def resolve_now(root: Path, source: str) -> str:
    """A bind source (an absolute path of this machine, under the root) with its symbolic links
    resolved now; refused when it leads outside the root."""
    base = root.resolve()
    path = Path(source)
    shown = "/" + str(path.relative_to(base)).removeprefix(".") if path.is_relative_to(base) else source
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
        raise UsageError(f"bind source {shown} cannot be resolved ({exc})") from None
    if resolved != base and base not in resolved.parents:
        raise UsageError(f"bind source {shown} leads outside the host root {root} (through a symbolic link)",
                         hint="replace the link with a directory under the host root")
    return str(resolved)
