"""The release manifest: ``/usr/lib/osctl/release.yaml`` inside every OS image.

This is a public contract (docs/image-format.md): anyone can build an OS image for osctl by
writing this file. Structure and values are checked here; relations between services
(unknown dependencies, cycles) are checked by ``osctl.domain.servicegraph``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from osctl.models.base import DocumentModel, Duration
from osctl.models.refs import IMAGE_REF
from osctl.models.version import validate_version_tag

SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # POSIX: what a shell can name as $NAME

# Where the engine mounts its own file systems: a volume there fails at start (a runc error) or
# hides what the container needs; refused when the manifest is checked instead.
ENGINE_OWNED = ("/proc", "/sys", "/dev")

Condition = Literal["service_started", "service_healthy", "service_completed_successfully"]
UpdateOrder = Literal["stop-first", "start-first"]

MAX_STOP_GRACE = 3600.0  # an hour: a stop that needs longer is a hang, and a swap waits for it
# Signals a service may ask to be stopped with: those daemons use for "shut down" (SIGWINCH is
# Apache's graceful stop, SIGPWR some inits'), by name, so a manifest means the same everywhere.
STOP_SIGNALS = frozenset({"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGPWR",
                          "SIGABRT", "SIGALRM", "SIGKILL"})


def _argv(value: object) -> object:
    """Accept a command as a list (exec form) or a string, split like a shell would."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command string: {exc}") from None
    return value


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must be an absolute path inside the image")
    if ".." in path.split("/"):
        raise ValueError(f"{path!r} must not contain '..'")
    return path


def normal_path(path: str) -> PurePosixPath:
    """An absolute path with ``//`` and ``.`` folded away (``//proc/./x`` is ``/proc/x``)."""
    return PurePosixPath("/", *(part for part in path.split("/") if part not in ("", ".")))


def _mount_target(path: str) -> str:
    _absolute(path)
    target = normal_path(path)
    if target == PurePosixPath("/"):
        raise ValueError(f"{path!r}: nothing can be mounted over the container's root")
    for owned in map(PurePosixPath, ENGINE_OWNED):
        if target == owned or owned in target.parents:
            raise ValueError(f"{path!r}: nothing can be mounted on or under {owned} (the engine mounts it)")
    return path


Argv = Annotated[list[str], BeforeValidator(_argv)]
AbsPath = Annotated[str, AfterValidator(_absolute)]


class HealthCheck(DocumentModel):
    """A probe osctl (and the engine) runs inside the container to decide it is healthy."""

    test: Argv = Field(description='["CMD", arg...] or ["CMD-SHELL", "shell line"]')
    interval: Duration = 5.0
    timeout: Duration = 3.0
    retries: int = Field(default=3, ge=1, le=1000)
    start_period: Duration = 0.0

    @field_validator("test", mode="before")
    @classmethod
    def _shell_string(cls, value: object) -> object:
        # A plain string is a shell line, as in compose.
        return ["CMD-SHELL", value] if isinstance(value, str) else value

    @field_validator("test")
    @classmethod
    def _known_form(cls, value: list[str]) -> list[str]:
        if not value or value[0] not in ("CMD", "CMD-SHELL"):
            raise ValueError('must start with "CMD" or "CMD-SHELL"')
        if len(value) < 2 or not value[1]:
            raise ValueError(f'"{value[0]}" needs a command after it')
        if value[0] == "CMD-SHELL" and len(value) != 2:
            raise ValueError('"CMD-SHELL" takes exactly one shell line')
        return value


class Dependency(DocumentModel):
    """What a service waits for before it starts."""

    condition: Condition = "service_started"


def _depends_on(value: object) -> object:
    """``[a, b]`` is shorthand for ``{a: {condition: service_started}, b: ...}``."""
    if isinstance(value, list):
        out: dict[object, object] = {}
        for item in value:
            if not isinstance(item, str):
                raise ValueError("a depends_on list holds service names")
            if item in out:
                raise ValueError(f"{item!r} is listed twice")
            out[item] = {}
        return out
    return value


class VolumeMount(DocumentModel):
    """``name:/path[:ro]`` (a host-owned named volume) or ``/host/path:/path[:ro]``.

    Named volumes belong to the host, not to a version, so data survives upgrades. Host paths
    are resolved under the host root (``--root``), never outside it.
    """

    source: str
    target: str
    read_only: bool = False

    @property
    def is_named(self) -> bool:
        return not self.source.startswith("/")

    @property
    def host_path(self) -> PurePosixPath:
        """A bind's source as the host sees it, normalized (only for a bind: not ``is_named``)."""
        return normal_path(self.source)

    @classmethod
    def parse(cls, spec: object) -> object:
        if not isinstance(spec, str):
            return spec
        parts = spec.split(":")
        mode = "rw"
        if len(parts) == 3:
            mode = parts.pop()
        if len(parts) != 2 or mode not in ("ro", "rw"):
            raise ValueError(
                f"{spec!r} is not a volume (use name:/path, /host/path:/path, optionally :ro)"
            )
        return {"source": parts[0], "target": parts[1], "read_only": mode == "ro"}

    @model_validator(mode="after")
    def _check(self) -> VolumeMount:
        _mount_target(self.target)
        if self.source.startswith("/"):
            _absolute(self.source)
        elif not VOLUME_NAME.fullmatch(self.source):
            raise ValueError(f"{self.source!r} is not a volume name ([A-Za-z0-9_.-], max 64)")
        return self


