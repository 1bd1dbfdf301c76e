"""The live views of a fleet without etcd: the summary they share (waves, failure budget, last
failures, slots), the watch that keeps it current (one read per burst of changes, etcd away and
back), the web server (page, JSON, an event per change, bad addresses) and the terminal frame."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from osctl.adapters.etcd import Event, KeyValue, Query, RangeResult
from osctl.adapters.webserve import LiveServer, loopback_only, parse_addr
from osctl.cli.app import run
from osctl.cli.fleetpage import PAGE
from osctl.domain import fleetkeys
from osctl.domain.fleetslots import Slot
from osctl.domain.updatepolicy import wave_position
from osctl.errors import EtcdUnavailable, OsctlError, UsageError
from osctl.models.fleet import HostState, Rollout, RolloutFailure, SlotHolder, Wave
from osctl.operations.fleet import FleetStatus
from osctl.operations.fleetview import LAST_FAILURES, GroupWatch, summarize

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
WAVES = (Wave(share=0.1, after=0), Wave(share=0.5, after=600), Wave(share=1.0, after=1800))


def rollout(**changes: Any) -> Rollout:
    fields: dict[str, Any] = {"target": "v1.5", "max_concurrent": 3, "seed": 7, "started_at": NOW,
                              "updated_at": NOW, "waves": WAVES, "failure_budget": 3}
    return Rollout.model_validate(fields | changes)


def host(i: int, phase: str = "idle", running: str = "v1.3") -> HostState:
    return HostState(host_id=f"h-{i:03d}", phase=phase, running=running, updated_at=NOW)  # type: ignore[arg-type]


def failure(i: int, minutes: int, reason: str = "service x unhealthy") -> RolloutFailure:
    return RolloutFailure(host_id=f"h-{i:03d}", version="v1.5", reason=reason, at=NOW + timedelta(minutes=minutes))


def status(**changes: Any) -> FleetStatus:
    hosts = [host(i, "healthy", "v1.5") for i in range(4)] + [host(i, "waiting-wave") for i in range(4, 40)]
    slot = Slot(1, fleetkeys.slot_key("web", 1), SlotHolder(host_id="h-004", version="v1.5", acquired_at=NOW), 5, 9)
    fields: dict[str, Any] = {"group": "web", "rollout": rollout(), "hosts": hosts, "slots": [slot], "revision": 42}
    return FleetStatus(**(fields | changes))


# -- the summary ------------------------------------------------------------------------------
def test_the_summary_counts_hosts_by_version_and_phase_and_slots() -> None:
    summary = summarize(status(), NOW + timedelta(minutes=1), group="web")
    assert summary["hosts"] == 40 and summary["on_target"] == 4 and summary["revision"] == 42
    assert summary["by_version"] == {"v1.3": 36, "v1.5": 4}
    assert summary["by_phase"] == {"healthy": 4, "waiting-wave": 36}
    assert summary["slots"]["taken"] == 1 and summary["slots"]["max"] == 3
    assert summary["slots"]["holders"][0]["host_id"] == "h-004"
    assert summary["rollout"]["target"] == "v1.5" and summary["rollout"]["state"] == "active"
    json.dumps(summary)  # what the page and --json get: JSON as it is


@pytest.mark.parametrize(("minutes", "number", "share", "next_number", "next_in"), [
    (1, 1, 0.1, 2, 540.0),      # the first wave is open, the second opens 10 min after the start
    (10, 2, 0.5, 3, 1200.0),    # exactly when the second opens
    (29, 2, 0.5, 3, 60.0),
    (31, 3, 1.0, None, None),   # the last one is open: nothing next
])
def test_the_wave_open_now_and_the_next(minutes: int, number: int, share: float, next_number: int | None,
                                        next_in: float | None) -> None:
    found = status()
    wave = summarize(found, NOW + timedelta(minutes=minutes), group="web")["wave"]
    assert (wave["number"], wave["of"], wave["share"]) == (number, 3, share)
    # the hosts it lets go are those the agents themselves place below the share
    expected = sum(1 for h in found.hosts if wave_position(7, h.host_id) < share)
    assert wave["hosts_open"] == expected
    if next_number is None:
        assert wave["next"] is None
    else:
        assert wave["next"]["number"] == next_number and wave["next"]["in_seconds"] == next_in


def test_before_the_first_wave_none_is_open() -> None:
    late = rollout(waves=(Wave(share=0.5, after=300), Wave(share=1.0, after=900)))
    wave = summarize(status(rollout=late), NOW + timedelta(seconds=30), group="web")["wave"]
    assert wave["number"] == 0 and wave["share"] == 0 and wave["hosts_open"] == 0
    assert wave["next"]["number"] == 1 and wave["next"]["in_seconds"] == 270.0


def test_budget_and_the_newest_failures_first() -> None:
    fails = tuple(failure(i, minutes=i) for i in range(8))
    summary = summarize(status(rollout=rollout(failures=fails, failure_budget=3, state="paused")),
                        NOW + timedelta(hours=1), group="web")
    assert summary["budget"] == {"used": 8, "budget": 3, "left": 0, "spent": True}
    listed = [f["host_id"] for f in summary["last_failures"]]
    assert listed == [f"h-{i:03d}" for i in range(7, 7 - LAST_FAILURES, -1)]
    everything = summarize(status(rollout=rollout(failures=fails)), NOW, group="web", failures=None)
    assert len(everything["last_failures"]) == 8


def test_budget_left_before_it_is_spent() -> None:
    summary = summarize(status(rollout=rollout(failures=(failure(1, 0),))), NOW, group="web")
    assert summary["budget"] == {"used": 1, "budget": 3, "left": 2, "spent": False}


def test_no_rollout_and_nothing_read_yet() -> None:
    bare = summarize(status(rollout=None, slots=[]), NOW, group="web")
    assert bare["rollout"] is None and bare["wave"] is None and bare["budget"] is None
    assert bare["slots"] == {"taken": 0, "max": None, "holders": []}
    nothing = summarize(None, NOW, group="web", error="etcd cannot read")
    assert nothing["hosts"] == 0 and nothing["revision"] == 0 and nothing["error"] == "etcd cannot read"


# -- the watch --------------------------------------------------------------------------------
class FakeEtcd:
    """Keys in a dict, a revision per write, and watches that wake on any write after ``since``."""

    def __init__(self) -> None:
        self.kvs: dict[str, KeyValue] = {}
        self.rev = 1
        self.down = False
        self.changed = threading.Condition()
        self.watches = 0

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self.changed:
            self.rev += 1
            self.kvs[key] = KeyValue(key, value, self.rev, self.rev, 1, 0)
            self.changed.notify_all()

    def read_many(self, queries: list[Query]) -> tuple[int, list[RangeResult]]:
        if self.down:
            raise EtcdUnavailable("etcd cannot read: no endpoint answered")
        with self.changed:
            answers = []
            for query in queries:
                kvs = [kv for key, kv in sorted(self.kvs.items())
                       if (key.startswith(query.key) if query.prefix else key == query.key)]
                answers.append(RangeResult(len(kvs), kvs))
            return self.rev, answers

    def watch(self, key: str, *, prefix: bool, since: int, timeout: float,
              stop: threading.Event | None = None) -> list[Event] | None:
        self.watches += 1
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.rev < since:
                if self.down:
                    return []
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return None
                self.changed.wait(min(left, 0.05))
            return [Event(self.rev, "put", key, {}, 0)]

    def set_down(self, down: bool) -> None:
        with self.changed:
            self.down = down
            self.rev += 0
            self.changed.notify_all()


def publish(etcd: FakeEtcd, state: HostState) -> None:
    etcd.put(fleetkeys.host_key("web", state.host_id), state.model_dump(mode="json"))


@pytest.fixture
def watched() -> Iterator[tuple[FakeEtcd, GroupWatch]]:
    etcd = FakeEtcd()
    etcd.put(fleetkeys.rollout_key("web"), rollout().model_dump(mode="json"))
    watch = GroupWatch(etcd, "web", min_interval=0.25, retry=0.05)  # type: ignore[arg-type]
    watch.start()
    yield etcd, watch
    watch.stop()


def test_the_watch_reads_again_on_a_change(watched: tuple[FakeEtcd, GroupWatch]) -> None:
    etcd, watch = watched
    first = watch.wait(0, 5)
    assert first.status is not None and first.status.rollout is not None and first.status.hosts == []
    publish(etcd, host(1, "swapping"))
    after = watch.wait(first.seq, 5)
    assert after.seq > first.seq and after.status is not None
    assert [h.phase for h in after.status.hosts] == ["swapping"]
    assert watch.summary(after)["by_phase"] == {"swapping": 1}


def test_a_burst_of_changes_costs_a_few_reads_not_one_each(watched: tuple[FakeEtcd, GroupWatch]) -> None:
    etcd, watch = watched
    first = watch.wait(0, 5)
    reads = watch.reads
    started = time.monotonic()
    for i in range(50):  # a change every 20 ms for about a second: a busy fleet, slowed down
        publish(etcd, host(i, "swapping"))
        time.sleep(0.02)
    spent = time.monotonic() - started
    deadline = time.monotonic() + 5
    while (watch.current().status is None or len(watch.current().status.hosts) < 50) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watch.current().status is not None and len(watch.current().status.hosts) == 50
    # at most one read per min_interval while the burst lasted, plus the one that saw its end
    assert watch.reads - reads <= int(spent / 0.25) + 2, (watch.reads - reads, spent)
    assert watch.current().seq > first.seq


def test_etcd_away_keeps_the_last_status_and_says_why(watched: tuple[FakeEtcd, GroupWatch]) -> None:
    etcd, watch = watched
    good = watch.wait(0, 5)
    etcd.set_down(True)
    etcd.put("/elsewhere", {})  # wakes the watch, whose read then fails
    broken = watch.wait(good.seq, 5)
    assert broken.error is not None and "no endpoint answered" in broken.error
    assert broken.status is good.status and broken.read_at == good.read_at  # the data shown, and from when
    summary = watch.summary(broken)
    assert summary["error"] == broken.error and summary["rollout"]["target"] == "v1.5"
    etcd.set_down(False)
    publish(etcd, host(3, "healthy", "v1.5"))
    deadline = time.monotonic() + 5
    while watch.current().error is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    back = watch.current()
    assert back.error is None and back.status is not None and len(back.status.hosts) == 1


def test_stop_wakes_every_viewer(watched: tuple[FakeEtcd, GroupWatch]) -> None:
    _etcd, watch = watched
    seen = watch.wait(0, 5)
    started = time.monotonic()
    threading.Timer(0.1, watch.stop).start()
    watch.wait(seen.seq, 10)
    assert time.monotonic() - started < 2 and watch.closing


# -- the web server ---------------------------------------------------------------------------
class FakeSource:
    """A ``LiveSource`` whose data the test changes."""

    def __init__(self) -> None:
        self.seq, self.payload = 1, {"hosts": 1, "note": "<b>first</b>"}
        self.cond = threading.Condition()
        self.closed = False

    def change(self, payload: dict[str, Any]) -> None:
        with self.cond:
            self.seq += 1
            self.payload = payload
            self.cond.notify_all()

    def data(self, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
        with self.cond:
            self.cond.wait_for(lambda: self.seq > after or self.closed, timeout)
            return self.seq, dict(self.payload)

    @property
    def closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


@pytest.fixture
def served() -> Iterator[tuple[FakeSource, LiveServer]]:
    source = FakeSource()
    server = LiveServer("127.0.0.1", 0, PAGE, source, heartbeat=30)
    server.serve_in_thread()
    yield source, server
    source.close()
    server.shutdown()
    server.server_close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def get(server: LiveServer, path: str, method: str = "GET") -> Answer:
    """One request on a connection of its own, closed before returning."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=5)
    try:
        conn.request(method, path)
        answer = conn.getresponse()
        return Answer(answer.status, dict(answer.getheaders()), answer.read())
    finally:
        conn.close()


