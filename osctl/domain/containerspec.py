"""From a version's manifest to the exact containers the engine must run for one host.

Pure: no engine, no files (the root is resolved, nothing under it). A bind's source is the host
path joined to the root as written: its symbolic links are resolved immediately before each
create and start (``osctl.domain.binds``), never here, so that loading a version's set (to
list it, stop it or swap away from it) never depends on what the paths under the root look
like now. The spec hash (a label on each container) is what lets ``up`` leave
an unchanged service running and recreate a changed one, like compose's config hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

from osctl.constants import LABEL_SPEC_HASH
from osctl.domain.naming import container_name, service_labels, volume_labels, volume_name
from osctl.models.engine import DEFAULT_STOP_TIMEOUT, ContainerSpec, Mount, Probe
from osctl.models.manifest import ServiceSpec


def container_spec(host_id: str, root: Path, version: str, name: str, service: ServiceSpec,
                   image_ids: dict[str | None, str]) -> ContainerSpec:
    """The container for service ``name`` of ``version`` on this host.

    ``image_ids`` maps a service's ``image`` (None: the OS image itself) to the engine image id
    the store recorded, so a container runs exactly what was stored, whatever a tag says now.
    """
    mounts, vol_labels = [], {}
    base = root.resolve()
    for vol in service.volumes:
        if vol.is_named:
            engine_name = volume_name(host_id, vol.source)
            mounts.append(Mount(engine_name, vol.target, vol.read_only, volume=True))
            vol_labels[engine_name] = volume_labels(host_id, vol.source)
        else:
            host_path = base.joinpath(*vol.host_path.parts[1:])
            mounts.append(Mount(str(host_path), vol.target, vol.read_only, volume=False))
    probe = None
    if service.healthcheck is not None:
        hc = service.healthcheck
        probe = Probe(list(hc.test), hc.interval, hc.timeout, hc.retries, hc.start_period)
    spec = ContainerSpec(
        name=container_name(host_id, version, name),
        image=image_ids[service.image],
        labels=service_labels(host_id, version, name),
        command=list(service.command) if service.command is not None else None,
        entrypoint=list(service.entrypoint) if service.entrypoint is not None else None,
        environment=dict(service.environment),
        mounts=mounts,
        volume_labels=vol_labels,
        network_mode=service.network_mode,
        privileged=service.privileged,
        probe=probe,
        stop_signal=service.stop_signal,
        stop_timeout=math.ceil(service.stop_grace_period),  # the engine counts whole seconds
    )
    return replace(spec, labels={**spec.labels, LABEL_SPEC_HASH: spec_hash(spec)})


# Fields added after containers were first labelled with a hash, with the value every container
# had before: left out of the hash at that value, so a new osctl does not recreate every running
# container that is exactly as it was.
_LATER_FIELDS = {"stop_signal": "SIGTERM", "stop_timeout": DEFAULT_STOP_TIMEOUT}


def spec_hash(spec: ContainerSpec) -> str:
    """A stable digest of everything that makes the container what it is."""
    fields = asdict(spec)
    for key, before in _LATER_FIELDS.items():
        if fields.get(key) == before:
            del fields[key]
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]

