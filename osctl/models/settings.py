"""The host's settings: ``<root>/etc/osctl/config.yaml``, and the ``osctl:`` section of user data.

One model for both, so every setting can come from either (applying user data updates the
file). Precedence is command-line option, then environment variable, then this file, then
the default. ``root`` cannot be a key: the file lives under the root it would choose.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, PlainValidator, field_validator

from osctl.models.base import DocumentModel, Duration
from osctl.models.listen import ListenAddress
from osctl.models.manifest import ServiceSpec, _service_name
from osctl.models.trust import TrustSettings
from osctl.models.refs import validate_etcd_endpoint, validate_group, validate_host_id, validate_repository
from osctl.models.version import validate_version_tag

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
_FULL_DAYS = {day: day[:3] for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}
_HH_MM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
MAX_WINDOW = 7 * 24 * 3600.0


def _weekday(value: object) -> object:
    """``mon``..``sun``, or the full English name, in any case (stored as the short form)."""
    if isinstance(value, str):
        text = value.strip().lower()
        text = _FULL_DAYS.get(text, text)
        if text in WEEKDAYS:
            return text
    raise ValueError(f"{value!r} is not a day of the week (use {', '.join(WEEKDAYS)})")


def _time_of_day(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 tools turn an unquoted 02:30 into 150 (base 60): say so instead of guessing.
        raise ValueError("a time of day is a string 'HH:MM' (quote it: start: '02:30')")
    if not isinstance(value, str) or not (match := _HH_MM.fullmatch(value.strip())):
        raise ValueError(f"{value!r} is not a time of day (use 'HH:MM', 24-hour, e.g. '02:30')")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def validate_timezone(value: object) -> str:
    """An IANA time zone name that this host's time zone database knows."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # the database is read only when a window is set

    if isinstance(value, str) and value:
        try:
            ZoneInfo(value)
            return value
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValueError(f"{value!r} is not a time zone (an IANA name such as 'UTC' or 'Europe/Berlin')")


class MaintenanceWindow(DocumentModel):
    """When the host may swap versions on its own: on each of ``days``, from ``start`` (local time
    in ``timezone``) for ``length``. A window may run past midnight: ``days`` names the day it
    opens. ``length`` is elapsed time, so a window over a DST change is still that long (the
    rules for a ``start`` that a DST change skips or repeats: ``osctl.domain.updatepolicy``).
    Staging (the pull) is not limited by the window: only the swap is.
    """

    days: list[Annotated[str, BeforeValidator(_weekday)]] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1, description="days the window opens on")
    start: Annotated[str, BeforeValidator(_time_of_day)] = Field(description="'HH:MM', local time")
    length: Duration = Field(description="how long it stays open, e.g. 2h or 1h30m (at most 7 days)")
    timezone: Annotated[str, AfterValidator(validate_timezone)] = "UTC"

    @field_validator("days")
    @classmethod
    def _distinct(cls, days: list[str]) -> list[str]:
        repeated = sorted({d for d in days if days.count(d) > 1}, key=WEEKDAYS.index)
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once")
        return days

    @field_validator("length")
    @classmethod
    def _length(cls, length: float) -> float:
        if not 0 < length <= MAX_WINDOW:
            raise ValueError("a window lasts more than 0 s and at most 7 days (168h)")
        return length


class UpdatePolicy(DocumentModel):
    """How the host takes new versions (the fleet agent applies it)."""

    policy: Literal["manual", "download-only", "auto"] = "manual"
    check_interval: Duration = 300.0
    window: MaintenanceWindow | None = Field(
        default=None, description="when an automatic swap may happen; absent: at any time")


def _endpoints(value: object) -> object:
    """One URL or a list; a comma-separated string is split (as OSCTL_ETCD is)."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    return value


def _distinct_endpoints(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value))


class FleetSettings(DocumentModel):
    """Where the host's fleet coordinates: an etcd cluster, and the host's group in it."""

    etcd: Annotated[
        list[Annotated[str, AfterValidator(validate_etcd_endpoint)]],
        BeforeValidator(_endpoints), AfterValidator(_distinct_endpoints),
    ] = Field(default_factory=list, description="client URLs of etcd members, e.g. http://10.0.0.1:2379")
    group: Annotated[str, AfterValidator(validate_group)] = Field(
        default="default", description="hosts of one group share a rollout and its concurrency limit")


def _absolute_path(value: object) -> object:
    """An absolute path of at most 1024 characters, with no NUL (a file osctl reads or writes)."""
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value or len(value) > 1024:
        raise ValueError(f"{value!r} is not an absolute path")
    return value


AbsolutePath = Annotated[str, BeforeValidator(_absolute_path)]


class BootSettings(DocumentModel):
    """How a staged version is tried at boot, and where the boot loader's files are (docs/boot.md)."""

    tries: int = Field(default=3, ge=1, le=100)
    health_timeout: Duration = 120.0
    esp: AbsolutePath | None = Field(
        default=None, description="the EFI system partition's mount point; absent: <root>/boot")
    efivars: AbsolutePath = Field(
        default="/sys/firmware/efi/efivars",
        description="where the loader's EFI variables are read (LoaderEntrySelected: which entry booted)")
    kernel_cmdline: AbsolutePath = Field(
        default="/proc/cmdline", description="the running kernel's command line (its osctl.version=)")
    menu_timeout: int = Field(default=3, ge=0, le=600,
                              description="seconds the loader shows its menu before booting (0: hidden)")


def _bundle_path(value: str) -> str:
    if not value.strip() or "\0" in value or len(value) > 4096:
        raise ValueError("not a file path")
    return value


# Read from text, written back as text: ``cloud-init apply`` rewrites the settings file from the model.
Listen = Annotated[ListenAddress, PlainValidator(ListenAddress.parse), PlainSerializer(str, return_type=str)]


class MetricsSettings(DocumentModel):
    """Where ``osctl supervise`` and ``osctl agent`` serve ``/metrics`` (docs/metrics.md); absent: not at all.

    One key per command, because a host runs both and two servers cannot share a port. An option
    (``--metrics``) wins over the key.
    """

    supervise: Listen | None = Field(default=None, description="HOST:PORT or :PORT (loopback), e.g. :9101")
    agent: Listen | None = Field(default=None, description="HOST:PORT or :PORT (loopback), e.g. :9102")


class HostSettings(DocumentModel):
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
    bundle: Annotated[str, AfterValidator(_bundle_path)] | None = Field(
        default=None, alias="from",
        description="a bundle file (osctl bundle create) the pinned version is taken from instead of the "
                    "registry: a first boot from a stick; relative to the host root"
    )
    update: UpdatePolicy = Field(default_factory=UpdatePolicy)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    boot: BootSettings = Field(default_factory=BootSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings,
                                 description="the release keys this host trusts (docs/trust.md)")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings,
                                     description="where supervise and agent serve Prometheus metrics (docs/metrics.md)")
    services: dict[Annotated[str, AfterValidator(_service_name)], ServiceSpec] = Field(
        default_factory=dict,
        description="extra system services, merged per name into every version's services "
                    "(only the keys given replace the manifest's)",
    )