Volume = Annotated[VolumeMount, BeforeValidator(VolumeMount.parse)]


def _env_value(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _stop_signal(value: object) -> object:
    """``SIGUSR1`` as compose spells it; ``USR1`` or ``sigusr1`` mean the same."""
    if not isinstance(value, str):
        return value
    name = value.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in STOP_SIGNALS:
        raise ValueError(f"{value!r} is not a signal a service can be stopped with "
                         f"(e.g. SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1)")
    return name


def _grace_period(value: float) -> float:
    if value > MAX_STOP_GRACE:
        raise ValueError(f"{value:g} s is longer than the longest stop osctl waits for ({MAX_STOP_GRACE:g} s, 1h)")
    return value


def _restart(value: object) -> object:
    # YAML 1.1 readers turn an unquoted `no` into False; accept it as the policy it meant.
    return "no" if value is False else value


class ServiceSpec(DocumentModel):
    """One system service: a long-running container, or a one-shot run to completion."""

    image: str | None = Field(default=None, description="default: the OS image itself")
    command: Argv | None = None
    entrypoint: Argv | None = None
    environment: dict[str, Annotated[str, BeforeValidator(_env_value)]] = {}
    volumes: list[Volume] = []
    network_mode: Literal["host", "bridge", "none"] = "bridge"
    privileged: bool = False
    depends_on: Annotated[dict[str, Dependency], BeforeValidator(_depends_on)] = {}
    healthcheck: HealthCheck | None = None
    restart: Annotated[Literal["always", "on-failure", "no"] | None, BeforeValidator(_restart)] = None
    oneshot: bool = False
    stop_signal: Annotated[str, BeforeValidator(_stop_signal)] = "SIGTERM"
    stop_grace_period: Annotated[Duration, AfterValidator(_grace_period)] = 10.0
    update_order: UpdateOrder = "stop-first"
    stop_after_dependents: bool = False

    @field_validator("image")
    @classmethod
    def _image_ref(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.fullmatch(value):
            raise ValueError(f"{value!r} is not an image reference")
        return value

    @field_validator("environment")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not an environment variable name (letters, digits and '_', not first a digit)"
                )
        return value

    @model_validator(mode="after")
    def _oneshot_rules(self) -> ServiceSpec:
        if self.oneshot and self.restart == "always":
            raise ValueError('a oneshot service cannot use restart: always (use "no" or on-failure)')
        if self.oneshot and self.healthcheck is not None:
            raise ValueError("a oneshot service has no healthcheck: it succeeds by exiting 0")
        if self.update_order == "start-first" and self.oneshot:
            raise ValueError("update_order: start-first needs a long-running service; a oneshot runs once, "
                             "in dependency order")
        if self.update_order == "start-first" and self.network_mode == "host":
            raise ValueError("update_order: start-first cannot work with network_mode: host (the old and the new "
                             "container would both listen on the host's ports); use stop-first")
        targets = [str(normal_path(v.target)) for v in self.volumes]
        for target in targets:
            if targets.count(target) > 1:
                raise ValueError(f"two volumes are mounted at {target}")
        return self

    @property
    def restart_policy(self) -> str:
        """The effective policy: one-shots do not restart unless asked, daemons always do."""
        if self.restart is not None:
            return self.restart
        return "no" if self.oneshot else "always"


class BootSpec(DocumentModel):
    """The boot artifacts the boot loader needs, as paths inside the OS image."""

    kernel: AbsPath
    initrd: AbsPath | None = None
    cmdline: str = ""


ServiceName = Annotated[str, AfterValidator(lambda n: _service_name(n))]


def _service_name(name: str) -> str:
    if not SERVICE_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a service name (lower-case letters, digits, '-' and '_', max 63)"
        )
    return name


class ReleaseManifest(DocumentModel):
    """Everything osctl needs to know about one OS version."""

    version: Annotated[str, AfterValidator(validate_version_tag)]
    services: dict[ServiceName, ServiceSpec] = Field(min_length=1)
    boot: BootSpec
    min_upgrade_from: Annotated[str, AfterValidator(validate_version_tag)] | None = None
