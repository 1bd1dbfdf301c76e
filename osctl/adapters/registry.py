"""The registry adapter: tags and manifest digests over the Distribution HTTP API (v2).

Listing versions and resolving a tag to a digest must not cost a pull, so osctl asks the
registry itself rather than the engine. It speaks to the registry the way the Docker engine
would for the same repository, so that what osctl resolves is what the engine then pulls:

- the scheme and trust come from the engine's ``certs.d`` folder (a CA there means https with
  that CA; loopback registries without one are plain http, as the engine treats them insecure);
- credentials come from the Docker client's config file (``docker login`` writes it), including
  credential helpers; Basic and Bearer-token challenges are both answered (``registryauth``);
- the same Accept list, so a tag resolves to the digest the engine records in ``RepoDigests``.

HTTP goes through ``requests``, the client the etcd adapter already uses (etcd3gw is built on
it): one well-kept client instead of a hand-written connection pool. One ``Session`` per
``Registry`` keeps connections alive across calls and threads, because listing 200 tags is 200
requests and a new connection for each was half the time. Of the environment it takes the
proxies only (and none for a loopback registry, which a proxy cannot reach): ``~/.netrc`` and
``REQUESTS_CA_BUNDLE`` must not override what config.json and certs.d say, as they do not for
the engine. Every transport failure is retried in one place (``_retrying``) and translated into
one ``RegistryUnavailable``; every authentication failure into one ``RegistryAuthError``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import urllib.parse
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential, wait_random

from osctl.adapters.netaddr import is_loopback
from osctl.adapters.registryauth import Authorizer, error_text, json_object
from osctl.errors import NotFoundError, OsctlError, RegistryUnavailable, UsageError
from osctl.models.registry import TagManifest

log = logging.getLogger(__name__)

# Waits between attempts, in seconds; module-level so that tests can make them zero.
WAIT_MIN = 0.1
WAIT_MAX = 2.0
RETRY_AFTER_MAX = 5.0  # a 429's Retry-After is honoured, but never beyond this
MAX_WORKERS = 16  # requests in flight at once from ``manifests``, and connections kept per host

IMAGE_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
               "application/vnd.oci.image.manifest.v1+json")
LIST_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
              "application/vnd.oci.image.index.v1+json")
ACCEPT = ", ".join(IMAGE_TYPES[:1] + LIST_TYPES[:1] + IMAGE_TYPES[1:] + LIST_TYPES[1:])

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_REF = re.compile(r"[\w][\w.-]{0,127}|[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HINT_DOWN = "check that the registry is running and reachable; versions already stored work offline"


class _Transient(Exception):
    """A failure worth another attempt: the network, a 5xx, a 429."""

    def __init__(self, reason: str, where: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason} ({where})")
        self.reason = reason
        self.retry_after = retry_after


class Registry:
    """One repository in one registry, e.g. ``127.0.0.1:5000/osctl/os``.

    Cheap to construct; nothing is sent before the first call. Safe to share between threads
    (``manifests`` does): requests does not promise that of a session in general, but what ours
    does per request is (urllib3's pool is thread-safe, the cookie jar locks, nothing else in
    the session changes after construction), and the authorization is earned under a lock.
    Its connections close when it is garbage collected.
    """

    def __init__(self, repository: str, *, docker_config: str | None = None,
                 certs_dir: str = "/etc/docker/certs.d", timeout: float = 10.0,
                 attempts: int = 4, page_size: int = 100) -> None:
        first, _, name = repository.partition("/")
        if not name or not ("." in first or ":" in first or first == "localhost"):
            raise UsageError(f"{repository!r} does not name a registry host and a repository in it",
                             hint="give the registry too, e.g. 127.0.0.1:5000/osctl/os; osctl never uses Docker Hub")
        if not _NAME.fullmatch(name):
            raise UsageError(f"{repository!r} is not a valid repository name (lowercase path, no tag)")
        self.repository, self.host, self.name = repository, first, name
        self._timeout, self._attempts, self._page_size = timeout, max(1, attempts), page_size
        self._certs = Path(certs_dir) / first
        config_dir = docker_config or os.environ.get("DOCKER_CONFIG")
        config = Path(config_dir) / "config.json" if config_dir else Path.home() / ".docker" / "config.json"
        self._auth = Authorizer(first, f"repository:{name}:pull", config)
        hostname = urllib.parse.urlsplit(f"//{first}").hostname or first
        context: ssl.SSLContext | None = None
        if any(self._certs.glob("*.crt")):
            scheme, context = "https", _tls_context(self._certs)
        elif is_loopback(hostname):
            scheme = "http"
        else:
            scheme, context = "https", ssl.create_default_context()
        self.base_url = f"{scheme}://{first}"
        self._proxied = not is_loopback(hostname)
        self._session = _session(context)
        weakref.finalize(self, self._session.close)  # callers never close a Registry; its sockets must not leak

    # -- the API ---------------------------------------------------------------------------
    def tags(self) -> list[str]:
        """Every tag, in the registry's order, following ``Link: <...>; rel="next"`` pages."""
        url: str | None = f"{self.base_url}/v2/{self.name}/tags/list?n={self._page_size}"
        tags: list[str] = []
        seen: set[str] = set()
        while url and url not in seen:
            seen.add(url)
            resp = self._call("GET", url, "application/json", missing=lambda: NotFoundError(
                f"{self.repository} does not exist in the registry (NAME_UNKNOWN)",
                hint=f"check the repository name; the registry at {self.host} holds no tags for {self.name}"))
            tags.extend(json_object(resp, self.host, "tag list").get("tags") or [])
            url = _next_link(resp.headers.get("Link"), resp.url)
            if url and not url.startswith(f"{self.base_url}/"):
                raise OsctlError(f"the registry at {self.host} sent a next-page link to another host: {url}")
        return tags

    def manifest(self, tag_or_digest: str) -> TagManifest:
        """The manifest ``tag_or_digest`` points at now: digest, media type and pull size."""
        resp = self._call("GET", self._manifest_url(tag_or_digest), ACCEPT,
                          missing=lambda: self._not_found(tag_or_digest))
        doc = json_object(resp, self.host, f"manifest of {tag_or_digest}")
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if media_type not in IMAGE_TYPES + LIST_TYPES:
            media_type = str(doc.get("mediaType") or media_type)
        digest = resp.headers.get("Docker-Content-Digest") or f"sha256:{hashlib.sha256(resp.content).hexdigest()}"
        if media_type in LIST_TYPES or "manifests" in doc:
            size = 0
        else:
            parts = [doc.get("config"), *(doc.get("layers") or [])]
            size = sum(int(part.get("size") or 0) for part in parts if isinstance(part, dict))
        return TagManifest(tag_or_digest, digest, size, media_type)

    def manifests(self, tags: list[str], workers: int = 8) -> dict[str, TagManifest]:
        """``manifest`` for many tags at once; a tag deleted since it was listed is left out.

        One request per tag is unavoidable (the API has no batch call), so they run in a
        thread pool: 200 tags cost about as long as 200/workers round trips. Workers beyond
        ``MAX_WORKERS`` would open connections the session does not keep, so there are no more.
        """
        def one(tag: str) -> TagManifest | None:
            try:
                return self.manifest(tag)
            except NotFoundError:
                return None

        if not tags:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tags), MAX_WORKERS)),
                                thread_name_prefix="registry") as pool:
            futures = [pool.submit(one, tag) for tag in tags]
            try:
                found = [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return {m.tag: m for m in found if m is not None}

    def digest(self, tag: str) -> str:
        """The digest ``tag`` points at, from a HEAD: no manifest body is transferred."""
        resp = self._call("HEAD", self._manifest_url(tag), ACCEPT, missing=lambda: self._not_found(tag))
        return resp.headers.get("Docker-Content-Digest") or self.manifest(tag).digest

    # -- one request: authentication -------------------------------------------------------
    def _call(self, method: str, url: str, accept: str, *,
              missing: Callable[[], OsctlError]) -> requests.Response:
        """Send a request, answer one authentication challenge, translate what is left.

        A second 401 (or any 403) after answering means the credentials are wrong or missing;
        retrying cannot fix that, so it becomes a ``RegistryAuthError`` at once.
        """
        used = self._auth.header
        resp = self._send(method, url, accept, used)
        if resp.status_code == 401:
            self._auth.answer(resp.headers.get("WWW-Authenticate") or "", used,
                              lambda realm, basic: self._send("GET", realm, "application/json", basic))
            resp = self._send(method, url, accept, self._auth.header)
        if resp.status_code in (401, 403):
            raise self._auth.failed("access denied" if resp.status_code == 403 else None)
        if resp.status_code == 404:
            raise missing()
        if resp.status_code >= 400:
            detail = error_text(resp) or resp.headers.get("Content-Type", "no details")
            tls = b"HTTPS server" in resp.content  # Go's answer to plain http on a TLS port
            raise OsctlError(f"the registry at {self.host} refused {method} {urllib.parse.urlsplit(url).path}: "
                             f"HTTP {resp.status_code} ({detail})",
                             hint=f"it speaks https: install its CA as {self._certs}/ca.crt" if tls else None)
        return resp

    # -- one request: transport and retries ------------------------------------------------
    def _send(self, method: str, url: str, accept: str, authorization: str | None) -> requests.Response:
        """One request with bounded retries of transient failures; the one place they happen."""
        try:
            return self._retrying()(self._exchange, method, url, accept, authorization)
        except _Transient as exc:
            raise RegistryUnavailable(f"cannot reach the registry at {self.host}: {exc.reason} "
                                      f"(after {self._attempts} attempts)", hint=_HINT_DOWN) from exc

    def _retrying(self) -> Retrying:
        backoff = wait_exponential(multiplier=WAIT_MIN, max=WAIT_MAX) + wait_random(0, WAIT_MIN)  # jitter

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return min(exc.retry_after, RETRY_AFTER_MAX)
            return backoff(state)

        return Retrying(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(self._attempts),
                        wait=wait, before_sleep=before_sleep_log(log, logging.WARNING), reraise=True)

    def _exchange(self, method: str, url: str, accept: str, authorization: str | None) -> requests.Response:
        """Send once; return any HTTP answer, raise ``_Transient`` for what deserves a retry."""
        where = f"{method} {urllib.parse.urlsplit(url).path}"
        headers = {"Accept": accept, **({"Authorization": authorization} if authorization else {})}
        # What urllib's ProxyHandler did: the environment's proxies unless no_proxy names the host.
        proxies = requests.utils.get_environ_proxies(url) if self._proxied else {}
        try:
            resp = self._session.request(method, url, headers=headers, proxies=proxies, timeout=self._timeout)
        except requests.RequestException as exc:
            cause = _innermost(exc)
            if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                said = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
                raise RegistryUnavailable(f"cannot reach the registry at {self.host}: TLS failed ({said})",
                                          hint=f"if it has a private CA, install it as {self._certs}/ca.crt") from None
            raise _Transient(_reason(exc, cause, self._timeout), where) from None
        if resp.status_code == 429 or resp.status_code >= 500:
            reason = f"HTTP {resp.status_code} {http.client.responses.get(resp.status_code, '')}".strip()
            raise _Transient(reason, where, _retry_after(resp.headers.get("Retry-After")))
        return resp

    # -- small helpers ---------------------------------------------------------------------
    def _manifest_url(self, ref: str) -> str:
        if not _REF.fullmatch(ref):
            raise UsageError(f"{ref!r} is neither a tag nor a digest")
        return f"{self.base_url}/v2/{self.name}/manifests/{urllib.parse.quote(ref, safe=':')}"

    def _not_found(self, ref: str) -> NotFoundError:
        sep = "@" if ":" in ref else ":"
        return NotFoundError(f"{self.repository}{sep}{ref} does not exist in the registry")


class _Session(requests.Session):
    """A session whose redirects never carry our ``Authorization``, to another host or the same.

    requests drops it only on the way to another host; but a registry redirects to storage that
    signs its own URLs (and may share the host), and credentials are the registry's alone.
    """

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        prepared_request.headers.pop("Authorization", None)


class _TrustAdapter(HTTPAdapter):
    """Verifies TLS as the engine does: the system's CAs (plus the certs.d folder's), not requests' bundle.

    requests would load its own bundle (certifi) into the context of every new connection.
    ``context`` holds the system's CAs and the folder's; without one (a plain-http loopback
    registry, whose token realm may still be https) urllib3 makes a context with the system's.
    """

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self._context = context  # before HTTPAdapter.__init__, which calls init_poolmanager
        super().__init__(pool_maxsize=MAX_WORKERS)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._context, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, ssl_context=self._context, **proxy_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing to add: the context has the CAs and client certificates; the pool requires a valid peer."""


def _session(context: ssl.SSLContext | None) -> requests.Session:
    """The registry's session: connections kept for every worker, no settings from the environment."""
    session = _Session()
    session.trust_env = False  # proxies come from _exchange; nothing else from the environment
    adapter = _TrustAdapter(context)
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    return session


def _tls_context(folder: Path) -> ssl.SSLContext:
    """System CAs plus the folder's ``*.crt``, and its ``*.cert``/``*.key`` client pairs: the engine's rules."""
    context = ssl.create_default_context()
    try:
        for ca in sorted(folder.glob("*.crt")):
            context.load_verify_locations(cafile=str(ca))
        for cert in sorted(folder.glob("*.cert")):
            context.load_cert_chain(str(cert), str(cert.with_suffix(".key")))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use the certificates in {folder}: {exc}") from None
    return context


def _next_link(header: str | None, current: str) -> str | None:
    for part in (header or "").split(","):
        match = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if match and re.search(r'rel="?next"?', match.group(2)):
            return urllib.parse.urljoin(current, match.group(1))
    return None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to the usual backoff


def _innermost(exc: BaseException) -> BaseException:
    """The exception at the bottom: requests wraps urllib3's, which wraps the socket's or ssl's.

    urllib3 chains with ``raise ... from`` in some places and passes the cause as an argument in
    others, so both are followed (the implicit context last: it may be unrelated).
    """
    seen = {id(exc)}
    while True:
        inner = (exc.__cause__ or next((a for a in exc.args if isinstance(a, BaseException)), None)
                 or exc.__context__)
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _reason(exc: requests.RequestException, cause: BaseException, timeout: float) -> str:
    """A few words for what went wrong: ``exc`` as requests raised it, ``cause`` at the bottom."""
    if isinstance(exc, requests.Timeout) or isinstance(cause, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, ConnectionError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "connection reset"
    if isinstance(cause, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(cause, http.client.HTTPException) or isinstance(
            exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return f"broken HTTP answer ({type(cause).__name__})"
    return str(cause) or type(cause).__name__