def test_the_page_is_html_that_loads_nothing_else(served: tuple[FakeSource, LiveServer]) -> None:
    _source, server = served
    answer = get(server, "/")
    body = answer.body.decode()
    assert answer.status == 200 and answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == PAGE and "EventSource(\"events\")" in body
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"


def test_the_page_never_turns_data_into_markup() -> None:
    """Host ids and reasons are untrusted: the script builds the DOM with textContent, and the
    page refers to nothing outside itself."""
    script = PAGE[PAGE.index("<script>"):]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "http://" not in PAGE and "https://" not in PAGE and " src=" not in PAGE


def test_status_json_is_the_sources_data(served: tuple[FakeSource, LiveServer]) -> None:
    source, server = served
    answer = get(server, "/status.json")
    assert answer.status == 200 and answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.body) == source.payload


def test_events_push_a_change_to_an_open_stream(served: tuple[FakeSource, LiveServer]) -> None:
    source, server = served
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=5)
    conn.request("GET", "/events")
    answer = conn.getresponse()
    assert answer.status == 200 and answer.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    first = _next_event(answer)
    assert first == ("1", {"hosts": 1, "note": "<b>first</b>"})
    started = time.monotonic()
    source.change({"hosts": 2, "note": "line\nbreak"})
    assert _next_event(answer) == ("2", {"hosts": 2, "note": "line\nbreak"})
    assert time.monotonic() - started < 2  # pushed, not found by a 30 s heartbeat
    answer.close()
    conn.close()


