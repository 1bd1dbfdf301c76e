"""When a host may update: maintenance windows, when to check again, and rollout waves.

Pure functions: the time is an argument (timezone-aware), randomness comes from the caller's
``random.Random``. Times returned are in UTC, where subtracting two of them gives elapsed time
(on datetimes sharing a ``ZoneInfo`` Python does wall-clock arithmetic, wrong across DST). So the agent's rules are tested at any instant (a DST night, a window across
midnight) without waiting or patching a clock, and two agents given the same inputs agree.

Windows (``models.settings.MaintenanceWindow``): on each listed day the window opens at
``start``, local time in its ``timezone``, and stays open for ``length`` of elapsed time, so a
window may run past midnight (``days`` names the day it opens) and one over a DST change is
still ``length`` long. A ``start`` that does not exist that night (02:30 when clocks jump from
02:00 to 03:00) is read with the offset before the jump, as Python does (PEP 495): 03:30. A
``start`` that happens twice (clocks going back) opens at the first of the two.

Waves (``models.fleet.Wave``): each host has a position in [0, 1) from a stable hash of the
rollout's seed and its host id, so positions are spread evenly and every host can compute its
own without asking anyone. A wave ``{share: s, after: t}`` lets the hosts with position < s go
from ``t`` after the rollout started; shares are cumulative. So a wave opens for a fixed share
of the fleet (in expectation: positions are hashes), whatever its size and whoever asks first.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from osctl.errors import UsageError
from osctl.models.base import parse_duration
from osctl.models.fleet import Wave, Waves
from osctl.models.settings import WEEKDAYS, MaintenanceWindow

DAY = 86400.0


# -- maintenance windows ------------------------------------------------------------------------
def window_open(window: MaintenanceWindow | None, now: datetime) -> bool:
    """Whether an automatic swap may happen at ``now``; no window means always."""
    if window is None:
        return True
    moment = _aware(now)
    return any(start <= moment < end for start, end in _openings(window, moment))


def next_window_start(window: MaintenanceWindow | None, now: datetime) -> datetime:
    """The first instant at or after ``now`` inside the window, in UTC: ``now`` while it is open,
    else the next opening. With no window, ``now``."""
    moment = _aware(now)
    if window is None or window_open(window, moment):
        return moment
    return min(start for start, _ in _openings(window, moment) if start > moment)


def window_closes_at(window: MaintenanceWindow | None, now: datetime) -> datetime | None:
    """When the window open at ``now`` closes, in UTC, or None when it is closed (or there is no
    window: it never closes). Openings that overlap count as one; for openings that chain into
    each other for more than a week, the end of the last one looked at. An agent uses it not to
    start a swap it could not finish inside the window."""
    moment = _aware(now)
    if window is None or not window_open(window, moment):
        return None
    spans = sorted(_openings(window, moment))
    end = max(e for s, e in spans if s <= moment < e)
    for start, stop in spans:  # a later opening that starts before this one closes extends it
        if moment < start <= end:
            end = max(end, stop)
    return end


def _openings(window: MaintenanceWindow, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
    """(opens, closes) in UTC for every opening that can contain ``moment`` or follow it within a
    week: local days from ``length`` before it to eight days after."""
    zone = ZoneInfo(window.timezone)
    today = moment.astimezone(zone).date()
    hours, minutes = map(int, window.start.split(":"))
    for offset in range(-(math.ceil(window.length / DAY) + 1), 9):
        day = today + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] in window.days:
            opens = _local(day, time(hours, minutes), zone)
            yield opens, opens + timedelta(seconds=window.length)


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as an instant in UTC (fold=0: the rules in the module docstring).

    In UTC because arithmetic on datetimes sharing a ZoneInfo is wall-clock arithmetic: ``+ 2h``
    across a DST change would not be two hours."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the time must be timezone-aware (e.g. datetime.now(UTC))")
    return now.astimezone(UTC)


# -- checks -------------------------------------------------------------------------------------
def next_check(interval: float, jitter_fraction: float, rng: random.Random) -> float:
    """Seconds until the next check: ``interval`` give or take ``jitter_fraction`` of it, uniformly.

    Without jitter, hosts that booted together (a power cut, a new rack) check together forever,
    and hammer the registry and etcd in lockstep (balena adds 0-60 s, Flatcar +-5 of 45 min).
    """
    if interval < 0 or not 0 <= jitter_fraction <= 1:
        raise ValueError("interval >= 0 and 0 <= jitter_fraction <= 1")
    return max(0.0, interval * (1 + rng.uniform(-jitter_fraction, jitter_fraction)))


# -- waves --------------------------------------------------------------------------------------
def wave_position(seed: int, host_id: str) -> float:
    """The host's place in a rollout's waves, in [0, 1): the first 8 bytes of
    sha256("<seed>/<host id>") over 2**64. Stable across processes and Python versions (unlike
    ``hash``), uniform, and different for each rollout seed."""
    digest = hashlib.sha256(f"{seed}/{host_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def opened_share(waves: Sequence[Wave], started_at: datetime, now: datetime) -> float:
    """The share of the fleet allowed to update at ``now`` (0 before the first wave opens)."""
    elapsed = (_aware(now) - _aware(started_at)).total_seconds()
    return max((w.share for w in waves if w.after <= elapsed), default=0.0)


def wave_open(waves: Sequence[Wave], started_at: datetime, now: datetime, position: float) -> bool:
    """Whether the host at ``position`` may update at ``now``."""
    return position < opened_share(waves, started_at, now)


def wave_opens_at(waves: Sequence[Wave], started_at: datetime, position: float) -> datetime:
    """When the wave of the host at ``position`` opens (the agent sleeps until then)."""
    start = _aware(started_at)
    for wave in waves:
        if position < wave.share:
            return start + timedelta(seconds=wave.after)
    return start + timedelta(seconds=waves[-1].after)  # unreachable: the last share is 1.0


_WAVE = re.compile(r"\s*(\d+(?:\.\d+)?)(%?)\s*@\s*(\S+?)\s*")


def parse_waves(text: str) -> tuple[Wave, ...]:
    """Waves from the command line: ``10%@0s,50%@10m,100%@30m`` (a share, as a percentage or a
    fraction, '@' the time after the start). One-line ``UsageError`` when it is not that."""
    hint = "write waves as SHARE@AFTER, comma-separated, e.g. 10%@0s,50%@10m,100%@30m"
    waves = []
    for part in text.split(","):
        match = _WAVE.fullmatch(part)
        if not match:
            raise UsageError(f"--waves: {part.strip()!r} is not a wave", hint=hint)
        share = float(match.group(1)) / (100 if match.group(2) else 1)
        try:
            after = match.group(3)
            waves.append(Wave(share=share, after=float(after) if after.replace(".", "", 1).isdigit()
                              else parse_duration(after)))
        except (ValueError, ValidationError) as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise UsageError(f"--waves: {part.strip()!r}: {reason}", hint=hint) from None
    try:
        return _validated_waves(tuple(waves))
    except ValidationError as exc:
        raise UsageError(f"--waves: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", hint=hint) from None


def _validated_waves(waves: tuple[Wave, ...]) -> tuple[Wave, ...]:
    from pydantic import TypeAdapter

    return TypeAdapter(Waves).validate_python(waves)
