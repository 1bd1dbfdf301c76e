"""The registry adapter against a scripted registry served by a thread of the test.

Each test sets ``stub.route`` to a function from the request to the answer, and reads back
``stub.seen`` to count what the adapter sent (and ``stub.connections`` the TCP connections it
opened: the stub speaks HTTP/1.1 and keeps them alive, as a registry does). Waits between
retries are zero here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from osctl.adapters import registry as registry_module
from osctl.adapters.registry import ACCEPT, Registry
from osctl.errors import ExitCode, NotFoundError, OsctlError, RegistryAuthError, RegistryUnavailable, UsageError
from tests.support.stub_registry import send_answer

V2 = "application/vnd.docker.distribution.manifest.v2+json"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
USER, PASSWORD = "osctl-user", "s3cret-Pa55word"
TOKEN = "tok-3f1c9b2e7a"
IMAGE = {"schemaVersion": 2, "mediaType": V2,
         "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469, "digest": "sha256:" + "c" * 64},
         "layers": [{"size": 1000, "digest": "sha256:" + "a" * 64}, {"size": 20000, "digest": "sha256:" + "b" * 64}]}

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query))


@dataclass
class Stub:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0  # TCP connections accepted
    route: Callable[[Seen], Answer] = lambda request: (404, {}, b"")
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self, path_part: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if path_part in s.path]


def answer(status: int, doc: object = None, headers: dict[str, str] | None = None) -> Answer:
    body = b"" if doc is None else json.dumps(doc).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, body


def manifest_answer(doc: dict[str, object], media_type: str, digest: bool = True) -> Answer:
    body = json.dumps(doc).encode()
    headers = {"Content-Type": media_type}
    if digest:
        headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
    return 200, headers, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so that connection reuse can be counted
    server: _Server

    def _serve(self) -> None:
        request = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        stub = self.server.stub
        with stub.lock:
            stub.seen.append(request)
        send_answer(self, *stub.route(request))

    do_GET = do_HEAD = do_CONNECT = _serve  # CONNECT: when the stub stands in for a proxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops the SYNs of 16 concurrent workers: a 1 s stall
    stub: Stub

    def get_request(self) -> tuple[socket.socket, object]:
        accepted = super().get_request()
        with self.stub.lock:
            self.stub.connections += 1
        return accepted


@contextlib.contextmanager
def serving(context: ssl.SSLContext | None = None) -> Iterator[Stub]:
    """A stub registry on a free loopback port, over TLS when given a server ``context``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.stub = Stub(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def stub() -> Iterator[Stub]:
    with serving() as stub:
        yield stub


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "WAIT_MIN", 0.0)
    monkeypatch.setattr(registry_module, "WAIT_MAX", 0.0)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """An empty DOCKER_CONFIG folder; tests write credentials into it with ``write_config``."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    return folder


def write_config(folder: Path, config: dict[str, object]) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def login(folder: Path, host: str, user: str = USER, password: str = PASSWORD) -> None:
    write_config(folder, {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}})


@pytest.fixture
def make(stub: Stub, config_dir: Path, tmp_path: Path) -> Callable[..., Registry]:
    def make(**kwargs: object) -> Registry:
        kwargs.setdefault("docker_config", str(config_dir))
        kwargs.setdefault("certs_dir", str(tmp_path / "certs.d"))
        return Registry(f"{stub.host}/osctl/os", **kwargs)  # type: ignore[arg-type]
    return make


def assert_secret_free(exc: BaseException) -> None:
    text = f"{exc} {getattr(exc, 'hint', '')}"
    for secret in (PASSWORD, TOKEN, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()):
        assert secret not in text


# -- repository names ------------------------------------------------------------------------
@pytest.mark.parametrize("repository", ["osctl/os", "library/ubuntu", "ubuntu", "docker.io", "127.0.0.1:5000/OS"])
def test_repository_without_registry_host_is_refused(repository: str) -> None:
    with pytest.raises(UsageError) as info:
        Registry(repository)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(("repository", "host", "name"), [
    ("localhost/osctl/os", "localhost", "osctl/os"),
    ("127.0.0.1:5000/osctl/os", "127.0.0.1:5000", "osctl/os"),
    ("registry.example.com/a/b/c", "registry.example.com", "a/b/c"),
])
def test_repository_splits_into_host_and_name(repository: str, host: str, name: str, tmp_path: Path) -> None:
    registry = Registry(repository, certs_dir=str(tmp_path))  # constructing sends nothing
    assert (registry.host, registry.name) == (host, name)


def test_scheme_follows_the_engine_rules(tmp_path: Path) -> None:
    assert Registry("127.0.0.1:5000/os", certs_dir=str(tmp_path)).base_url == "http://127.0.0.1:5000"
    assert Registry("localhost:5000/os", certs_dir=str(tmp_path)).base_url == "http://localhost:5000"
    assert Registry("[::1]:5000/os", certs_dir=str(tmp_path)).base_url == "http://[::1]:5000"
    assert Registry("registry.example.com/os", certs_dir=str(tmp_path)).base_url == "https://registry.example.com"


# -- tags --------------------------------------------------------------------------------------
def test_tags_follow_link_pagination_and_keep_the_registry_order(stub: Stub, make: Callable[..., Registry]) -> None:
    every = ["v1.10", "v1.2", "latest", "v0.9", "v2.0-rc1", "v1.3", "edge"]

    def route(request: Seen) -> Answer:
        size = int(request.query["n"])
        start = every.index(request.query["last"]) + 1 if "last" in request.query else 0
        page = every[start:start + size]
        headers = {}
        if start + size < len(every):  # a relative next link, as Distribution sends it
            headers["Link"] = f'</v2/osctl/os/tags/list?last={page[-1]}&n={size}>; rel="next"'
        return answer(200, {"name": "osctl/os", "tags": page}, headers)

    stub.route = route
    assert make(page_size=3).tags() == every
    pages = stub.requests("/tags/list")
    assert len(pages) == 3 and all(p.method == "GET" for p in pages)
    assert pages[0].query == {"n": "3"} and pages[2].query == {"n": "3", "last": "v1.3"}


def test_tags_of_an_empty_repository_is_an_empty_list(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: answer(200, {"name": "osctl/os", "tags": None})
    assert make().tags() == []


def test_unknown_repository_is_not_found(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: answer(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "unknown"}]})
    with pytest.raises(NotFoundError) as info:
        make().tags()
    assert f"{stub.host}/osctl/os does not exist" in str(info.value) and "NAME_UNKNOWN" in str(info.value)
    assert len(stub.seen) == 1


# -- manifests ---------------------------------------------------------------------------------
def test_manifest_size_digest_and_accept_header(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: manifest_answer(IMAGE, V2)
    found = make().manifest("v1.4")
    body = json.dumps(IMAGE).encode()
    assert found.tag == "v1.4" and found.media_type == V2
    assert found.size == 1469 + 1000 + 20000
    assert found.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    request = stub.seen[0]
    assert request.path == "/v2/osctl/os/manifests/v1.4"
    accepted = {part.strip() for part in request.headers["accept"].split(",")}
    assert accepted == {V2, LIST, "application/vnd.oci.image.manifest.v1+json", OCI_INDEX}


def test_manifest_digest_is_computed_when_the_header_is_missing(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: manifest_answer(IMAGE, V2, digest=False)
    body = json.dumps(IMAGE).encode()
    assert make().manifest("v1.4").digest == "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("media_type", [LIST, OCI_INDEX])
def test_manifest_list_has_size_zero(stub: Stub, make: Callable[..., Registry], media_type: str) -> None:
    index = {"schemaVersion": 2, "mediaType": media_type,
             "manifests": [{"mediaType": V2, "size": 528, "digest": "sha256:" + "1" * 64, "platform": {"os": "linux"}}]}
    stub.route = lambda request: manifest_answer(index, media_type)
    found = make().manifest("v1.4")
    assert (found.size, found.media_type) == (0, media_type)


def test_missing_tag_is_not_found_and_not_retried(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: answer(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    with pytest.raises(NotFoundError) as info:
        make().manifest("v9.99")
    assert str(info.value) == f"{stub.host}/osctl/os:v9.99 does not exist in the registry"
    with pytest.raises(NotFoundError):
        make().digest("v9.99")
    assert len(stub.seen) == 2


def test_digest_is_a_head_request(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: manifest_answer(IMAGE, V2)
    expected = "sha256:" + hashlib.sha256(json.dumps(IMAGE).encode()).hexdigest()
    assert make().digest("v1.4") == expected
    assert [s.method for s in stub.seen] == ["HEAD"] and stub.seen[0].headers["accept"] == ACCEPT


def test_bad_reference_is_a_usage_error(stub: Stub, make: Callable[..., Registry]) -> None:
    with pytest.raises(UsageError):
        make().manifest("../../etc")
    assert stub.seen == []


def test_manifests_run_concurrently_and_leave_out_vanished_tags(stub: Stub, make: Callable[..., Registry]) -> None:
    tags = [f"v1.{i}" for i in range(200)]
    vanished = {"v1.7", "v1.150"}
    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    def route(request: Seen) -> Answer:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        tag = request.path.rsplit("/", 1)[1]
        if tag in vanished:
            return answer(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        return manifest_answer({**IMAGE, "layers": [{"size": int(tag.split(".")[1]), "digest": "sha256:" + "d" * 64}]}, V2)

    stub.route = route
    started = time.monotonic()
    found = make().manifests(tags, workers=16)
    elapsed = time.monotonic() - started
    assert list(found) == [t for t in tags if t not in vanished]
    assert found["v1.42"].size == 1469 + 42
    assert state["most"] > 1, "requests ran one at a time"
    assert elapsed < 200 * 0.02 / 2, f"{elapsed:.2f}s is not concurrent"
    assert make().manifests([]) == {}


def test_manifests_raise_errors_other_than_not_found(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: answer(400, {"errors": [{"code": "TAG_INVALID", "message": "bad"}]})
    with pytest.raises(OsctlError, match="HTTP 400"):
        make().manifests(["a", "b", "c"], workers=2)


def test_requests_share_a_few_kept_connections(stub: Stub, make: Callable[..., Registry]) -> None:
    every = [f"v1.{i}" for i in range(200)]
    stub.route = lambda request: (answer(200, {"tags": every}) if "/tags/" in request.path
                                  else manifest_answer(IMAGE, V2))
    registry = make()
    assert len(registry.manifests(registry.tags(), workers=8)) == 200
    registry.digest("v1.0")
    assert len(stub.seen) == 202
    assert stub.connections <= 8, f"{stub.connections} connections for 202 requests: one per worker at most"
    before = stub.connections
    make().manifests(every[:64], workers=64)
    assert stub.connections - before <= registry_module.MAX_WORKERS, "more workers than connections kept"


# -- retries -----------------------------------------------------------------------------------
def test_server_error_twice_then_success(stub: Stub, make: Callable[..., Registry]) -> None:
    def route(request: Seen) -> Answer:
        return answer(500) if len(stub.seen) <= 2 else answer(200, {"tags": ["v1.4"]})

    stub.route = route
    assert make().tags() == ["v1.4"]
    assert len(stub.seen) == 3


def test_429_with_retry_after_zero_is_retried_at_once(stub: Stub, make: Callable[..., Registry],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A long backoff that Retry-After: 0 must override; if it did not, this test would take seconds.
    monkeypatch.setattr(registry_module, "WAIT_MIN", 3.0)
    monkeypatch.setattr(registry_module, "WAIT_MAX", 3.0)

    def route(request: Seen) -> Answer:
        return answer(429, headers={"Retry-After": "0"}) if len(stub.seen) == 1 else answer(200, {"tags": ["v1"]})

    stub.route = route
    started = time.monotonic()
    assert make().tags() == ["v1"]
    assert time.monotonic() - started < 1.0
    assert len(stub.seen) == 2


def test_retry_after_is_capped_and_waits_are_logged(stub: Stub, make: Callable[..., Registry],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(registry_module, "RETRY_AFTER_MAX", 0.01)

    def route(request: Seen) -> Answer:
        return answer(429, headers={"Retry-After": "3600"}) if len(stub.seen) == 1 else answer(200, {"tags": []})

    stub.route = route
    with caplog.at_level(logging.WARNING, logger=registry_module.__name__):
        assert make().tags() == []
    assert "in 0.01 seconds" in caplog.text and "429" in caplog.text


def test_always_unavailable_gives_up_after_the_attempts(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: answer(503)
    with pytest.raises(RegistryUnavailable) as info:
        make(attempts=3).manifest("v1.4")
    assert len(stub.seen) == 3
    assert str(info.value) == (f"cannot reach the registry at {stub.host}: HTTP 503 Service Unavailable "
                               "(after 3 attempts)")
    assert info.value.exit_code == ExitCode.REGISTRY_UNAVAILABLE and info.value.hint


def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RegistryUnavailable) as info:
        Registry(f"127.0.0.1:{port}/osctl/os", attempts=2, certs_dir=str(tmp_path)).tags()
    assert str(info.value) == f"cannot reach the registry at 127.0.0.1:{port}: connection refused (after 2 attempts)"


def test_timeout_is_unavailable(stub: Stub, make: Callable[..., Registry]) -> None:
    def route(request: Seen) -> Answer:
        time.sleep(0.3)
        return answer(200, {"tags": []})

    stub.route = route
    with pytest.raises(RegistryUnavailable, match=r"no answer within 0.1 s \(after 2 attempts\)"):
        make(timeout=0.1, attempts=2).tags()


@pytest.mark.parametrize("status", [400, 405, 418])
def test_client_errors_are_not_retried(stub: Stub, make: Callable[..., Registry], status: int) -> None:
    stub.route = lambda request: answer(status, {"errors": [{"code": "UNSUPPORTED", "message": "nope"}]})
    with pytest.raises(OsctlError) as info:
        make().tags()
    assert not isinstance(info.value, RegistryUnavailable)
    assert f"HTTP {status}" in str(info.value) and "UNSUPPORTED" in str(info.value)
    assert len(stub.seen) == 1


# -- authentication ----------------------------------------------------------------------------
def bearer_route(stub: Stub, *, anonymous_ok: bool = False, key: str = "token") -> Callable[[Seen], Answer]:
    good_basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    challenge = (f'Bearer realm="http://{stub.host}/token",service="stub-registry",'
                 f'scope="repository:osctl/os:pull"')

    def route(request: Seen) -> Answer:
        if request.path == "/token":
            if request.query != {"service": "stub-registry", "scope": "repository:osctl/os:pull"}:
                return answer(400, {"errors": [{"code": "BAD_SCOPE"}]})
            given = request.headers.get("authorization")
            if given == good_basic:
                return answer(200, {key: TOKEN, "expires_in": 300})
            if given is None and anonymous_ok:
                return answer(200, {key: "anonymous"})
            return answer(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": 'Basic realm="tokens"'})
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return answer(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge})
        if "/tags/" in request.path:
            return answer(200, {"name": "osctl/os", "tags": ["v1.4"]})
        return manifest_answer(IMAGE, V2)

    return route


@pytest.mark.parametrize("key", ["token", "access_token"])
def test_bearer_challenge_fetches_one_token_and_reuses_it(stub: Stub, make: Callable[..., Registry],
                                                         config_dir: Path, key: str) -> None:
    login(config_dir, stub.host)
    stub.route = bearer_route(stub, key=key)
    registry = make()
    assert registry.tags() == ["v1.4"]
    assert registry.manifest("v1.4").size == 22469
    assert registry.manifests([f"v{i}" for i in range(20)], workers=8)
    assert len(stub.requests("/token")) == 1, "the token is cached for the registry's lifetime"
    # Only the first request went unauthenticated; the realm got basic credentials, never the registry.
    assert [s.headers.get("authorization") for s in stub.seen[:2]] == [None, stub.seen[1].headers["authorization"]]
    assert stub.seen[1].headers["authorization"].startswith("Basic ")
    assert all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in stub.seen[2:])


def test_bearer_anonymous_when_there_are_no_credentials(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = bearer_route(stub, anonymous_ok=True)  # but the registry wants the real token
    with pytest.raises(RegistryAuthError) as info:
        make().tags()
    assert "authentication to" in str(info.value) and f"docker login {stub.host}" in (info.value.hint or "")
    assert "authorization" not in stub.requests("/token")[0].headers


def test_bearer_with_wrong_password(stub: Stub, make: Callable[..., Registry], config_dir: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    login(config_dir, stub.host, password="wrong-" + PASSWORD)
    stub.route = bearer_route(stub)
    with caplog.at_level(logging.DEBUG), pytest.raises(RegistryAuthError) as info:
        make().manifest("v1.4")
    assert str(info.value).startswith(f"authentication to {stub.host} failed: the registry refused the credentials")
    assert info.value.exit_code == ExitCode.USAGE
    assert_secret_free(info.value)
    assert PASSWORD not in caplog.text


def basic_route(stub: Stub) -> Callable[[Seen], Answer]:
    good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def route(request: Seen) -> Answer:
        if request.headers.get("authorization") != good:
            return answer(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": 'Basic realm="Registry"'})
        return answer(200, {"name": "osctl/os", "tags": ["v1.3", "v1.4"]})

    return route


@pytest.mark.parametrize("entry", [
    {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()},
    {"username": USER, "password": PASSWORD},
])
def test_basic_challenge_uses_the_docker_config(stub: Stub, make: Callable[..., Registry], config_dir: Path,
                                                entry: dict[str, str]) -> None:
    write_config(config_dir, {"auths": {"other.example.com": {"auth": "eDp5"}, f"https://{stub.host}": entry}})
    stub.route = basic_route(stub)
    registry = make()
    assert registry.tags() == ["v1.3", "v1.4"]
    assert registry.tags() == ["v1.3", "v1.4"]
    assert len(stub.seen) == 3, "basic credentials are sent up front once the registry asked for them"


def test_docker_config_env_var_is_read(stub: Stub, config_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    login(config_dir, stub.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    stub.route = basic_route(stub)
    assert Registry(f"{stub.host}/osctl/os", certs_dir=str(tmp_path)).tags() == ["v1.3", "v1.4"]


def test_basic_with_wrong_credentials(stub: Stub, make: Callable[..., Registry], config_dir: Path) -> None:
    login(config_dir, stub.host, user=USER, password="not-" + PASSWORD)
    stub.route = basic_route(stub)
    with pytest.raises(RegistryAuthError) as info:
        make().tags()
    message, hint = str(info.value), info.value.hint or ""
    assert message == (f"authentication to {stub.host} failed: the registry refused the credentials from "
                       f"{config_dir / 'config.json'}")
    assert f"docker login {stub.host}" in hint and "DOCKER_CONFIG" in hint
    assert_secret_free(info.value)
    assert "not-" + PASSWORD not in message + hint


def test_basic_without_credentials_suggests_docker_login(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = basic_route(stub)
    with pytest.raises(RegistryAuthError) as info:
        make().tags()
    assert "requires credentials and there are none" in str(info.value)
    assert f"docker login {stub.host}" in (info.value.hint or "")
    assert len(stub.seen) == 1


def test_forbidden_is_an_auth_error(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: answer(403, {"errors": [{"code": "DENIED"}]})
    with pytest.raises(RegistryAuthError, match="access denied"):
        make().tags()


@pytest.mark.parametrize("elsewhere", ["/elsewhere", "http://localhost:{port}/elsewhere"])
def test_authorization_is_not_carried_across_a_redirect(stub: Stub, make: Callable[..., Registry],
                                                        config_dir: Path, elsewhere: str) -> None:
    login(config_dir, stub.host)
    basic = basic_route(stub)

    def route(request: Seen) -> Answer:
        if request.path == "/elsewhere":
            return manifest_answer(IMAGE, V2)
        if request.headers.get("authorization") is None:
            return basic(request)
        return 307, {"Location": elsewhere.format(port=stub.port)}, b""

    stub.route = route
    assert make().manifest("v1.4").size == 22469
    assert "authorization" not in stub.requests("/elsewhere")[0].headers


# -- TLS and proxies ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two CAs (``ca.crt``, ``other.crt``) and ``server.crt`` for 127.0.0.1 signed by the first; EC keys, for speed."""
    folder = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1")
    commands = [("-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=osctl test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
                for ca in ("ca", "other")]
    commands.append(("-CA", "ca.crt", "-CAkey", "ca.key", "-keyout", "server.key", "-out", "server.crt",
                     "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                     "-addext", "basicConstraints=CA:FALSE"))
    for args in commands:
        subprocess.run(["openssl", "req", "-x509", *ec, *args], cwd=folder, check=True, capture_output=True, timeout=60)
    return folder


def test_tls_trusts_the_certs_d_ca_and_only_it(certificates: Path, config_dir: Path, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.crt", certificates / "server.key")
    with serving(context) as stub:
        stub.route = lambda request: answer(200, {"tags": ["v1.4"]})
        for certs, ca in (("good", "ca"), ("bad", "other")):
            (tmp_path / certs / stub.host).mkdir(parents=True)
            shutil.copy(certificates / f"{ca}.crt", tmp_path / certs / stub.host / "ca.crt")
        registry = Registry(f"{stub.host}/osctl/os", docker_config=str(config_dir), certs_dir=str(tmp_path / "good"))
        assert registry.base_url == f"https://{stub.host}"
        assert [registry.tags() for _ in range(20)] == [["v1.4"]] * 20
        assert stub.connections == 1
        with pytest.raises(RegistryUnavailable, match=r"TLS failed \(.*certificate") as info:
            Registry(f"{stub.host}/osctl/os", docker_config=str(config_dir), certs_dir=str(tmp_path / "bad")).tags()
        assert "after" not in str(info.value), "a certificate problem is not worth retrying"
        assert str(tmp_path / "bad" / stub.host / "ca.crt") in (info.value.hint or "")
        assert len(stub.seen) == 20


def test_proxies_come_from_the_environment_but_never_for_loopback(stub: Stub, make: Callable[..., Registry],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://{stub.host}")  # the stub stands in for a proxy too
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    stub.route = lambda request: answer(200, {"tags": ["v1.4"]}) if request.method == "GET" else answer(403)
    assert make().tags() == ["v1.4"]
    assert stub.seen[0].target.startswith("/v2/"), "sent to the loopback registry itself, not through the proxy"
    # 0.0.0.0 reaches this machine but is not loopback: a registry elsewhere, as far as proxies go.
    elsewhere = f"0.0.0.0:{stub.port}"
    with pytest.raises(RegistryUnavailable, match="Tunnel connection failed: 403"):
        Registry(f"{elsewhere}/osctl/os", attempts=1, certs_dir=str(tmp_path)).tags()
    assert (stub.seen[-1].method, stub.seen[-1].target) == ("CONNECT", elsewhere)
    monkeypatch.setenv("no_proxy", "0.0.0.0")
    with pytest.raises(RegistryUnavailable, match="TLS failed"):  # https straight to the plain-http stub
        Registry(f"{elsewhere}/osctl/os", attempts=1, certs_dir=str(tmp_path)).tags()
    assert len(stub.seen) == 2


# -- credential helpers ------------------------------------------------------------------------
def helper(folder: Path, name: str, script: str) -> None:
    path = folder / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_credential_helper_answers_with_host_on_stdin(stub: Stub, make: Callable[..., Registry], config_dir: Path,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper(bin_dir, "stub", f"""read host
[ "$1" = get ] && [ "$host" = "{stub.host}" ] || {{ echo "credentials not found in native keychain"; exit 1; }}
echo '{{"ServerURL": "'$host'", "Username": "{USER}", "Secret": "{PASSWORD}"}}'
""")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    write_config(config_dir, {"credHelpers": {stub.host: "stub"}, "auths": {stub.host: {}}})
    stub.route = basic_route(stub)
    assert make().tags() == ["v1.3", "v1.4"]


def test_missing_credential_helper_is_a_clear_error(stub: Stub, make: Callable[..., Registry],
                                                    config_dir: Path) -> None:
    write_config(config_dir, {"credsStore": "osctl-no-such-helper"})
    stub.route = basic_route(stub)
    with pytest.raises(RegistryAuthError, match="docker-credential-osctl-no-such-helper .* is not installed"):
        make().tags()


def test_token_realm_must_be_http(stub: Stub, make: Callable[..., Registry]) -> None:
    stub.route = lambda request: answer(401, headers={"WWW-Authenticate": 'Bearer realm="file:///etc/passwd"'})
    with pytest.raises(RegistryAuthError, match="not an http"):
        make().tags()
