"""The host's service set as osctl wants it, and as the supervisor last saw it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _State(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ServicesState(_State):
    """``<root>/var/lib/osctl/services.json``: what should run.

    ``version`` is the version whose service set is up (set by ``service up``, and by boot and
    the transactions). ``disabled`` survives boots and swaps; ``stopped`` is the operator's
    "leave it alone until I start it again".
    """

    version: str | None = None
    desired: Literal["up", "down"] = "down"
    disabled: list[str] = Field(default_factory=list)
    stopped: list[str] = Field(default_factory=list)


class ServiceRecord(_State):
    """What the supervisor knows about one service."""

    restarts: int = 0
    consecutive_failures: int = 0
    last_failure: str | None = None
    last_failure_at: str | None = None
    failed: bool = False


class SupervisorStatus(_State):
    """``<root>/var/lib/osctl/supervisor.json``: written by ``osctl supervise``, read by
    ``status`` and ``service list``."""

    pid: int | None = None
    version: str | None = None
    updated_at: str | None = None
    engine_connected: bool = False
    services: dict[str, ServiceRecord] = Field(default_factory=dict)
