"""Names and labels of what osctl creates on the engine, for one host.

Several hosts can share one engine (tests, fleet simulation). Every container and volume
carries the host id in its name and in the ``io.osctl.host`` label, and osctl only ever looks
at (or removes) things that carry its host's label, so nothing else on the engine is touched.
"""

from __future__ import annotations

from osctl.constants import LABEL_HOST, LABEL_ROLE, LABEL_SERVICE, LABEL_VERSION, LABEL_VOLUME, ROLE_SERVICE


def host_labels(host_id: str) -> dict[str, str]:
    """The labels that select everything of one host."""
    return {LABEL_HOST: host_id}


def system_labels(host_id: str, version: str | None = None) -> dict[str, str]:
    """The labels every system container of the host carries (of one version, when given)."""
    labels = {LABEL_HOST: host_id, LABEL_ROLE: ROLE_SERVICE}
    if version is not None:
        labels[LABEL_VERSION] = version
    return labels


def service_labels(host_id: str, version: str, service: str) -> dict[str, str]:
    return {LABEL_HOST: host_id, LABEL_VERSION: version, LABEL_SERVICE: service, LABEL_ROLE: ROLE_SERVICE}


def container_name(host_id: str, version: str, service: str) -> str:
    """``osctl-<host>-<service>-<version>``: versions differ, so two sets can coexist mid-swap."""
    return f"osctl-{host_id}-{service}-{version}"


def volume_name(host_id: str, volume: str) -> str:
    """``osctl-<host>-<volume>``: no version in it, so data outlives every upgrade."""
    return f"osctl-{host_id}-{volume}"


def volume_labels(host_id: str, volume: str) -> dict[str, str]:
    return {LABEL_HOST: host_id, LABEL_VOLUME: volume}


HOLD_REPOSITORY = "osctl-hold"


def hold_ref(host_id: str, version: str, image_id: str) -> str:
    """A tag that says "this host's store needs this image".

    Several hosts can share one engine; an image may be removed only when no host holds it.
    Docker counts tags for us: pruning drops this host's hold tags, and the image itself goes
    only when no other ``osctl-hold/...`` tag (and no container) remains.
    """
    return f"{HOLD_REPOSITORY}/{host_id.lower()}/{version.lower()}:{image_id.removeprefix('sha256:')[:12]}"
