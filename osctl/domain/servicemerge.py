"""The host's extra services (settings ``services:`` / user data ``osctl.services``) merged into
a version's own, per name.

A name the manifest does not have adds a service (if it names an image or a command; a bare
override of a service this version lacks is ignored). A name it has changes only the keys the
host gave: ``environment`` merges key by key, every other key replaces the manifest's value.
The merged set must still form a valid graph, or the version cannot be started on this host.
"""

from __future__ import annotations

from collections.abc import Mapping

from osctl.domain import servicegraph
from osctl.errors import ConfigError, Issue
from osctl.models.manifest import ServiceSpec


def merge_services(own: Mapping[str, ServiceSpec], extra: Mapping[str, ServiceSpec],
                   source: str) -> dict[str, ServiceSpec]:
    merged = dict(own)
    for name, override in extra.items():
        base = merged.get(name)
        if base is None:
            # A new service must say what to run; a bare override of a service this version
            # does not have (e.g. ntp settings on a version without ntp) has nothing to change.
            if override.image is not None or override.command is not None:
                merged[name] = override
            continue
        changes = override.model_dump(include=override.model_fields_set)
        if "environment" in changes:
            changes["environment"] = {**base.environment, **override.environment}
        merged[name] = ServiceSpec.model_validate({**base.model_dump(exclude_unset=True), **changes})
    issues = servicegraph.check(merged)
    if issues:
        raise ConfigError(source, [Issue(i.path, i.message) for i in issues],
                          hint="the host's extra services must fit every version's services")
    return merged

