"""The etcd adapter without etcd: endpoints, failover between members, what is retried, and the
one-line errors. Behaviour against a real cluster: tests/integration/test_etcd.py."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from etcd3gw import exceptions as etcd_exc

from osctl.adapters import etcd as etcd_module
from osctl.adapters.etcd import Etcd
from osctl.errors import EtcdError, EtcdUnavailable, ExitCode, UsageError


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_module, "WAIT_MIN", 0.001)
    monkeypatch.setattr(etcd_module, "WAIT_MAX", 0.002)


class FakeMember:
    """Stands in for etcd3gw's client of one member: answers, or raises what etcd3gw raises."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_url(self, path: str) -> str:
        return path

    def post(self, url: str, json: dict[str, Any]) -> Any:
        self.calls.append((url, json))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def client_with(monkeypatch: pytest.MonkeyPatch, members: dict[str, FakeMember], **kwargs: Any) -> Etcd:
    client = Etcd(list(members), **kwargs)
    monkeypatch.setattr(client, "_client", lambda endpoint: members[endpoint])
    return client


HEADER = {"header": {"revision": "9"}}
REFUSED = etcd_exc.ConnectionFailedError("HTTPConnectionPool(...): [Errno 111] Connection refused")
TIMEOUT = etcd_exc.ConnectionTimeoutError("Read timed out. (read timeout=3)")


def test_fails_over_to_the_next_member_and_sticks_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = FakeMember(REFUSED), FakeMember(HEADER)
    client = client_with(monkeypatch, {"http://a:2379": a, "http://b:2379": b})
    assert client.revision() == 9
    assert client.revision() == 9
    assert len(a.calls) == 1 and len(b.calls) == 2  # the member that answered is asked first next time


@pytest.mark.parametrize("transient", [
    REFUSED, TIMEOUT,
    etcd_exc.ConnectionFailedError('{"error":"etcdserver: no leader","code":14}', "Service Unavailable"),
    etcd_exc.Etcd3Exception('{"error":"etcdserver: too many requests","code":8}', "Too Many Requests"),
])
def test_what_another_member_may_serve_is_retried(monkeypatch: pytest.MonkeyPatch, transient: Exception) -> None:
    a = FakeMember(transient, HEADER)
    client = client_with(monkeypatch, {"http://a:2379": a})
    assert client.revision() == 9 and len(a.calls) == 2


def test_reasons_are_short(monkeypatch: pytest.MonkeyPatch) -> None:
    reset = etcd_exc.ConnectionFailedError(
        "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))")
    client = client_with(monkeypatch, {"http://a:2379": FakeMember(reset)}, attempts=1)
    with pytest.raises(EtcdUnavailable, match=r"\(http://a:2379 \(connection reset\)\) after 1 attempt"):
        client.get("/k")


def test_a_refusal_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    body = '{"error":"etcdserver: mvcc: required revision has been compacted","code":11}'
    a, b = FakeMember(etcd_exc.Etcd3Exception(body, "Bad Request")), FakeMember(HEADER)
    client = client_with(monkeypatch, {"http://a:2379": a, "http://b:2379": b})
    with pytest.raises(EtcdError, match="refused to read: mvcc: required revision has been compacted"):
        client.revision()
    assert len(a.calls) == 1 and b.calls == []


def test_no_member_answers_is_one_bounded_error(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = FakeMember(REFUSED), FakeMember(TIMEOUT)
    client = client_with(monkeypatch, {"http://a:2379": a, "http://b:2379": b}, attempts=3)
    with pytest.raises(EtcdUnavailable) as caught:
        client.put("/k", {"v": 1})
    error = caught.value
    assert error.exit_code == ExitCode.ETCD_UNAVAILABLE and "\n" not in error.message
    assert "etcd cannot put: no endpoint answered (http://a:2379 (connection refused), " \
           "http://b:2379 (no answer within 3 s)) after 3 attempt(s)" in error.message
    assert "majority" in (error.hint or "")
    assert len(a.calls) == len(b.calls) == 3


def test_the_deadline_bounds_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_module, "WAIT_MIN", 0.2)
    monkeypatch.setattr(etcd_module, "WAIT_MAX", 0.2)
    client = client_with(monkeypatch, {"http://a:2379": FakeMember(REFUSED)}, attempts=100, deadline=0.5)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable):
        client.revision()
    assert time.monotonic() - started < 3  # 100 attempts would take 20 s


def test_a_real_refused_port_is_unavailable_quickly() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable, match=f"http://127.0.0.1:{port} \\(connection refused\\)"):
        Etcd([f"http://127.0.0.1:{port}"], timeout=1, attempts=2).get("/k")
    assert time.monotonic() - started < 5  # generous: a loaded machine; a hang would be far longer


def test_create_that_lost_its_answer_recognises_its_own_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retried create whose first attempt was applied: the key holds exactly our value and lease."""
    import base64

    ours = base64.b64encode(b'{"host":"h1","n":1}').decode()
    failed = {"header": {"revision": "12"}, "responses": [{"response_range": {"kvs": [
        {"key": "L2s=", "value": ours, "mod_revision": "11", "lease": "77"}]}}]}
    client = client_with(monkeypatch, {"http://a:2379": FakeMember(failed)})
    assert client.create("/k", {"n": 1, "host": "h1"}, lease=77) == 11
    assert client.create("/k", {"n": 1, "host": "h1"}, lease=78) is None  # another lease: not ours
    assert client.create("/k", {"n": 2, "host": "h1"}, lease=77) is None  # another value: not ours


def test_endpoints_are_checked_and_deduplicated() -> None:
    client = Etcd(["http://127.0.0.1:2379/", "http://127.0.0.1:2379", "https://[::1]"])
    assert client.endpoints == ("http://127.0.0.1:2379", "https://[::1]")
    with pytest.raises(UsageError, match="'127.0.0.1:2379' is not an etcd endpoint"):
        Etcd(["127.0.0.1:2379"])
    with pytest.raises(UsageError, match="no etcd endpoints are configured"):
        Etcd([])


def test_values_are_json_objects() -> None:
    with pytest.raises(TypeError, match="JSON objects"):
        Etcd(["http://127.0.0.1:1"]).put("/k", ["not", "a", "dict"])  # type: ignore[arg-type]
