"""The host's settings file, ``<root>/etc/osctl/config.yaml``.

Precedence is command-line option, then environment variable, then this file, then the
default. ``root`` cannot be a key: the file lives under the root it would choose.
The cloud-init ``osctl:`` section shares this model, so it grows with that work.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from osctl.models.base import StrictModel
from osctl.models.refs import IMAGE_REF

HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def validate_host_id(value: str) -> str:
    """Host ids go into container and volume names, so they follow Docker's name rules."""
    if not HOST_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a host id (letters, digits, '_', '.', '-'; max 63; "
            "starting with a letter or digit)"
        )
    return value


def validate_repository(value: str) -> str:
    """An OS image repository is a reference without a tag or digest."""
    last = value.rsplit("/", 1)[-1]
    if "@" in value or ":" in last or not IMAGE_REF.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an image repository (e.g. 127.0.0.1:5000/osctl/os, without a tag)"
        )
    return value


class HostSettings(StrictModel):
    """Keys of the settings file; every one optional."""

    host_id: Annotated[str, AfterValidator(validate_host_id)] | None = Field(
        default=None, description="overrides <root>/etc/machine-id"
    )
    image: Annotated[str, AfterValidator(validate_repository)] | None = Field(
        default=None, description="OS image repository, without a tag"
    )
