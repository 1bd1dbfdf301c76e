"""Image reference syntax, shared by the manifest and the settings models (no pydantic here:
settings are read on every command, and must not pay for building the manifest models)."""

from __future__ import annotations

import re

# A permissive image reference check: [registry[:port]/]path[:tag][@digest].
IMAGE_REF = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def _safe_name(value: str, what: str) -> str:
    if not HOST_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a {what} (letters, digits, '_', '.', '-'; max 63; "
                         "starting with a letter or digit)")
    return value


def validate_host_id(value: str) -> str:
    """Host ids go into container and volume names, so they follow Docker's name rules."""
    return _safe_name(value, "host id")


def validate_repository(value: str) -> str:
    """An OS image repository is a reference without a tag or digest."""
    last = value.rsplit("/", 1)[-1]
    if "@" in value or ":" in last or not IMAGE_REF.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an image repository (e.g. 127.0.0.1:5000/osctl/os, without a tag)"
        )
    return value


def validate_group(value: str) -> str:
    """Fleet group names become etcd key components (``/osctl/fleet/<group>/``): no '/', no spaces;
    the same safe characters as a host id."""
    return _safe_name(value, "fleet group name")


def validate_etcd_endpoint(value: str) -> str:
    """An etcd client URL, ``http(s)://HOST[:PORT]``, without a trailing '/' (so duplicates match)."""
    from urllib.parse import urlsplit  # only when there is an endpoint to check

    text = value.strip().rstrip("/")
    try:
        split = urlsplit(text)
        split.port  # noqa: B018 - raises ValueError when the port is not a number in range
    except ValueError:
        split = None
    if split is None or split.scheme not in ("http", "https") or not split.hostname or split.path \
            or split.query or split.fragment or split.username is not None or split.password is not None:
        raise ValueError(f"{value!r} is not an etcd endpoint (use http://HOST:PORT, e.g. http://127.0.0.1:2379)")
    return text
