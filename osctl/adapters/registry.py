"""The registry adapter: tags and manifest digests over the Distribution HTTP API (v2).

Listing versions and resolving a tag to a digest must not cost a pull, so osctl asks the
registry itself rather than the engine. It speaks to the registry the way the Docker engine
would for the same repository, so that what osctl resolves is what the engine then pulls:

- the scheme and trust come from the engine's ``certs.d`` folder (a CA there means https with
  that CA; loopback registries without one are plain http, as the engine treats them insecure);
- credentials come from the Docker client's config file (``docker login`` writes it), including
  credential helpers; Basic and Bearer-token challenges are both answered;
- the same Accept list, so a tag resolves to the digest the engine records in ``RepoDigests``.

Only the standard library speaks HTTP here: the adapter needs a handful of GETs and HEADs, and
the docker SDK (whose ``requests`` we could borrow) is confined to the engine adapter. Every
transport failure is retried in one place (``_retrying``) and translated into one
``RegistryUnavailable``; every authentication failure into one ``RegistryAuthError``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from tenacity import RetryCallState, Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential, wait_random

from osctl.errors import NotFoundError, OsctlError, RegistryAuthError, RegistryUnavailable, UsageError
from osctl.models.registry import TagManifest

log = logging.getLogger(__name__)

# Waits between attempts, in seconds; module-level so that tests can make them zero.
WAIT_MIN = 0.1
WAIT_MAX = 2.0
RETRY_AFTER_MAX = 5.0  # a 429's Retry-After is honoured, but never beyond this
HELPER_TIMEOUT = 10.0  # for docker-credential-* helpers

IMAGE_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
               "application/vnd.oci.image.manifest.v1+json")
LIST_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
              "application/vnd.oci.image.index.v1+json")
ACCEPT = ", ".join(IMAGE_TYPES[:1] + LIST_TYPES[:1] + IMAGE_TYPES[1:] + LIST_TYPES[1:])

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_REF = re.compile(r"[\w][\w.-]{0,127}|[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
_HINT_DOWN = "check that the registry is running and reachable; versions already stored work offline"


class _Transient(Exception):
    """A failure worth another attempt: the network, a 5xx, a 429."""

    def __init__(self, reason: str, where: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason} ({where})")
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Message
    body: bytes
    url: str

    def error_text(self) -> str:
        """The registry's own words from an ``{"errors": [...]}`` body, when it sent some."""
        try:
            errors = json.loads(self.body).get("errors") or []
            return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors[:3])
        except (ValueError, AttributeError):
            return ""


