"""Image reference syntax, shared by the manifest and the settings models (no pydantic here:
settings are read on every command, and must not pay for building the manifest models).

``Digest``, ``Tag`` and ``ImageRef`` are the typed values every digest, tag and reference that
comes from outside (registry headers and bodies, manifests, user data) is parsed into at the
adapter that receives it. They go into engine API paths (``/images/<repo>@<digest>``) and file
names: text such as ``sha256:/../../volumes/x`` must never get that far, so the only way to
have one is to pass its grammar (the OCI distribution reference grammar).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
REPOSITORY = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_REFERENCE = re.compile(rf"(?P<name>{REPOSITORY.pattern})(?::(?P<tag>{TAG.pattern}))?(?:@(?P<digest>{DIGEST.pattern}))?")
IMAGE_REF = _REFERENCE  # [registry[:port]/]path[:tag][@digest]: one grammar for every reference osctl reads


def _shown(value: object) -> str:
    """A value from outside, quoted and cut short for a one-line message."""
    text = repr(value)
    return text if len(text) <= 90 else text[:87] + "..."


class Digest(str):
    """A content digest: ``sha256:`` and 64 lowercase hex digits, and nothing else.

    A ``str``, so that it prints, compares and serializes as the text it is; constructing one
    checks the grammar, so a ``Digest`` can go into a path or a name as it is.
    """

    __slots__ = ()

    def __new__(cls, value: object) -> Digest:
        if not isinstance(value, str) or not DIGEST.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not a sha256 digest (sha256: and 64 lowercase hex digits)")
        return super().__new__(cls, value)

    @property
    def hex(self) -> str:
        return self[len("sha256:"):]


class Tag(str):
    """An image tag: at most 128 of ``[A-Za-z0-9_.-]``, not starting with '.' or '-'."""

    __slots__ = ()

    def __new__(cls, value: object) -> Tag:
        if not isinstance(value, str) or not TAG.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not an image tag")
        return super().__new__(cls, value)


@dataclass(frozen=True)
class ImageRef:
    """``[registry[:port]/]path[:tag][@digest]``, parsed; ``str()`` gives the text back.

    ``registry`` is the first path part when it names a host (it has a '.' or a ':', or is
    ``localhost``), as the engine decides it; None means the engine's default registry.
    """

    repository: str
    tag: Tag | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: object) -> ImageRef:
        match = _REFERENCE.fullmatch(text) if isinstance(text, str) and len(text) <= 512 else None
        if match is None:
            raise ValueError(f"{_shown(text)} is not an image reference "
                             "([registry[:port]/]path[:tag][@sha256:digest], lowercase path)")
        tag, digest = match["tag"], match["digest"]
        return cls(match["name"], Tag(tag) if tag else None, Digest(digest) if digest else None)

    @property
    def registry(self) -> str | None:
        first, sep, _ = self.repository.partition("/")
        return first if sep and ("." in first or ":" in first or first == "localhost") else None

    def at(self, digest: Digest) -> ImageRef:
        """The same repository, by ``digest`` (the tag dropped: a pull by digest names no tag)."""
        return ImageRef(self.repository, None, Digest(digest))

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.repository, Tag(tag), None)

    @property
    def pin(self) -> str:
        """What the engine pulls as the tag part: the digest when there is one, else the tag (or latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


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
