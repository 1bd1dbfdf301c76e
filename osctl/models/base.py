"""Shared pieces of every pydantic model osctl validates user-authored documents with."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a manifest or settings file must never be ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DocumentModel(StrictModel):
    """A model of a YAML document people write (manifest, settings, user data): values keep their type.

    Lax validation would turn bytes (``!!binary``, which user data may hold) into a string,
    a set into a list and ``"3"`` into a number: a value of the wrong type is an error instead,
    so what osctl uses is what the author wrote. Conversions that are meant (a command string
    split into words, a duration string) are explicit validators.
    """

    model_config = ConfigDict(strict=True)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``1.5``, ``"500ms"``, ``"2s"``, ``"1m30s"`` (compose style)."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '2s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 2s, 1m30s)")
    else:
        raise ValueError("a duration must be a number of seconds or a string like '2s'")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{value!r} is not a valid duration")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