class Registry:
    """One repository in one registry, e.g. ``127.0.0.1:5000/osctl/os``.

    Cheap to construct; nothing is sent before the first call. Safe to share between threads
    (``manifests`` does): the only shared state is the authorization cache, behind a lock.
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
        self._config = Path(config_dir) / "config.json" if config_dir else Path.home() / ".docker" / "config.json"
        self._scope = f"repository:{name}:pull"
        self._auth: dict[str, str] = {}  # scope -> Authorization header value; tokens live as long as self
        self._creds: tuple[str, str] | None = None
        self._creds_read = False
        self._lock = threading.Lock()
        hostname = urllib.parse.urlsplit(f"//{first}").hostname or first
        context: ssl.SSLContext | None = None
        if any(self._certs.glob("*.crt")):
            scheme, context = "https", _tls_context(self._certs)
        elif _is_loopback(hostname):
            scheme = "http"
        else:
            scheme, context = "https", ssl.create_default_context()
        self.base_url = f"{scheme}://{first}"
        # A proxy cannot reach our own loopback; elsewhere the environment's proxies apply.
        proxies = urllib.request.ProxyHandler({} if _is_loopback(hostname) else None)
        self._opener = urllib.request.build_opener(proxies, urllib.request.HTTPSHandler(context=context))
        # Without a proxy in the way, each thread keeps one connection alive: listing 200 tags is
        # 200 requests, and a new connection plus urllib's machinery for each was half the time.
        self._direct = not proxies.proxies
        self._tls_context = context
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()  # closed by close(), or when self goes
        self._open_lock = threading.Lock()  # not self._lock: that one is held while fetching tokens
        weakref.finalize(self, _close_all, self._open, self._open_lock)

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
            tags.extend(self._json(resp, "tag list").get("tags") or [])
            url = _next_link(resp.headers.get("Link"), resp.url)
            if url and not url.startswith(f"{self.base_url}/"):
                raise OsctlError(f"the registry at {self.host} sent a next-page link to another host: {url}")
        return tags

    def manifest(self, tag_or_digest: str) -> TagManifest:
        """The manifest ``tag_or_digest`` points at now: digest, media type and pull size."""
        resp = self._call("GET", self._manifest_url(tag_or_digest), ACCEPT,
                          missing=lambda: self._not_found(tag_or_digest))
        doc = self._json(resp, f"manifest of {tag_or_digest}")
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if media_type not in IMAGE_TYPES + LIST_TYPES:
            media_type = str(doc.get("mediaType") or media_type)
        digest = resp.headers.get("Docker-Content-Digest") or f"sha256:{hashlib.sha256(resp.body).hexdigest()}"
        if media_type in LIST_TYPES or "manifests" in doc:
            size = 0
        else:
            parts = [doc.get("config"), *(doc.get("layers") or [])]
            size = sum(int(part.get("size") or 0) for part in parts if isinstance(part, dict))
        return TagManifest(tag_or_digest, digest, size, media_type)

    def manifests(self, tags: list[str], workers: int = 8) -> dict[str, TagManifest]:
        """``manifest`` for many tags at once; a tag deleted since it was listed is left out.

        One request per tag is unavoidable (the API has no batch call), so they run in a
        thread pool: 200 tags cost about as long as 200/workers round trips.
        """
        def one(tag: str) -> TagManifest | None:
            try:
                return self.manifest(tag)
            except NotFoundError:
                return None

        if not tags:
            return {}
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tags))), thread_name_prefix="registry") as pool:
                futures = [pool.submit(one, tag) for tag in tags]
                try:
                    found = [future.result() for future in futures]
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        finally:
            self.close()  # the pool's threads are gone; so must their connections be
        return {m.tag: m for m in found if m is not None}

    def digest(self, tag: str) -> str:
        """The digest ``tag`` points at, from a HEAD: no manifest body is transferred."""
        resp = self._call("HEAD", self._manifest_url(tag), ACCEPT, missing=lambda: self._not_found(tag))
        return resp.headers.get("Docker-Content-Digest") or self.manifest(tag).digest

    # -- one request: authentication -------------------------------------------------------
    def _call(self, method: str, url: str, accept: str, *, missing: Callable[[], OsctlError]) -> _Response:
        """Send a request, answer one authentication challenge, translate what is left.

        A second 401 (or any 403) after answering means the credentials are wrong or missing;
        retrying cannot fix that, so it becomes a ``RegistryAuthError`` at once.
        """
        used = self._auth.get(self._scope)
        resp = self._send(method, url, accept, used)
        if resp.status == 401:
            self._answer(resp.headers.get("WWW-Authenticate") or "", used)
            resp = self._send(method, url, accept, self._auth.get(self._scope))
        if resp.status in (401, 403):
            raise self._auth_failed("access denied" if resp.status == 403 else None)
        if resp.status == 404:
            raise missing()
        if resp.status >= 400:
            detail = resp.error_text() or resp.headers.get("Content-Type", "no details")
            tls = b"HTTPS server" in resp.body  # Go's answer to plain http on a TLS port
            raise OsctlError(f"the registry at {self.host} refused {method} {urllib.parse.urlsplit(url).path}: "
                             f"HTTP {resp.status} ({detail})",
                             hint=f"it speaks https: install its CA as {self._certs}/ca.crt" if tls else None)
        return resp

    def _answer(self, challenge: str, used: str | None) -> None:
        """Set the Authorization for our scope from a ``WWW-Authenticate`` challenge.

        Under the lock, and skipped when another thread already answered since ``used`` was
        sent: sixteen workers meeting the same challenge fetch one token, not sixteen.
        """
        with self._lock:
            if self._auth.get(self._scope) != used:
                return
            kind, _, rest = challenge.strip().partition(" ")
            params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                      for m in _PARAM.finditer(rest)}
            creds = self._credentials()
            if kind.lower() == "basic":
                if creds is None:
                    raise self._auth_failed(None)
                self._auth[self._scope] = "Basic " + _basic(creds)
            elif kind.lower() == "bearer" and params.get("realm"):
                self._auth[self._scope] = "Bearer " + self._token(params, creds)
            else:
                raise RegistryAuthError(f"authentication to {self.host} failed: unsupported challenge "
                                        f"{kind or '(none)'!r}", hint=self._auth_hint())

    def _token(self, params: dict[str, str], creds: tuple[str, str] | None) -> str:
        """Ask the challenge's realm for a token (anonymously when we have no credentials)."""
        if urllib.parse.urlsplit(params["realm"]).scheme not in ("http", "https"):  # never file:// or ftp://
            raise RegistryAuthError(f"authentication to {self.host} failed: its token realm is not an http(s) URL",
                                    hint=self._auth_hint())
        query = {"service": params.get("service", ""), "scope": params.get("scope") or self._scope}
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v})
        resp = self._send("GET", url, "application/json", "Basic " + _basic(creds) if creds else None)
        if resp.status in (401, 403):
            raise self._auth_failed(None)
        if resp.status >= 400:
            raise OsctlError(f"the token service of {self.host} answered HTTP {resp.status}: {resp.error_text()}")
        data = self._json(resp, "token answer")
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise OsctlError(f"the token service of {self.host} answered without a token")
        return token

    def _auth_failed(self, reason: str | None) -> RegistryAuthError:
        if reason is None:
            reason = ("the registry refused the credentials from " if self._creds is not None
                      else "it requires credentials and there are none for it in ") + str(self._config)
        return RegistryAuthError(f"authentication to {self.host} failed: {reason}", hint=self._auth_hint())

    def _auth_hint(self) -> str:
        return (f"run `docker login {self.host}` (or set DOCKER_CONFIG to the folder whose config.json "
                f"holds credentials for {self.host})")

    def _credentials(self) -> tuple[str, str] | None:
        """(user, password) for our host from the Docker config file, read once, or None.

        Follows the Docker client: ``credHelpers[host]``, else ``credsStore``, else ``auths``.
        """
        if self._creds_read:
            return self._creds
        config: dict[str, Any] = {}
        if self._config.is_file():
            try:
                config = json.loads(self._config.read_text())
            except (OSError, ValueError) as exc:
                raise RegistryAuthError(f"cannot read the Docker config {self._config}: {type(exc).__name__}",
                                        hint=self._auth_hint()) from None
        helper = (config.get("credHelpers") or {}).get(self.host) or config.get("credsStore")
        creds: tuple[str, str] | None = None
        if helper:
            creds = self._from_helper(str(helper))
        else:
            for key, entry in (config.get("auths") or {}).items():
                if _host_of(key) == self.host and isinstance(entry, dict):
                    creds = _from_entry(entry)
                    if creds:
                        break
        self._creds, self._creds_read = creds, True
        return creds

    def _from_helper(self, helper: str) -> tuple[str, str] | None:
        program = f"docker-credential-{helper}"
        try:
            proc = subprocess.run([program, "get"], input=self.host, capture_output=True, text=True,
                                  timeout=HELPER_TIMEOUT, check=False)
        except FileNotFoundError:
            raise RegistryAuthError(f"the credential helper {program} named in {self._config} is not installed",
                                    hint=f"install {program}, or remove it from {self._config}") from None
        except subprocess.TimeoutExpired:
            raise RegistryAuthError(f"the credential helper {program} did not answer within "
                                    f"{HELPER_TIMEOUT:g} s", hint=self._auth_hint()) from None
        if proc.returncode != 0:
            said = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
            if said and "credentials not found" in said[0].lower():
                return None
            raise RegistryAuthError(f"the credential helper {program} failed for {self.host}: "
                                    f"{said[0][:200] if said else f'exit {proc.returncode}'}", hint=self._auth_hint())
        try:
            data = json.loads(proc.stdout)
            return str(data["Username"]), str(data["Secret"])
        except (ValueError, KeyError, TypeError):
            raise RegistryAuthError(f"the credential helper {program} answered something unreadable",
                                    hint=self._auth_hint()) from None

    # -- one request: transport and retries ------------------------------------------------
    def _send(self, method: str, url: str, accept: str, authorization: str | None) -> _Response:
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

    def _exchange(self, method: str, url: str, accept: str, authorization: str | None) -> _Response:
        """Send once; return any HTTP answer, raise ``_Transient`` for what deserves a retry."""
        where = f"{method} {urllib.parse.urlsplit(url).path}"
        try:
            resp = None
            if self._direct and url.startswith(f"{self.base_url}/"):
                resp = self._keepalive(method, url, accept, authorization)
            if resp is None:  # through a proxy, or a redirect to follow
                resp = self._through_urllib(method, url, accept, authorization)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                said = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
                raise RegistryUnavailable(f"cannot reach the registry at {self.host}: TLS failed ({said})",
                                          hint=f"if it has a private CA, install it as {self._certs}/ca.crt") from None
            raise _Transient(_reason(cause, self._timeout), where) from None
        if resp.status == 429 or resp.status >= 500:
            reason = f"HTTP {resp.status} {http.client.responses.get(resp.status, '')}".strip()
            raise _Transient(reason, where, _retry_after(resp.headers.get("Retry-After")))
        return resp

    def _keepalive(self, method: str, url: str, accept: str, authorization: str | None) -> _Response | None:
        """One request on this thread's kept-alive connection; None for a redirect.

        A kept connection the registry has meanwhile closed fails on first use: that one case
        is retried at once on a fresh connection, everything else is the caller's to judge.
        """
        split = urllib.parse.urlsplit(url)
        path = split.path + (f"?{split.query}" if split.query else "")
        headers = {"Accept": accept, **({"Authorization": authorization} if authorization else {})}
        for fresh in (False, True):
            conn = None if fresh else getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self._connection(split.netloc)
            try:
                conn.request(method, path, headers=headers)
                raw = conn.getresponse()
                body = raw.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._local.conn = None
                if reused:
                    continue
                raise
            except BaseException:
                conn.close()
                self._local.conn = None
                raise
            self._local.conn = None if raw.will_close else conn
            if 300 <= raw.status < 400:
                return None
            return _Response(raw.status, raw.headers, body, url)
        return None

    def _connection(self, netloc: str) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.base_url.startswith("https:"):
            conn = http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._tls_context)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self._timeout)
        with self._open_lock:
            self._open.add(conn)
        return conn

    def close(self) -> None:
        """Close the kept-alive connections (they would also go with the object)."""
        _close_all(self._open, self._open_lock)
        self._local = threading.local()

    def _through_urllib(self, method: str, url: str, accept: str, authorization: str | None) -> _Response:
        request = urllib.request.Request(url, method=method, headers={"Accept": accept})
        if authorization:
            # Unredirected: a redirect (to blob storage, say) must not carry our credentials along.
            request.add_unredirected_header("Authorization", authorization)
        try:
            with self._opener.open(request, timeout=self._timeout) as raw:
                return _Response(raw.status, raw.headers, raw.read(), raw.url)
        except urllib.error.HTTPError as exc:
            with exc:
                return _Response(exc.code, exc.headers, exc.read(), url)

    # -- small helpers ---------------------------------------------------------------------
    def _manifest_url(self, ref: str) -> str:
        if not _REF.fullmatch(ref):
            raise UsageError(f"{ref!r} is neither a tag nor a digest")
        return f"{self.base_url}/v2/{self.name}/manifests/{urllib.parse.quote(ref, safe=':')}"

    def _not_found(self, ref: str) -> NotFoundError:
        sep = "@" if ":" in ref else ":"
        return NotFoundError(f"{self.repository}{sep}{ref} does not exist in the registry")

    def _json(self, resp: _Response, what: str) -> dict[str, Any]:
        try:
            data = json.loads(resp.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise OsctlError(f"the registry at {self.host} sent an unreadable {what}")
        return data


def _close_all(conns: set[http.client.HTTPConnection], lock: threading.Lock) -> None:
    with lock:
        for conn in conns:
            conn.close()
        conns.clear()


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


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _host_of(key: str) -> str:
    """``https://127.0.0.1:5000/v1/`` -> ``127.0.0.1:5000``: config keys come in several spellings."""
    return urllib.parse.urlsplit(key if "//" in key else f"//{key}").netloc


def _from_entry(entry: dict[str, Any]) -> tuple[str, str] | None:
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, password) if sep else None
    if entry.get("username") and entry.get("password") is not None:
        return str(entry["username"]), str(entry["password"])
    return None


def _basic(creds: tuple[str, str]) -> str:
    return base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


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


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, http.client.HTTPException):
        return f"broken HTTP answer ({type(exc).__name__})"
    return str(exc) or type(exc).__name__