def _next_event(answer: http.client.HTTPResponse) -> tuple[str, dict[str, Any]]:
    """The next ``status`` event of a stream: (id, data)."""
    fields: dict[str, str] = {}
    while True:
        line = answer.fp.readline().decode().rstrip("\n")
        if line == "":
            if fields.get("event") == "status":
                return fields["id"], json.loads(fields["data"])
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


def test_unknown_paths_and_writes_are_refused(served: tuple[FakeSource, LiveServer]) -> None:
    _source, server = served
    assert get(server, "/etc/passwd").status == 404
    refused = get(server, "/status.json", "POST")
    assert refused.status == 405 and refused.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(("addr", "expected"), [
    (None, ("127.0.0.1", 8080)), ("", ("127.0.0.1", 8080)), ("9000", ("127.0.0.1", 9000)),
    ("0.0.0.0:81", ("0.0.0.0", 81)), (":0", ("127.0.0.1", 0)), ("localhost", ("localhost", 8080)),
    ("[::1]:8081", ("::1", 8081)), ("[::1]", ("::1", 8080)), ("::1", ("::1", 8080)),
])
def test_addresses(addr: str | None, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["127.0.0.1:http", "127.0.0.1:70000", "[::1", "[nothere]:80", "a b:80",
                                  "host/path:80", "[::1]x", "-1"])
