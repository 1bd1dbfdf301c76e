"""What the engine adapter returns: plain data, so no layer above it ever sees a docker object."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


DEFAULT_STOP_TIMEOUT = 10  # the engine's own default, and compose's stop_grace_period's


@dataclass(frozen=True)
class EngineInfo:
    address: str
    version: str
    api_version: str


@dataclass(frozen=True)
class ImageInfo:
    id: str
    labels: dict[str, str]
    repo_digests: list[str]
    repo_tags: list[str]
    size: int
    created: str

    def digest_in(self, repository: str) -> str | None:
        """The manifest digest this image has in ``repository`` (``sha256:...``), if known."""
        for entry in self.repo_digests:
            repo, _, digest = entry.partition("@")
            if repo == repository:
                return digest
        return None


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    state: str
    image: str


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull: ``layer`` moved to ``current`` of ``total`` bytes (0 when unknown)."""

    image: str
    layer: str
    status: str
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class Probe:
    """A health check as the engine takes it (``test`` in Docker's CMD / CMD-SHELL form)."""

    test: list[str]
    interval: float
    timeout: float
    retries: int
    start_period: float


@dataclass(frozen=True)
class Mount:
    """A named volume (``source`` is its engine name) or a bind of a host path."""

    source: str
    target: str
    read_only: bool = False
    volume: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the engine needs to create one system container, and nothing else."""

    name: str
    image: str
    labels: dict[str, str]
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    volume_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # volume name -> labels
    network_mode: str = "bridge"
    privileged: bool = False
    probe: Probe | None = None
    working_dir: str | None = None
    stop_signal: str = "SIGTERM"
    stop_timeout: int = DEFAULT_STOP_TIMEOUT  # seconds from the stop signal to SIGKILL


@dataclass(frozen=True)
class ContainerState:
    """What ``docker inspect`` says about a container, in the words osctl needs."""

    id: str
    name: str
    labels: dict[str, str]
    status: str  # created | running | exited | ...
    running: bool
    exit_code: int
    started_at: str
    finished_at: str
    health: str | None  # starting | healthy | unhealthy | None without a probe
    image: str
    restart_count: int = 0
    binds: tuple[str, ...] = ()  # host paths bound into it, as the engine will mount them at start
    stop_timeout: int = DEFAULT_STOP_TIMEOUT  # what it was created with (its service's stop_grace_period)

    @property
    def exited_ok(self) -> bool:
        """It ran to its end and exited 0: a one-shot that completed."""
        return self.status == "exited" and self.exit_code == 0

    @property
    def started(self) -> datetime | None:
        """When it last started, parsed; the engine writes nanoseconds and drops trailing zeros."""
        return parse_engine_time(self.started_at)

    @property
    def finished(self) -> datetime | None:
        """When it last stopped, parsed (None while it never has)."""
        return parse_engine_time(self.finished_at)


def parse_engine_time(text: str) -> datetime | None:
    """An engine timestamp (RFC 3339 with up to nine fraction digits) as an aware datetime."""
    head, dot, rest = text.rstrip("Z").partition(".")
    if not head or head.startswith("0001-"):  # the engine's zero time: never
        return None
    digits = rest.split("+")[0].split("-")[0] if dot else ""
    try:
        return datetime.fromisoformat(f"{head}.{(digits + '000000')[:6]}+00:00" if dot else f"{head}+00:00")
    except ValueError:
        return None
