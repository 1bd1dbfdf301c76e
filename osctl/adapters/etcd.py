"""The etcd adapter: a small key-value client over etcd's v3 HTTP gateway, through ``etcd3gw``.

Fleet coordination needs a store that many hosts agree on and that survives the loss of any
minority of its members; etcd is what CoreOS's locksmith and Kubernetes trusted with that. This
module is the only one that imports ``etcd3gw`` (a thin, maintained client of the gRPC gateway:
plain HTTP and JSON, no gRPC stack to build), and everything above it sees four ideas only:

- keys are ``str`` and values are JSON objects (``dict``); the bytes in etcd are compact JSON
  with sorted keys, so equal dicts are equal bytes (compare-and-swap relies on that);
- every write that must not race is a transaction comparing one revision (``create`` compares
  ``create_revision == 0``, ``replace`` and a guarded ``delete`` compare ``mod_revision``);
- leases are integers: keys put under a lease vanish when it expires, which is how a host that
  dies gives back what it held;
- every failure to reach a quorum is one ``EtcdUnavailable``, every refusal one ``EtcdError``.

Failover and retries happen in one place (``_call``): an attempt walks the endpoints, starting
with the last one that answered, until one gives an answer; tenacity repeats attempts with
jittered backoff, bounded by a count and a deadline, so a lost quorum costs seconds, never a hang
(each request has a timeout: without quorum etcd would hold a linearizable request ~7 s).

A retried write may already have been applied (the answer, not the request, was lost). Puts
and deletes are idempotent; ``create`` and ``replace`` ask etcd for the key when their
comparison fails and report success when it holds exactly what they wrote, under their lease:
that can only be their own earlier attempt, because values carry who wrote them and when.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_exc
from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt
from tenacity import stop_after_delay, wait_exponential, wait_random

from osctl.adapters.netaddr import is_loopback
from osctl.errors import EtcdError, EtcdLeaseGone, EtcdUnavailable, UsageError
from osctl.models.refs import validate_etcd_endpoint

log = logging.getLogger(__name__)

API_PATH = "/v3/"  # etcd >= 3.4; set explicitly: discovery would cost a request per client
DEFAULT_PORT = 2379
# Waits between attempts, in seconds; module-level so that tests can make them small.
WAIT_MIN = 0.1
WAIT_MAX = 1.0
# gRPC codes (in the gateway's error body) that mean "this member cannot serve it now, another
# member or a later attempt may": UNAVAILABLE (no leader, leader changed, request timed out),
# DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (too many requests), ABORTED.
_TRANSIENT_CODES = frozenset({14, 4, 8, 10})
_LEASE_NOT_FOUND = "requested lease not found"
_HINT_DOWN = ("check that etcd runs and that a majority of its members are up; "
              "point --etcd / OSCTL_ETCD at reachable members")

T = TypeVar("T")


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd holds it: the JSON value and the revisions that order its changes."""

    key: str
    value: dict[str, Any]
    mod_revision: int  # the store revision of the last write: what compare-and-swap compares
    create_revision: int  # the revision that created it (reset by a delete and re-create)
    version: int  # writes since it was created
    lease: int  # 0: none


@dataclass(frozen=True)
class Event:
    """One change etcd recorded under a prefix, replayed by ``Etcd.history``.

    For a delete, ``value`` and ``lease`` are what the key held just before (a lease expiry is a
    delete too: etcd records no reason).
    """

    revision: int
    kind: Literal["put", "delete"]
    key: str
    value: dict[str, Any]
    lease: int


