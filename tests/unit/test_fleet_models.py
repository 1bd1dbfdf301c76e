"""Fleet records and their key layout in etcd, and the host settings that point at a fleet."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from osctl.domain import fleetkeys
from osctl.domain.fleetstate import add_failure
from osctl.domain.userdata import parse_user_data
from osctl.errors import UsageError
from osctl.models.fleet import ALL_AT_ONCE, HostState, Rollout, RolloutFailure, SlotHolder, Wave
from osctl.models.settings import HostSettings

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def rollout(**changes: object) -> Rollout:
    fields: dict[str, object] = {"target": "v1.5", "max_concurrent": 3, "seed": 7, "started_at": NOW,
                                 "updated_at": NOW}
    return Rollout.model_validate(fields | changes)


# -- key layout -------------------------------------------------------------------------------
def test_key_layout() -> None:
    assert fleetkeys.rollout_key("web") == "/osctl/fleet/web/rollout"
    assert fleetkeys.slot_key("web", 2) == "/osctl/fleet/web/slots/2"
    assert fleetkeys.host_key("web", "h-1") == "/osctl/fleet/web/hosts/h-1"
    assert fleetkeys.slot_index("web", "/osctl/fleet/web/slots/2") == 2
    assert fleetkeys.slot_index("web", "/osctl/fleet/web/hosts/2") is None
    assert fleetkeys.host_of("web", "/osctl/fleet/web/hosts/h-1") == "h-1"
    assert fleetkeys.host_of("web", "/osctl/fleet/web-2/hosts/h-1") is None
    # one group's prefix never covers another's keys
    assert not fleetkeys.rollout_key("web-2").startswith(fleetkeys.group_prefix("web"))


@pytest.mark.parametrize("group", ["a/b", "", "../x", "with space", "-lead"])
def test_bad_group_names_are_usage_errors(group: str) -> None:
    with pytest.raises(UsageError, match="is not a fleet group name"):
        fleetkeys.group_prefix(group)


def test_host_ids_in_keys_are_checked() -> None:
    with pytest.raises(UsageError, match="is not a host id"):
        fleetkeys.host_key("web", "a/b")


# -- records ----------------------------------------------------------------------------------
def test_rollout_round_trips_through_json() -> None:
    r = rollout(waves=[{"share": 0.1, "after": "0s"}, {"share": 1, "after": "30m"}], failure_budget=2)
    again = Rollout.model_validate(r.model_dump(mode="json"))
    assert again == r and again.waves == (Wave(share=0.1, after=0), Wave(share=1.0, after=1800))
    assert rollout().waves == ALL_AT_ONCE and rollout().state == "active"


def test_records_ignore_fields_from_newer_writers() -> None:
    data = rollout().model_dump(mode="json") | {"added_in_osctl_9": True}
    assert Rollout.model_validate(data) == rollout()
    state = HostState.model_validate({"host_id": "h", "phase": "idle", "updated_at": NOW.isoformat(), "x": 1})
    assert state.phase == "idle"


@pytest.mark.parametrize(("changes", "words"), [
    ({"target": "latest"}, "'latest' is not a version"),
    ({"max_concurrent": 0}, "greater than or equal to 1"),
    ({"waves": []}, "at least one wave"),
    ({"waves": [{"share": 0.5, "after": 0}]}, "the last wave must have share 1.0"),
    ({"waves": [{"share": 0.5, "after": 60}, {"share": 1.0, "after": 0}]}, "waves must be in order"),
    ({"waves": [{"share": 0, "after": 0}, {"share": 1.0}]}, "greater than 0"),
    ({"started_at": "2024-05-01T12:00:00"}, "timezone"),
    ({"state": "running"}, "'active', 'paused', 'aborted' or 'done'"),
])
def test_bad_rollouts_are_refused(changes: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        rollout(**changes)


def test_unknown_host_phase_is_refused() -> None:
    with pytest.raises(ValidationError, match="phase"):
        HostState(host_id="h", phase="dancing", updated_at=NOW)  # type: ignore[arg-type]


def test_failure_budget_pauses_the_rollout_and_counts_hosts_once() -> None:
    r = rollout(failure_budget=2)
    fail = RolloutFailure(host_id="h1", version="v1.5", reason="service x unhealthy", at=NOW)
    once = add_failure(r, fail, NOW)
    assert once.state == "active" and len(once.failures) == 1
    assert add_failure(once, fail, NOW) == once  # the same host again: not a second failure
    twice = add_failure(once, fail.model_copy(update={"host_id": "h2"}), NOW)
    assert twice.state == "paused" and twice.reason is not None
    assert "2 host(s) failed on v1.5 (h1, h2)" in twice.reason
    # a paused rollout keeps its first reason; an aborted one is never turned into paused
    assert add_failure(twice, fail.model_copy(update={"host_id": "h3"}), NOW).reason == twice.reason
    aborted = rollout(state="aborted", reason="operator")
    assert add_failure(aborted, fail, NOW).state == "aborted"


def test_slot_holder_needs_an_aware_time() -> None:
    assert SlotHolder(host_id="h", version="v1.5", acquired_at=NOW).acquired_at == NOW
    with pytest.raises(ValidationError):
        SlotHolder.model_validate({"host_id": "h", "version": "v1.5", "acquired_at": "2024-05-01T12:00:00"})


# -- settings: the same schema in the settings file and in user data ----------------------------
SECTION = {
    "update": {"policy": "auto", "check_interval": "30s",
               "window": {"days": ["sat", "sun"], "start": "02:00", "length": "3h", "timezone": "Europe/Berlin"}},
    "fleet": {"etcd": ["http://10.0.0.1:2379/", "http://10.0.0.2:2379", "http://10.0.0.1:2379"], "group": "web"},
}


def test_fleet_and_window_settings() -> None:
    settings = HostSettings.model_validate(SECTION)
    assert settings.fleet.etcd == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]  # normalised, deduplicated
    assert settings.fleet.group == "web"
    assert settings.update.window is not None and settings.update.window.length == 3 * 3600
    assert HostSettings().fleet.etcd == [] and HostSettings().fleet.group == "default"
    assert HostSettings().update.window is None


def test_fleet_settings_in_user_data_are_validated_with_positions() -> None:
    text = ("#cloud-config\nosctl:\n  update:\n    window: {start: '02:00', length: 1h, timezone: Mars/Base}\n"
            "  fleet: {etcd: ['10.0.0.1:2379'], group: web}\n")
    data = parse_user_data(text.encode(), "user-data")
    rendered = [issue.render("user-data") for issue in data.issues]
    assert rendered == [
        "user-data:4:42: osctl.update.window.timezone: 'Mars/Base' is not a time zone (an IANA name such as "
        "'UTC' or 'Europe/Berlin')",
        "user-data:5:18: osctl.fleet.etcd[0]: '10.0.0.1:2379' is not an etcd endpoint (use http://HOST:PORT, "
        "e.g. http://127.0.0.1:2379)",
    ]
    good = parse_user_data(b"#cloud-config\nosctl:\n  fleet: {etcd: http://10.0.0.1:2379, group: web}\n", "user-data")
    assert good.issues == []


# -- the queue, staging and the watch ranges ---------------------------------------------------
def test_queue_keys_sort_in_the_order_hosts_joined() -> None:
    keys = [fleetkeys.queue_key("web", 999, "z"), fleetkeys.queue_key("web", 1000, "a"),
            fleetkeys.queue_key("web", 1000, "b")]
    assert sorted(keys) == keys  # a revision of 999 sorts before 1000: zero-padded
    assert keys[0] == "/osctl/fleet/web/queue/0000000000000999.z"
    with pytest.raises(UsageError):
        fleetkeys.queue_key("web", 1, "a/b")


def test_the_head_of_the_queue_watches_the_rollout_and_the_slots_and_nothing_else() -> None:
    start, end = fleetkeys.rollout_and_slots("web")
    inside = [fleetkeys.rollout_key("web"), fleetkeys.slot_key("web", 0), fleetkeys.slot_key("web", 999)]
    outside = [fleetkeys.queue_key("web", 5, "h"), fleetkeys.host_key("web", "h"),
               fleetkeys.staged_key("web", 7, "h"), fleetkeys.rollout_key("web-2"), fleetkeys.slot_key("web-2", 0)]
    assert all(start.encode() <= k.encode() < end for k in inside)
    assert not any(start.encode() <= k.encode() < end for k in outside)


def test_staging_marks_are_per_rollout() -> None:
    assert fleetkeys.staged_key("web", 7, "h") == "/osctl/fleet/web/staged/7/h"
    assert fleetkeys.staged_key("web", 7, "h").startswith(fleetkeys.staged_prefix("web", 7))
    assert not fleetkeys.staged_key("web", 71, "h").startswith(fleetkeys.staged_prefix("web", 7))


@pytest.mark.parametrize(("ahead", "taken", "mine", "limit", "may"), [
    (0, 0, False, 3, True),    # first, all free
    (2, 0, False, 3, True),    # two ahead take two of three free slots: one is left for this host
    (3, 0, False, 3, False),   # three ahead take all three
    (0, 3, False, 3, False),   # first, but nothing is free
    (1, 2, False, 3, False),   # the one free slot is for the host ahead
    (5, 3, True, 3, True),     # it holds one already (an agent restarted mid-swap)
    (0, 4, False, 3, False),   # the limit was lowered: more holders than slots
])
def test_a_queued_host_takes_a_slot_only_when_the_hosts_ahead_leave_one(
        ahead: int, taken: int, mine: bool, limit: int, may: bool) -> None:
    from osctl.domain.fleetqueue import Place
    from osctl.domain.fleetslots import Slot

    slots = [Slot(i, f"k{i}", SlotHolder(host_id="me" if mine and i == 0 else f"h{i}", version="v1.5",
                                         acquired_at=NOW), 1, 1) for i in range(taken)]
    assert Place(ahead, None, slots, 10).may_take("me", limit) is may


def test_staging_past_its_deadline_acts_as_active() -> None:
    from datetime import timedelta

    from osctl.domain.fleetstate import effective_state

    staging = rollout(state="staging", stage_deadline=NOW + timedelta(minutes=5))
    assert effective_state(staging, NOW) == "staging"
    assert effective_state(staging, NOW + timedelta(minutes=5)) == "active"
    assert effective_state(rollout(state="paused"), NOW + timedelta(days=1)) == "paused"