def test_bad_addresses_are_usage_errors(addr: str) -> None:
    with pytest.raises(UsageError):
        parse_addr(addr)


def test_loopback_or_not() -> None:
    assert loopback_only("127.0.0.1") and loopback_only("::1") and loopback_only("localhost")
    assert not loopback_only("0.0.0.0") and not loopback_only("10.1.2.3") and not loopback_only("::")


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OsctlError, match="in use") as caught:
            LiveServer("127.0.0.1", port, PAGE, FakeSource())
        assert not isinstance(caught.value, UsageError)


def test_an_address_not_on_this_machine_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no such address"):
        LiveServer("192.0.2.1", 0, PAGE, FakeSource())  # TEST-NET-1: never one of ours


@pytest.mark.parametrize(("addr", "code", "words"), [("nonsense:port", 2, "port must be a number"),
                                                    ("[::1", 2, "not an address")])
def test_fleet_serve_with_a_bad_addr_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         addr: str, code: int, words: str) -> None:
    args = ["--root", str(tmp_path), "--etcd", "http://127.0.0.1:9", "fleet", "serve", addr, "--group", "web"]
    assert run(args, debug=False) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error")]) == 1


def test_fleet_serve_on_a_port_in_use_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--root", str(tmp_path), "--etcd", "http://127.0.0.1:9", "fleet", "serve", f"127.0.0.1:{port}"]
        assert run(args, debug=False) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in err and "Traceback" not in err


# -- the terminal frame -----------------------------------------------------------------------
def test_the_frame_shows_etcd_text_as_text_never_as_markup() -> None:
    from rich.console import Console

    from osctl.cli.fleet_cmd import _frame

    hostile = "[bold red]x[/] [link=http://evil]y[/link] <script>"
    summary = summarize(status(rollout=rollout(failures=(failure(9, 0, hostile),), reason="[/]")),
                        NOW + timedelta(minutes=1), group="web")
    console = Console(record=True, width=200, color_system=None)
    console.print(_frame(summary))
    text = console.export_text()
    assert hostile in text and "active ([/])" in text
    assert "wave: 1 of 3 open, 10% of the group" in text and "wave 2 (50%) opens in 9m00s" in text
    assert "failure budget: 1/3 used, 2 left" in text
    assert "swapping: h-004 (slot 1, to v1.5" in text


def test_the_frame_says_when_etcd_is_away() -> None:
    from rich.console import Console

    from osctl.cli.fleet_cmd import _frame

    summary = summarize(status(), NOW, group="web", error="etcd cannot read: no endpoint answered", read_at=NOW)
    console = Console(record=True, width=200, color_system=None)
    console.print(_frame(summary))
    assert "etcd: etcd cannot read: no endpoint answered (trying again; showing what was read at" in \
        console.export_text()


def test_the_frame_before_anything_was_read_guesses_nothing() -> None:
    from rich.console import Console

    from osctl.cli.fleet_cmd import _frame

    console = Console(record=True, width=200, color_system=None)
    console.print(_frame(summarize(None, NOW, group="web", error="etcd cannot read: no endpoint answered")))
    text = console.export_text()
    assert "group web: not read yet" in text and "no rollout" not in text
    assert "etcd: etcd cannot read: no endpoint answered (trying again)" in text
