"""Update policy rules: maintenance windows (midnight, DST), check jitter, rollout waves."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from osctl.domain.updatepolicy import (
    next_check,
    next_window_start,
    opened_share,
    parse_waves,
    wave_open,
    wave_opens_at,
    wave_position,
    window_closes_at,
    window_open,
)
from osctl.errors import UsageError
from osctl.models.fleet import Wave
from osctl.models.settings import MaintenanceWindow

BERLIN = ZoneInfo("Europe/Berlin")


def window(**kwargs: object) -> MaintenanceWindow:
    return MaintenanceWindow.model_validate(kwargs)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- windows ----------------------------------------------------------------------------------
def test_no_window_means_always() -> None:
    now = utc(2024, 1, 1, 12)
    assert window_open(None, now)
    assert next_window_start(None, now) == now
    assert window_closes_at(None, now) is None


def test_window_across_midnight_belongs_to_the_day_it_opens() -> None:
    w = window(days=["fri"], start="23:00", length="2h")  # Friday 2024-01-05
    assert not window_open(w, utc(2024, 1, 5, 22, 59))
    assert window_open(w, utc(2024, 1, 5, 23, 0))
    assert window_open(w, utc(2024, 1, 6, 0, 59))  # Saturday, still Friday's window
    assert not window_open(w, utc(2024, 1, 6, 1, 0))  # the end is exclusive
    assert not window_open(w, utc(2024, 1, 6, 23, 30))  # Saturday has no window of its own
    assert next_window_start(w, utc(2024, 1, 6, 1, 0)) == utc(2024, 1, 12, 23, 0)
    assert window_closes_at(w, utc(2024, 1, 6, 0, 30)) == utc(2024, 1, 6, 1, 0)


def test_days_are_local_days_of_the_window_time_zone() -> None:
    w = window(days=["mon"], start="00:30", length="1h", timezone="Europe/Berlin")
    # Sunday 23:45 UTC is Monday 00:45 in Berlin (winter, +01:00).
    assert window_open(w, utc(2024, 1, 7, 23, 45))
    assert not window_open(w, utc(2024, 1, 8, 23, 45))
    assert next_window_start(w, utc(2024, 1, 8, 12)) == datetime(2024, 1, 15, 0, 30, tzinfo=BERLIN)


def test_dst_spring_forward_skipped_start_opens_after_the_gap_for_the_full_length() -> None:
    # 2024-03-31 in Berlin: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that night.
    w = window(days=["sun"], start="02:30", length="1h", timezone="Europe/Berlin")
    assert not window_open(w, datetime(2024, 3, 31, 3, 29, tzinfo=BERLIN))
    assert window_open(w, datetime(2024, 3, 31, 3, 30, tzinfo=BERLIN))
    assert window_closes_at(w, datetime(2024, 3, 31, 3, 30, tzinfo=BERLIN)) == datetime(2024, 3, 31, 4, 30, tzinfo=BERLIN)
    assert next_window_start(w, datetime(2024, 3, 31, 1, 0, tzinfo=BERLIN)) == utc(2024, 3, 31, 1, 30)  # 03:30 CEST
    # The week after, the same window opens at 02:30 CEST again.
    assert next_window_start(w, datetime(2024, 3, 31, 5, 0, tzinfo=BERLIN)) == datetime(2024, 4, 7, 2, 30, tzinfo=BERLIN)


def test_dst_fall_back_length_is_elapsed_time() -> None:
    # 2024-10-27 in Berlin: 03:00 CEST goes back to 02:00 CET; 01:00 + 3 h of real time = 03:00 CET.
    w = window(days=["sun"], start="01:00", length="3h", timezone="Europe/Berlin")
    opens = utc(2024, 10, 26, 23, 0)  # 01:00 CEST
    assert not window_open(w, opens - timedelta(seconds=1))
    assert window_open(w, opens)
    assert window_open(w, utc(2024, 10, 27, 1, 59))  # 02:59 CET, the second 02:xx of the night
    assert not window_open(w, utc(2024, 10, 27, 2, 0))  # 03:00 CET
    # A start in the repeated hour opens once, at the first of the two 02:30s.
    w2 = window(days=["sun"], start="02:30", length="30m", timezone="Europe/Berlin")
    assert window_open(w2, utc(2024, 10, 27, 0, 30))  # 02:30 CEST
    assert not window_open(w2, utc(2024, 10, 27, 1, 30))  # 02:30 CET


@pytest.mark.parametrize("w", [
    window(days=["sat", "sun"], start="02:00", length="3h", timezone="Europe/Berlin"),
    window(days=["mon", "wed", "fri"], start="23:30", length="90m", timezone="America/New_York"),
    window(start="00:00", length="30h", timezone="Australia/Lord_Howe"),  # overlapping daily windows, 30 min DST
])
def test_next_window_start_is_the_first_open_instant(w: MaintenanceWindow) -> None:
    """Swept over a month with two DST changes, every 37 minutes: the answer is open, and
    nothing between now and it is (checked at a minute's resolution near it)."""
    now = utc(2024, 3, 20)
    while now < utc(2024, 4, 20):
        start = next_window_start(w, now)
        assert window_open(w, start)
        if window_open(w, now):
            assert start == now
            closes = window_closes_at(w, now)
            assert closes is not None and closes > now
            assert not window_open(w, closes) or closes - now > timedelta(days=7)  # chained openings
        else:
            assert start > now and not window_open(w, start - timedelta(seconds=1))
            assert window_closes_at(w, now) is None
        now += timedelta(minutes=37)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_open(window(start="01:00", length="1h"), datetime(2024, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize(("fields", "words"), [
    ({"start": "01:00", "length": "1h", "timezone": "Mars/Olympus"}, "'Mars/Olympus' is not a time zone"),
    ({"start": "01:00", "length": "1h", "timezone": "../etc/passwd"}, "is not a time zone"),
    ({"start": "01:00", "length": "1h", "timezone": "europe/berlin"}, "is not a time zone"),
    ({"start": "24:00", "length": "1h"}, "'24:00' is not a time of day"),
    ({"start": 150, "length": "1h"}, "quote it"),
    ({"start": "01:00", "length": "0s"}, "more than 0 s"),
    ({"start": "01:00", "length": "8d"}, "is not a duration"),
    ({"start": "01:00", "length": "200h"}, "at most 7 days"),
    ({"start": "01:00", "length": "1h", "days": ["mon", "Monday"]}, "mon listed more than once"),
    ({"start": "01:00", "length": "1h", "days": ["someday"]}, "'someday' is not a day of the week"),
    ({"start": "01:00", "length": "1h", "every": "day"}, "Extra inputs are not permitted"),
])
def test_bad_windows_are_explained(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("(", r"\(")):
        MaintenanceWindow.model_validate(fields)


def test_window_days_and_start_are_normalised() -> None:
    w = window(days=["Saturday", "SUN"], start="2:05", length="1h30m")
    assert (w.days, w.start, w.length, w.timezone) == (["sat", "sun"], "02:05", 5400.0, "UTC")


# -- check timing -------------------------------------------------------------------------------
def test_next_check_jitter_stays_in_bounds_and_spreads() -> None:
    rng = random.Random(7)
    samples = [next_check(300, 0.2, rng) for _ in range(5000)]
    assert min(samples) >= 240 and max(samples) <= 360
    assert min(samples) < 245 and max(samples) > 355  # both ends are reached: hosts spread out
    assert abs(statistics.mean(samples) - 300) < 3
    assert next_check(300, 0, rng) == 300
    assert min(next_check(10, 1, rng) for _ in range(1000)) >= 0
    with pytest.raises(ValueError):
        next_check(300, 1.5, rng)


# -- waves --------------------------------------------------------------------------------------
def test_wave_position_is_stable_and_in_range() -> None:
    # Pinned: a position must not change between osctl versions, or a rollout's waves would
    # reshuffle when the agents are upgraded.
    assert wave_position(42, "host-1") == pytest.approx(0.2423158128467679, abs=1e-15)
    assert wave_position(42, "host-1") == wave_position(42, "host-1")
    assert wave_position(43, "host-1") != wave_position(42, "host-1")
    assert all(0 <= wave_position(s, f"h{i}") < 1 for s in range(3) for i in range(200))


def test_wave_positions_are_roughly_uniform_over_1000_hosts() -> None:
    hosts = [f"host-{i:04d}" for i in range(1000)]
    for seed in (0, 1, 2024):
        positions = [wave_position(seed, h) for h in hosts]
        buckets = [0] * 10
        for p in positions:
            buckets[int(p * 10)] += 1
        assert all(60 <= b <= 140 for b in buckets), buckets  # 100 expected; +-4 sigma
        assert 70 <= sum(p < 0.1 for p in positions) <= 130  # a 10 % wave is about 10 % of the fleet
    first = {h for h in hosts if wave_position(0, h) < 0.1}
    again = {h for h in hosts if wave_position(1, h) < 0.1}
    assert len(first & again) < 30  # another rollout seed: other hosts go first


def test_waves_open_a_growing_share_over_time() -> None:
    waves = parse_waves("10%@0s,50%@10m,100%@30m")
    start = utc(2024, 5, 1, 12)
    assert opened_share(waves, start, start) == 0.1
    assert opened_share(waves, start, start + timedelta(minutes=9, seconds=59)) == 0.1
    assert opened_share(waves, start, start + timedelta(minutes=10)) == 0.5
    assert opened_share(waves, start, start + timedelta(hours=5)) == 1.0
    assert wave_open(waves, start, start, 0.05)
    assert not wave_open(waves, start, start, 0.1)  # the share is exclusive: [0, 0.1)
    assert wave_open(waves, start, start + timedelta(minutes=30), 0.999)
    assert wave_opens_at(waves, start, 0.3) == start + timedelta(minutes=10)
    assert wave_opens_at(waves, start, 0.05) == start
    late = (Wave(share=1.0, after=60),)
    assert opened_share(late, start, start) == 0.0 and not wave_open(late, start, start, 0.0)


@pytest.mark.parametrize(("text", "words"), [
    ("10%@0s,50%", "'50%' is not a wave"),
    ("10%@0s,50%@10m", "the last wave must have share 1.0"),
    ("50%@10m,20%@20m,100%@30m", "waves must be in order"),
    ("150%@0", "less than or equal to 1"),
    ("10%@soon,100%@1h", "'soon' is not a duration"),
])
def test_bad_waves_are_one_line_usage_errors(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        parse_waves(text)
    assert "\n" not in caught.value.message and "SHARE@AFTER" in (caught.value.hint or "")


def test_waves_from_fractions_and_bare_seconds() -> None:
    assert parse_waves("0.25@0, 1@90") == (Wave(share=0.25, after=0), Wave(share=1.0, after=90))
