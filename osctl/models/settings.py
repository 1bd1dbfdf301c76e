"""The host's settings: ``<root>/etc/osctl/config.yaml``, and the ``osctl:`` section of user data.

One model for both, so every setting can come from either (applying user data updates the
file). Precedence is command-line option, then environment variable, then this file, then
the default. ``root`` cannot be a key: the file lives under the root it would choose.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from osctl.models.base import Duration, StrictModel
from osctl.models.manifest import ServiceSpec, _service_name
from osctl.models.refs import validate_host_id, validate_repository
from osctl.models.version import validate_version_tag

class UpdatePolicy(StrictModel):
    """How the host takes new versions (the fleet agent applies it)."""

    policy: Literal["manual", "download-only", "auto"] = "manual"
    check_interval: Duration = 300.0


class BootSettings(StrictModel):
    """How a staged version is tried at boot."""

    tries: int = Field(default=3, ge=1, le=100)
    health_timeout: Duration = 120.0


class HostSettings(StrictModel):
    """Keys of the settings file and of the ``osctl:`` user-data section; every one optional."""

    host_id: Annotated[str, AfterValidator(validate_host_id)] | None = Field(
        default=None, description="overrides <root>/etc/machine-id"
    )
    image: Annotated[str, AfterValidator(validate_repository)] | None = Field(
        default=None, description="OS image repository, without a tag"
    )
    version: Annotated[str, AfterValidator(validate_version_tag)] | None = Field(
        default=None, description="the version this host converges to (pinned)"
    )
    update: UpdatePolicy = Field(default_factory=UpdatePolicy)
    boot: BootSettings = Field(default_factory=BootSettings)
    services: dict[Annotated[str, AfterValidator(_service_name)], ServiceSpec] = Field(
        default_factory=dict,
        description="extra system services, merged per name into every version's services "
                    "(only the keys given replace the manifest's)",
    )