class _Transient(Exception):
    """This endpoint cannot serve the request now; the next one (or a later attempt) may."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"{endpoint}: {reason}")
        self.endpoint, self.reason = endpoint, reason


class _AllFailed(Exception):
    """Every endpoint failed once in this attempt: what each said."""

    def __init__(self, reasons: dict[str, str]) -> None:
        super().__init__("; ".join(f"{e} ({r})" for e, r in reasons.items()))
        self.reasons = reasons


class Etcd:
    """A client of one etcd cluster, given as the client URLs of some of its members.

    Cheap to construct; nothing is sent before the first call. Safe to share between threads:
    each thread gets its own HTTP sessions (``requests`` sessions are not meant to be shared).

    ``timeout`` bounds one request to one member, ``attempts`` the passes over all endpoints,
    ``deadline`` the whole call (a pass already started is finished).
    """

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 3.0, attempts: int = 3,
                 deadline: float = 15.0) -> None:
        if not endpoints:
            raise UsageError("no etcd endpoints are configured",
                             hint="pass --etcd, set OSCTL_ETCD, or add 'fleet: {etcd: [...]}' to the settings")
        self._parsed = {e.rstrip("/"): _parse_endpoint(e) for e in endpoints}
        self.endpoints = tuple(self._parsed)
        self.timeout, self.attempts, self.deadline = timeout, max(1, attempts), deadline
        self._preferred = 0  # index of the endpoint that answered last: tried first next time
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        # Requests sent, by what they did ("read", "write", "watch", ...): what a fleet costs etcd
        # (bench/fleetsim.py reports it per host). Retries and failovers count: etcd saw them.
        self.requests: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    # -- keys ------------------------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        """The key with its value and revisions, or None; a linearizable read (needs quorum)."""
        kvs = self._range(key, None, None).get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key under ``prefix``, sorted by key, read at one revision (a consistent view)."""
        return [_kv(item) for item in self._range(prefix, prefix_end(prefix), None).get("kvs") or []]

    def revision(self) -> int:
        """The cluster's current store revision (linearizable): where a later ``history`` starts."""
        return _int(self._range("\0", None, None, count_only=True)["header"].get("revision"))

    def put(self, key: str, value: dict[str, Any], *, lease: int | None = None) -> int:
        """Write unconditionally (under ``lease`` when given); the store revision of the write."""
        payload = {"key": _b64(key), "value": _b64(_encode(value)), **_lease_field(lease)}
        return _int(self._post("put", "/kv/put", payload)["header"].get("revision"))

    def create(self, key: str, value: dict[str, Any], *, lease: int | None = None,
               unchanged: tuple[str, int] | None = None, also_delete: str | None = None) -> int | None:
        """Write only if the key does not exist (``create_revision == 0``): the revision of the
        write, or None when the key exists.

        The one primitive a semaphore slot needs: of many hosts creating the same key at
        once, etcd lets exactly one succeed. ``unchanged`` (a key and the ``mod_revision`` the
        caller read it at) adds a condition: that key has not changed since (a host takes a slot
        only under the rollout it read); ``also_delete`` deletes a key in the same transaction
        (its place in the queue). One request instead of three, on the path from a freed slot
        to the next host's swap.
        """
        compare = [{"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}]
        if unchanged is not None:
            compare.append({"key": _b64(unchanged[0]), "result": "EQUAL", "target": "MOD",
                            "mod_revision": str(unchanged[1])})
        extra = [{"request_delete_range": {"key": _b64(also_delete)}}] if also_delete else []
        return self._guarded_put(key, value, lease, compare, extra)

    def replace(self, key: str, value: dict[str, Any], *, mod_revision: int,
                lease: int | None = None) -> int | None:
        """Compare-and-swap: write only if the key is unchanged since ``mod_revision``: the revision
        of the write, or None when the key changed (or is gone).

        Read-modify-write without a lock: read the key, compute, ``replace`` with the revision
        read; None means someone else wrote in between, so read again.
        """
        compare = {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(mod_revision)}
        return self._guarded_put(key, value, lease, [compare])

    def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        """Delete the key (only if unchanged since ``mod_revision``, when given); whether this call did.

        The guarded form deletes only what the caller read, e.g. its own slot, never one that
        expired and was taken by another host in between. A retried delete whose first answer
        was lost reports False although the key is gone: callers that care read again.
        """
        if mod_revision is None:
            return _int(self._post("delete", "/kv/deleterange", {"key": _b64(key)}).get("deleted")) > 0
        txn = {
            "compare": [{"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(mod_revision)}],
            "success": [{"request_delete_range": {"key": _b64(key)}}],
            "failure": [],
        }
        result = self._post("delete", "/kv/txn", txn)
        if not result.get("succeeded"):
            return False
        responses = result.get("responses") or [{}]
        return _int((responses[0].get("response_delete_range") or {}).get("deleted")) > 0

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` (a group's whole state, a test's leftovers); how many."""
        payload = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        return _int(self._post("delete", "/kv/deleterange", payload).get("deleted"))

    def write_many(self, puts: Sequence[tuple[str, dict[str, Any]]], *, clear_prefixes: Sequence[str] = ()) -> int:
        """Delete every key under ``clear_prefixes`` and write ``puts``, as one transaction: no
        reader ever sees one without the other (a new rollout and its group's emptied staging
        marks). The revision of the write."""
        ops: list[dict[str, Any]] = [{"request_delete_range": {"key": _b64(p), "range_end": _b64(prefix_end(p))}}
                                     for p in clear_prefixes]
        ops += [{"request_put": {"key": _b64(k), "value": _b64(_encode(v))}} for k, v in puts]
        result = self._post("write", "/kv/txn", {"compare": [], "success": ops, "failure": []})
        return _int(result["header"].get("revision"))

    def read_many(self, queries: Sequence[Query]) -> tuple[int, list[RangeResult]]:
        """Several range reads at one revision (one request, a transaction of reads): that revision
        and each query's answer. What a waiting host asks in one go: who is ahead of it in the
        queue, and how many slots are taken."""
        ops = [{"request_range": query.payload()} for query in queries]
        result = self._post("read", "/kv/txn", {"compare": [], "success": ops, "failure": []})
        answers = []
        for query, response in zip(queries, result.get("responses") or [], strict=False):
            found = response.get("response_range") or {}
            items = found.get("kvs") or []
            kvs = [_kv_key_only(item) if query.keys_only else _kv(item) for item in items]
            answers.append(RangeResult(_int(found.get("count")), kvs))
        if len(answers) != len(queries):
            raise EtcdError(f"etcd answered {len(answers)} of {len(queries)} reads of one transaction")
        return _int(result["header"].get("revision")), answers

    # -- watches ---------------------------------------------------------------------------
    def watch(self, key: str, *, range_end: bytes | None = None, prefix: bool = False, since: int,
              timeout: float, stop: threading.Event | None = None, wake: threading.Event | None = None,
              wanted: Callable[[Event], bool] = lambda _event: True) -> list[Event] | None:
        """Wait for a change of ``key`` (or the range up to ``range_end``, or every key under it
        with ``prefix``) at revision ``since`` or later: the changes of the first answer holding
        a ``wanted`` one, or None when ``timeout`` passed, or ``stop`` or ``wake`` was set first.

        Why a watch: a host waiting for a slot learns the moment one is freed, with one request,
        instead of asking etcd again and again. Starting at ``since`` (the revision of the read
        that decided to wait, plus one) means nothing that happened in between is missed: etcd
        replays it at once. One stream per call, read by a thread of its own so that the caller
        can give up at its deadline; ending early, a broken stream (the member went away) and a
        compacted history all return an empty list: the caller reads again, which is always
        safe. Unwanted events (e.g. a slot being taken, for a host waiting for one to be freed)
        are skipped without a new request.

        ``wake``: an event the caller may set from elsewhere to end the wait; the reader sets it
        too when it has an answer, so the caller sleeps on one event and nothing polls (a
        thousand waiting agents in one process must cost nothing). ``stop`` is looked at every
        0.2 s, for callers that cannot hand over an event of their own.
        """
        end = prefix_end(key) if prefix else range_end
        create: dict[str, Any] = {"key": _b64(key), "start_revision": str(max(1, since))}
        if end is not None:
            create["range_end"] = _b64(end)
        response = self._call("watch", lambda client: self._open_watch(client, create))
        answer: list[list[Event]] = []  # what the reader found: the wanted events, or [] when the stream ended
        ring = wake if wake is not None else threading.Event()
        abandoned = threading.Event()
        reader = threading.Thread(target=_read_watch, args=(response, wanted, answer, ring, abandoned),
                                  name="etcd-watch", daemon=True)
        reader.start()
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                if answer:
                    return answer[0]
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()) or (wake is not None and wake.is_set()):
                    return None
                ring.wait(left if stop is None else min(left, 0.2))
        finally:
            abandoned.set()
            _abort(response)
            reader.join(timeout=1.0)

    def _open_watch(self, client: etcd3gw.client.Etcd3Client, create: dict[str, Any]) -> requests.Response:
        """POST the watch and return its streamed answer once etcd accepted it (the first line,
        ``created``, is left for the reader). Failures take the same forms as ``Etcd3Client.post``'s,
        so that ``_once`` sorts them the same way."""
        try:
            # The request timeout bounds the answer's start (a member without a leader may never
            # say "created"); once it came, the stream may stay silent as long as nothing changes.
            response = client.session.post(client.get_url("/watch"), json={"create_request": create}, stream=True,
                                           timeout=(self.timeout, self.timeout))
        except requests.exceptions.Timeout as exc:
            raise etcd_exc.ConnectionTimeoutError(str(exc)) from None
        except requests.exceptions.ConnectionError as exc:
            raise etcd_exc.ConnectionFailedError(str(exc)) from None
        if response.status_code != requests.codes["ok"]:
            text = response.text[:400]
            response.close()
            failure = etcd_exc.ConnectionFailedError if response.status_code >= 500 else etcd_exc.Etcd3Exception
            raise failure(text, response.reason)
        sock = _socket_of(response)
        if sock is not None:
            sock.settimeout(None)  # silence is the normal state of a watch; the caller bounds the wait
        return response

    # -- leases ----------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (etcd raises it to its minimum, 2 s by default); its id."""
        result = self._post("grant a lease", "/lease/grant", {"TTL": int(ttl), "ID": 0})
        if result.get("error"):
            raise EtcdError(f"etcd refused a lease of {ttl} s: {result['error']}")
        return _int(result.get("ID"))

    def keepalive(self, lease: int) -> bool:
        """Renew the lease to its full TTL; False when it already expired (its keys are gone).

        One request per renewal, not a stream: a daemon calls this every third of the TTL, and a
        False tells it to grant a new lease and write its keys again.
        """
        result = self._post("keep a lease alive", "/lease/keepalive", {"ID": str(lease)})
        return _int((result.get("result") or {}).get("TTL", -1)) > 0

    def revoke(self, lease: int) -> bool:
        """End the lease now, deleting its keys (a clean shutdown); False if it was already gone."""
        try:
            self._post("revoke a lease", "/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if _LEASE_NOT_FOUND in str(exc):
                return False
            raise
        return True

    def lease_ttl(self, lease: int) -> int:
        """Whole seconds the lease has left (0: expiring now), or -1 when it is gone or never was."""
        return _int(self._post("read a lease", "/lease/timetolive", {"ID": str(lease)}).get("TTL"))

    def lease_alive(self, lease: int) -> bool:
        """Whether the lease still exists, so the keys written under it do (a renewal can still save
        one at 0 s left: the leader revokes expired leases in its own time)."""
        return self.lease_ttl(lease) >= 0 if lease else False

    # -- history ---------------------------------------------------------------------------
    def history(self, prefix: str, since: int, until: int | None = None) -> list[Event]:
        """Every change under ``prefix`` from revision ``since`` to ``until`` (default: now), in order.

        What etcd recorded, not what its writers said: tests replay it to check invariants
        ("never more than N hosts swapping at once") at every revision. Read as one snapshot of
        the prefix per revision (etcd keeps them until compaction; osctl never compacts), diffed
        with the previous one: exact, including deletes by lease expiry, and with no watch stream
        whose end cannot be told from a pause. Costs one read of the prefix per revision (about
        2 ms on loopback): meant for tests and audits, not hot paths.
        """
        until = self.revision() if until is None else until
        since = max(1, since)
        before = self._read_prefix(prefix, since - 1)
        events: list[Event] = []
        for rev in range(since, until + 1):
            now = self._read_prefix(prefix, rev)
            for key in sorted(before.keys() - now.keys()):
                events.append(Event(rev, "delete", key, before[key].value, before[key].lease))
            for kv in now.values():
                if kv.mod_revision == rev:
                    events.append(Event(rev, "put", kv.key, kv.value, kv.lease))
            before = now
        return events

    def _read_prefix(self, prefix: str, revision: int) -> dict[str, KeyValue]:
        """The prefix as it was at a past revision (nothing before the first one)."""
        if revision < 1:
            return {}
        kvs = self._range(prefix, prefix_end(prefix), revision).get("kvs") or []
        return {kv.key: kv for kv in map(_kv, kvs)}

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close every HTTP connection this client opened, in every thread."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self) -> Etcd:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------
    def _guarded_put(self, key: str, value: dict[str, Any], lease: int | None, compare: list[dict[str, Any]],
                     extra: list[dict[str, Any]] | None = None) -> int | None:
        data = _encode(value)
        txn = {
            "compare": compare,
            "success": [{"request_put": {"key": _b64(key), "value": _b64(data), **_lease_field(lease)}}, *(extra or [])],
            "failure": [{"request_range": {"key": _b64(key)}}],
        }
        result = self._post("write", "/kv/txn", txn)
        if result.get("succeeded"):
            return _int(result["header"].get("revision"))
        responses = result.get("responses") or [{}]
        kvs = (responses[0].get("response_range") or {}).get("kvs") or []
        # Our own earlier attempt, whose answer a retry lost: the key holds exactly our write.
        if kvs and base64.b64decode(kvs[0].get("value", "")) == data and _int(kvs[0].get("lease")) == (lease or 0):
            return _int(kvs[0].get("mod_revision"))
        return None

    def _range(self, key: str, range_end: bytes | None, revision: int | None, **options: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"key": _b64(key), **options}
        if range_end is not None:
            payload["range_end"] = _b64(range_end)
        if revision is not None:
            payload["revision"] = str(revision)
        return self._post("read", "/kv/range", payload)

    def _post(self, what: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call(what, lambda client: client.post(client.get_url(path), json=payload))

    def _call(self, what: str, request: Callable[[etcd3gw.client.Etcd3Client], T]) -> T:
        """Run ``request`` against the first endpoint that answers, with bounded retries.

        The one place where failover, retries and the translation of failures happen.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(_AllFailed),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.deadline),
            wait=wait_exponential(multiplier=WAIT_MIN, max=WAIT_MAX) + wait_random(0, WAIT_MIN),
            before_sleep=before_sleep_log(log, logging.WARNING), reraise=True)
        started, passes = time.monotonic(), [0]

        def one_pass() -> T:
            passes[0] += 1
            return self._one_pass(what, request)

        try:
            return retrying(one_pass)
        except _AllFailed as exc:
            tried = ", ".join(f"{e} ({r})" for e, r in exc.reasons.items())
            raise EtcdUnavailable(f"etcd cannot {what}: no endpoint answered ({tried}) after {passes[0]} "
                                  f"attempt(s) in {time.monotonic() - started:.1f} s", hint=_HINT_DOWN) from None

    def _one_pass(self, what: str, request: Callable[[etcd3gw.client.Etcd3Client], T]) -> T:
        reasons: dict[str, str] = {}
        count = len(self.endpoints)
        first = self._preferred
        for step in range(count):
            index = (first + step) % count
            endpoint = self.endpoints[index]
            try:
                result = self._once(endpoint, what, request)
            except _Transient as exc:
                log.debug("etcd at %s cannot %s: %s", endpoint, what, exc.reason)
                reasons[endpoint] = exc.reason
                continue
            self._preferred = index
            return result
        raise _AllFailed(reasons)

    def _once(self, endpoint: str, what: str, request: Callable[[etcd3gw.client.Etcd3Client], T]) -> T:
        """One request to one member: its answer, ``_Transient``, or ``EtcdError``."""
        with self._count_lock:
            self.requests[what] += 1
        try:
            return request(self._client(endpoint))
        except etcd_exc.ConnectionTimeoutError:
            raise _Transient(endpoint, f"no answer within {self.timeout:g} s") from None
        except etcd_exc.ConnectionFailedError as exc:
            raise _Transient(endpoint, _connection_reason(exc)) from None
        except etcd_exc.Etcd3Exception as exc:
            code, message = _error_body(exc)
            if code in _TRANSIENT_CODES:
                raise _Transient(endpoint, message) from None
            if _LEASE_NOT_FOUND in message:
                raise EtcdLeaseGone(f"etcd at {endpoint} refused to {what}: {message}") from None
            raise EtcdError(f"etcd at {endpoint} refused to {what}: {message}") from None
        except (requests.RequestException, ValueError) as exc:  # a broken answer: try another member
            raise _Transient(endpoint, f"unreadable answer ({type(exc).__name__})") from None

    def _client(self, endpoint: str) -> etcd3gw.client.Etcd3Client:
        clients: dict[str, etcd3gw.client.Etcd3Client] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get(endpoint)
        if client is None:
            scheme, host, port = self._parsed[endpoint]
            session = requests.Session()
            session.trust_env = not is_loopback(host)  # a proxy cannot reach our loopback
            with self._sessions_lock:
                self._sessions.append(session)
            client = clients[endpoint] = etcd3gw.client(host=host, port=port, protocol=scheme, timeout=self.timeout,
                                                        api_path=API_PATH, session=session)
        return client


# -- reads of several ranges, and watches ---------------------------------------------------
@dataclass(frozen=True)
class Query:
    """One range read of ``Etcd.read_many``: keys from ``key`` up to ``range_end`` (or every key
    under it with ``prefix``), newest-named first when ``descending``, at most ``limit`` (0: all);
    ``count`` in the answer is every key of the range whatever the limit."""

    key: str
    range_end: bytes | None = None
    prefix: bool = False
    limit: int = 0
    descending: bool = False
    keys_only: bool = False
    count_only: bool = False

    def payload(self) -> dict[str, Any]:
        end = prefix_end(self.key) if self.prefix else self.range_end
        body: dict[str, Any] = {"key": _b64(self.key)}
        if end is not None:
            body["range_end"] = _b64(end)
        if self.limit:
            body["limit"] = str(self.limit)
        if self.descending:
            body |= {"sort_order": "DESCEND", "sort_target": "KEY"}
        if self.keys_only:
            body["keys_only"] = True
        if self.count_only:
            body["count_only"] = True
        return body


@dataclass(frozen=True)
class RangeResult:
    count: int
    kvs: list[KeyValue]


MAX_WATCH_LINE = 4 * 1024 * 1024  # one answer of a watch stream: far above what a group's keys make


def _read_watch(response: requests.Response, wanted: Callable[[Event], bool], answer: list[list[Event]],
                ring: threading.Event, abandoned: threading.Event) -> None:
    """Read a watch stream until it holds a wanted event (put into ``answer``) or ends (``[]``),
    then ring; an end the caller caused (``abandoned``) rings nobody."""
    found: list[Event] = []
    try:
        for line in response.iter_lines(chunk_size=1024):
            if not line:
                continue
            if len(line) > MAX_WATCH_LINE:
                break
            result = json.loads(line).get("result") or {}
            if result.get("canceled") or result.get("compact_revision"):
                break
            found = [e for e in map(_watch_event, result.get("events") or []) if wanted(e)]
            if found:
                break
    except (requests.RequestException, ValueError, AttributeError, OSError, EtcdError):
        pass  # closed by the caller, or a member went away: the caller reads again
    if not abandoned.is_set():
        answer.append(found)
        ring.set()


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket under a streamed answer (urllib3 keeps its connection on the response)."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _abort(response: requests.Response) -> None:
    """End a watch stream that its reader thread may be blocked on: shut the socket down first
    (``close`` alone would wait for the reader's lock, i.e. for etcd's next event)."""
    sock = _socket_of(response)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


def _watch_event(item: dict[str, Any]) -> Event:
    kv = item.get("kv") or {}
    key = base64.b64decode(kv.get("key", "")).decode(errors="replace")
    if item.get("type") == "DELETE":
        return Event(_int(kv.get("mod_revision")), "delete", key, {}, 0)
    parsed = _kv(kv) if kv.get("value") else KeyValue(key, {}, _int(kv.get("mod_revision")), 0, 0, 0)
    return Event(parsed.mod_revision, "put", key, parsed.value, parsed.lease)


def _kv_key_only(item: dict[str, Any]) -> KeyValue:
    key = base64.b64decode(item["key"]).decode(errors="replace")
    return KeyValue(key, {}, _int(item.get("mod_revision")), _int(item.get("create_revision")),
                    _int(item.get("version")), _int(item.get("lease")))


# -- helpers ---------------------------------------------------------------------------------
def _parse_endpoint(endpoint: str) -> tuple[str, str, int]:
    try:
        split = urllib.parse.urlsplit(validate_etcd_endpoint(endpoint))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return split.scheme, split.hostname or "", split.port or DEFAULT_PORT


def _encode(value: dict[str, Any]) -> bytes:
    if not isinstance(value, dict):
        raise TypeError(f"etcd values are JSON objects, not {type(value).__name__}")
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def prefix_end(prefix: str) -> bytes:
    """The first key after every key starting with ``prefix`` (its last byte plus one)."""
    raw = bytearray(prefix.encode())
    if not raw or raw[-1] == 0xFF:
        raise ValueError(f"cannot range over the prefix {prefix!r}")
    raw[-1] += 1
    return bytes(raw)


def _lease_field(lease: int | None) -> dict[str, str]:
    return {"lease": str(lease)} if lease else {}


def _int(value: object) -> int:
    """The gateway sends int64 fields as strings, and leaves out those that are zero."""
    return int(value) if value is not None else 0  # type: ignore[call-overload]


def _kv(item: dict[str, Any]) -> KeyValue:
    key = base64.b64decode(item["key"]).decode(errors="replace")
    raw = base64.b64decode(item.get("value", ""))
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        value = None
    if not isinstance(value, dict):
        raise EtcdError(f"the etcd key {key} does not hold a JSON object ({raw[:40]!r})",
                        hint="something other than osctl wrote it; delete it or use another group")
    return KeyValue(key, value, _int(item.get("mod_revision")), _int(item.get("create_revision")),
                    _int(item.get("version")), _int(item.get("lease")))


def _error_body(exc: etcd_exc.Etcd3Exception) -> tuple[int | None, str]:
    """The gRPC code and message from the gateway's ``{"error", "code"}`` body."""
    text = exc.detail_text or ""
    try:
        body = json.loads(text)
        return int(body.get("code")), str(body.get("message") or body.get("error") or text).removeprefix("etcdserver: ")
    except (ValueError, TypeError, AttributeError, RecursionError):
        reason = exc.args[0] if exc.args else ""
        return None, (text[:200] or str(reason) or type(exc).__name__)


def _connection_reason(exc: etcd_exc.ConnectionFailedError) -> str:
    text = exc.detail_text or ""
    if "Connection refused" in text:
        return "connection refused"
    if "reset by peer" in text or "Connection aborted" in text or "RemoteDisconnected" in text:
        return "connection reset"
    if "Name or service not known" in text or "Failed to resolve" in text:
        return "cannot resolve the host name"
    code, message = _error_body(exc)  # a 503 from a member without a leader lands here too
    return message if code is not None else (text.splitlines()[0][:120] if text else "connection failed")
