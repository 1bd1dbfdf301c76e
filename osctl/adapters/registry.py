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

What the registry says is parsed here, at the edge, into typed values (``models.registry``,
``models.refs``) or refused with a ``RegistryError`` that names the registry and the tag: a
registry is outside text like any other, and its digests end up in engine API paths. Every body
read is bounded (``MAX_BODY``), every digest header must be a digest and match the body it
came with, and a manifest whose sizes are not numbers is that tag's error, not a crash.
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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential, wait_random

from osctl.adapters.netaddr import is_loopback
from osctl.adapters.registryauth import Authorizer, error_text, json_object
from osctl.errors import IntegrityError, NotFoundError, OsctlError, RegistryError, RegistryUnavailable, UsageError
from osctl.models.refs import Digest, Tag
from osctl.models.registry import Descriptor, ImageManifest, TagManifest, Unreadable

log = logging.getLogger(__name__)

# Waits between attempts, in seconds; module-level so that tests can make them zero.
WAIT_MIN = 0.1
WAIT_MAX = 2.0
RETRY_AFTER_MAX = 5.0  # a 429's Retry-After is honoured, but never beyond this
MAX_WORKERS = 16  # requests in flight at once from ``manifests``, and connections kept per host
CHUNK = 1 << 20  # bytes per read of a streamed blob
MAX_BODY = 4 << 20  # bytes read of any answer: Distribution refuses manifests above 4 MiB itself

IMAGE_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
               "application/vnd.oci.image.manifest.v1+json")
LIST_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
              "application/vnd.oci.image.index.v1+json")
ACCEPT = ", ".join(IMAGE_TYPES[:1] + LIST_TYPES[:1] + IMAGE_TYPES[1:] + LIST_TYPES[1:])

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
Body = bytes | Callable[[], bytes | Iterable[bytes]] | None  # a request body, or a maker of one per attempt
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
                 attempts: int = 4, page_size: int = 100, push: bool = False) -> None:
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
        # ``push``: the release tool publishes metadata here; hosts only ever ask to pull.
        self._auth = Authorizer(first, f"repository:{name}:{'pull,push' if push else 'pull'}", config)
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
            tags.extend(self._tag_page(json_object(resp, self.host, "tag list")))
            url = _next_link(resp.headers.get("Link"), resp.url)
            if url and not url.startswith(f"{self.base_url}/"):
                raise RegistryError(f"the registry at {self.host} sent a next-page link to another host: {url!r:.80}")
        return tags

    def _tag_page(self, doc: dict[str, Any]) -> list[str]:
        """One page's tags. Not a list of strings: the answer is unusable. A string that is not a
        tag names nothing a registry can hold, so it is left out, as non-version tags are above."""
        found = doc.get("tags") or []
        if not isinstance(found, list) or not all(isinstance(tag, str) for tag in found):
            raise RegistryError(f"the registry at {self.host} sent a tag list of {self.name} that is not a list "
                                "of strings", hint="the registry is broken or hostile; stored versions work offline")
        valid = [tag for tag in found if _is_tag(tag)]
        if len(valid) < len(found):
            log.warning("the registry at %s listed %d names that are not tags; left out", self.host,
                        len(found) - len(valid))
        return valid

    def manifest(self, tag_or_digest: str) -> TagManifest:
        """The manifest ``tag_or_digest`` points at now: digest, media type, pull size, config blob.

        A ``RegistryError`` naming the tag when the answer is not a manifest osctl can use.
        """
        _, doc, media_type, digest = self._get_manifest(tag_or_digest)
        try:
            size, config = _manifest_facts(doc, media_type)
        except ValueError as exc:
            raise self._unusable(tag_or_digest, "a malformed manifest", str(exc)) from None
        return TagManifest(tag_or_digest, digest, size, media_type, config)

    def _get_manifest(self, tag_or_digest: str) -> tuple[requests.Response, dict[str, Any], str, Digest]:
        """GET a manifest: the answer, its JSON object, its media type (the header's, else the
        document's own) and its digest (checked against the body)."""
        resp = self._call("GET", self._manifest_url(tag_or_digest), ACCEPT,
                          missing=lambda: self._not_found(tag_or_digest))
        doc = json_object(resp, self.host, f"manifest of {self._shown(tag_or_digest)}")
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if media_type not in IMAGE_TYPES + LIST_TYPES:
            media_type = str(doc.get("mediaType") or media_type)[:100]
        return resp, doc, media_type, self._content_digest(resp, tag_or_digest)

    def manifests(self, tags: list[str], workers: int = 8) -> dict[str, TagManifest | Unreadable]:
        """``manifest`` for many tags at once; a tag deleted since it was listed is left out, a
        tag whose manifest is malformed is ``Unreadable`` (one bad tag must not hide the others).

        One request per tag is unavoidable (the API has no batch call), so they run in a
        thread pool: 200 tags cost about as long as 200/workers round trips.
        """
        def one(tag: str) -> TagManifest | Unreadable | None:
            try:
                return self.manifest(tag)
            except NotFoundError:
                return None
            except RegistryError as exc:
                return Unreadable(tag, exc.reason)

        found = self._parallel(one, tags, workers)
        return {m.tag: m for m in found if m is not None}

    def digest(self, tag: str) -> Digest:
        """The digest ``tag`` points at, from a HEAD: no manifest body is transferred."""
        resp = self._call("HEAD", self._manifest_url(tag), ACCEPT, missing=lambda: self._not_found(tag))
        if "Docker-Content-Digest" not in resp.headers:
            return self.manifest(tag).digest
        return self._header_digest(resp, tag)

    def image_manifest(self, tag_or_digest: str) -> ImageManifest:
        """The single-platform image manifest ``tag_or_digest`` names, its bytes kept as served.

        A manifest list is refused: copying an image (a bundle) needs one platform's blobs, and
        the engine's choice of platform is not osctl's to guess.
        """
        resp, doc, media_type, digest = self._get_manifest(tag_or_digest)
        if media_type in LIST_TYPES or "manifests" in doc:
            raise self._unusable(tag_or_digest, "a multi-platform manifest list",
                                 "osctl copies single-platform images only; name one platform's manifest by digest")
        try:
            config = Descriptor(*_descriptor(doc.get("config"), "config")[::-1], _media(doc.get("config")))
            layers = doc.get("layers")
            if not isinstance(layers, list):
                raise ValueError(f"layers is {_kind(layers)}, not a list")
            found = tuple(Descriptor(*_descriptor(layer, f"layers[{i}]")[::-1], _media(layer))
                          for i, layer in enumerate(layers))
        except ValueError as exc:
            raise self._unusable(tag_or_digest, "a malformed manifest", str(exc)) from None
        return ImageManifest(digest, media_type, resp.content, config, found)

    def image_config(self, config: Digest, tag: str) -> dict[str, Any]:
        """An image's config blob, parsed (what ``docker inspect`` shows), without a pull.

        The blob is content-addressed: what arrives must hash to ``config``, so a cache keyed by
        the digest never needs refreshing.
        """
        config = Digest(config)
        resp = self._call("GET", f"{self.base_url}/v2/{self.name}/blobs/{config}", "*/*",
                          missing=lambda: self._unusable(tag, "no image config", f"blob {config[:19]}... is missing"))
        if hashlib.sha256(resp.content).hexdigest() != config.hex:
            raise self._unusable(tag, "an image config", f"the blob does not hash to {config[:19]}...")
        return json_object(resp, self.host, f"image config of {self._shown(tag)}")

    def image_labels(self, config: Digest, tag: str) -> dict[str, str]:
        """The labels in an image's config blob (``image_config``)."""
        doc = self.image_config(config, tag)
        section = doc.get("config") or {}
        labels = (section.get("Labels") if isinstance(section, dict) else section) or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise self._unusable(tag, "an image config", "its labels are not a map of strings")
        return labels

    def image_labels_many(self, configs: dict[Digest, str], workers: int = 8
                          ) -> dict[Digest, dict[str, str] | Unreadable]:
        """``image_labels`` for ``config digest -> a tag that names it``, concurrently."""
        def one(config: Digest) -> dict[str, str] | Unreadable:
            try:
                return self.image_labels(config, configs[config])
            except RegistryError as exc:
                return Unreadable(configs[config], exc.reason)

        digests = sorted(configs)
        return dict(zip(digests, self._parallel(one, digests, workers), strict=True))

    def blob(self, digest: Digest, what: str) -> bytes:
        """A blob's bytes (at most ``MAX_BODY``), refused unless they hash to ``digest``.

        ``what`` names the blob in errors (``"timestamp.json"``).
        """
        digest = Digest(digest)
        resp = self._call("GET", f"{self.base_url}/v2/{self.name}/blobs/{digest}", "*/*",
                          missing=lambda: self._unusable(what, "no blob", f"{digest[:19]}... is missing"))
        if hashlib.sha256(resp.content).hexdigest() != digest.hex:
            raise self._unusable(what, "a blob", f"it does not hash to {digest[:19]}...")
        return resp.content

    def manifest_body(self, tag_or_digest: str, accept: str = ACCEPT) -> tuple[bytes, str]:
        """The manifest's own bytes and media type, as served (at most ``MAX_BODY``).

        What the bytes are is for the caller to check: TUF checks them against a signed length
        and hash, the artifact reader against its one-layer shape.
        """
        resp = self._call("GET", self._manifest_url(tag_or_digest), accept,
                          missing=lambda: self._not_found(tag_or_digest))
        self._content_digest(resp, tag_or_digest)  # a digest header must still be the body's own
        return resp.content, (resp.headers.get("Content-Type") or "").split(";")[0].strip()

    def has_blob(self, digest: Digest) -> bool:
        try:
            self._call("HEAD", f"{self.base_url}/v2/{self.name}/blobs/{Digest(digest)}", "*/*",
                       missing=lambda: NotFoundError(str(digest)))
        except NotFoundError:
            return False
        return True

    def push_blob(self, data: bytes) -> Digest:
        """Upload ``data`` as a blob (skipped when the registry has it already); its digest.

        Blobs osctl pushes this way are small metadata files; a layer goes through
        ``push_blob_chunks``.
        """
        digest = Digest(f"sha256:{hashlib.sha256(data).hexdigest()}")
        self.push_blob_chunks(digest, lambda: data)
        return digest

    def push_manifest(self, tag: str, body: bytes, media_type: str) -> Digest:
        """Put a manifest under ``tag`` (or under its own digest, for an image named by digest
        alone); the digest the registry stored it as (checked against the body)."""
        computed = Digest(f"sha256:{hashlib.sha256(body).hexdigest()}")
        if _is_digest(tag) and tag != computed:
            raise IntegrityError(f"a manifest for {self.repository}@{tag[:19]}... hashes to {computed[:19]}...")
        ref = tag if _is_digest(tag) else Tag(tag)
        resp = self._call("PUT", self._manifest_url(ref), "*/*", missing=lambda: self._not_found(tag),
                          body=body, content_type=media_type)
        if "Docker-Content-Digest" in resp.headers and self._header_digest(resp, tag) != computed:
            raise self._unusable(tag, "a digest for a pushed manifest that is not the manifest's own")
        return computed

    def blob_chunks(self, digest: Digest, size: int, what: str) -> Iterator[bytes]:
        """A blob of any size (a layer), as chunks, checked while it arrives.

        ``size`` is what the manifest declares: more bytes than that are refused as they come,
        fewer or other bytes when the last chunk is in (``RegistryError`` naming ``what``). The
        request is sent, and transport failures retried, before the first chunk is yielded; a
        connection lost halfway is ``RegistryUnavailable``.
        """
        digest = Digest(digest)
        resp = self._call("GET", f"{self.base_url}/v2/{self.name}/blobs/{digest}", "*/*",
                          missing=lambda: self._unusable(what, "no blob", f"{digest[:19]}... is missing"), stream=True)
        hasher, seen = hashlib.sha256(), 0
        try:
            for chunk in resp.iter_content(CHUNK):
                seen += len(chunk)
                if seen > size:
                    raise self._unusable(what, "a blob", f"{digest[:19]}... is longer than the {size} bytes declared")
                hasher.update(chunk)
                yield chunk
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"cannot reach the registry at {self.host}: the connection was lost while "
                                      f"reading {what} ({_reason(exc, _innermost(exc), self._timeout)})",
                                      hint=_HINT_DOWN) from None
        finally:
            resp.close()
        if seen != size or hasher.hexdigest() != digest.hex:
            raise self._unusable(what, "a blob", f"{digest[:19]}... arrived as {seen} bytes that do not hash to it")

    def push_blob_chunks(self, digest: Digest, chunks: Callable[[], bytes | Iterable[bytes]]) -> bool:
        """Upload a blob of any size from ``chunks()`` (called once per attempt); False when the
        registry had it already. The registry checks the digest it is given against the bytes.

        Two requests, as the API's monolithic upload is defined: POST opens an upload, PUT with
        the digest closes it with the whole body (chunked when ``chunks()`` is an iterator).
        """
        digest = Digest(digest)
        if self.has_blob(digest):
            return False
        where = lambda: self._not_found(f"{self.name} uploads")  # noqa: E731
        opened = self._call("POST", f"{self.base_url}/v2/{self.name}/blobs/uploads/", "*/*", missing=where)
        location = opened.headers.get("Location") or ""
        url = urllib.parse.urljoin(f"{self.base_url}/v2/{self.name}/blobs/uploads/", location)
        if opened.status_code != 202 or not url.startswith(f"{self.base_url}/"):
            raise RegistryError(f"the registry at {self.host} did not open an upload for {self.name} "
                                f"(HTTP {opened.status_code}, location {location[:80]!r})")
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        self._call("PUT", url, "*/*", missing=where, body=chunks, content_type="application/octet-stream")
        return True

    def _parallel(self, one: Callable[[Any], Any], items: list[Any], workers: int) -> list[Any]:
        """``one`` of each item, in a thread pool of at most ``MAX_WORKERS`` (the connections kept)."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items), MAX_WORKERS)),
                                thread_name_prefix="registry") as pool:
            futures = [pool.submit(one, item) for item in items]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    # -- what the registry says about digests ----------------------------------------------
    def _content_digest(self, resp: requests.Response, ref: str) -> Digest:
        """The manifest's digest: the header when sent, and it must be the body's own."""
        computed = Digest(f"sha256:{hashlib.sha256(resp.content).hexdigest()}")
        if "Docker-Content-Digest" not in resp.headers:
            return computed
        said = self._header_digest(resp, ref)
        if said != computed:
            raise self._unusable(ref, "a manifest under another digest",
                                 f"Docker-Content-Digest {said[:19]}... but the body is {computed[:19]}...")
        return computed

    def _header_digest(self, resp: requests.Response, ref: str) -> Digest:
        try:
            return Digest(resp.headers.get("Docker-Content-Digest"))
        except ValueError as exc:
            raise self._unusable(ref, "a Docker-Content-Digest that is not a digest", str(exc)) from None

    def _unusable(self, ref: str, what: str, detail: str | None = None) -> RegistryError:
        """The one error for an answer osctl refuses: the registry, the tag, what, and why."""
        where = f"{self.name}{'@' if ':' in ref else ':'}{self._shown(ref)}"
        said = f": {detail}" if detail else ""
        return RegistryError(f"the registry at {self.host} sent {what} for {where}{said}",
                             hint="that tag cannot be used; the registry is broken or hostile", reason=f"{what}{said}")

    @staticmethod
    def _shown(ref: str) -> str:
        return ref if len(ref) <= 80 else ref[:77] + "..."

    # -- one request: authentication -------------------------------------------------------
    def _call(self, method: str, url: str, accept: str, *, missing: Callable[[], OsctlError],
              body: Body = None, content_type: str | None = None, stream: bool = False) -> requests.Response:
        """Send a request, answer one authentication challenge, translate what is left.

        A second 401 (or any 403) after answering means the credentials are wrong or missing;
        retrying cannot fix that, so it becomes a ``RegistryAuthError`` at once.
        """
        used = self._auth.header
        resp = self._send(method, url, accept, used, body, content_type, stream)
        if resp.status_code == 401:
            self._auth.answer(resp.headers.get("WWW-Authenticate") or "", used,
                              lambda realm, basic: self._send("GET", realm, "application/json", basic))
            resp = self._send(method, url, accept, self._auth.header, body, content_type, stream)
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
    def _send(self, method: str, url: str, accept: str, authorization: str | None, body: Body = None,
              content_type: str | None = None, stream: bool = False) -> requests.Response:
        """One request with bounded retries of transient failures; the one place they happen.

        Every request osctl sends may be sent again: reads, and writes of content-addressed
        blobs and of manifests under a tag, which a second attempt only repeats.
        """
        try:
            return self._retrying()(self._exchange, method, url, accept, authorization, body, content_type, stream)
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

    def _exchange(self, method: str, url: str, accept: str, authorization: str | None, body: Body = None,
                  content_type: str | None = None, stream: bool = False) -> requests.Response:
        """Send once; return any HTTP answer, raise ``_Transient`` for what deserves a retry.

        ``stream``: a successful answer's body is left unread for the caller (a layer blob, too
        large for ``MAX_BODY``); an error answer is still read, bounded. A callable ``body``
        gives a fresh iterable of chunks for each attempt (a layer streamed from a file).
        """
        where = f"{method} {urllib.parse.urlsplit(url).path}"
        headers = {"Accept": accept, **({"Authorization": authorization} if authorization else {}),
                   **({"Content-Type": content_type} if content_type else {})}
        # What urllib's ProxyHandler did: the environment's proxies unless no_proxy names the host.
        proxies = requests.utils.get_environ_proxies(url) if self._proxied else {}
        try:
            data = body() if callable(body) else body
            resp = self._session.request(method, url, headers=headers, proxies=proxies, timeout=self._timeout,
                                         stream=True, data=data)
            if method == "HEAD":  # no body; its Content-Length is the blob's (a layer may well exceed MAX_BODY)
                resp._content = b""
            elif not (stream and resp.status_code < 300):
                _read_bounded(resp, self.host, where)
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
        if not (_is_tag(ref) or _is_digest(ref)):
            raise UsageError(f"{ref!r:.80} is neither a tag nor a digest")
        return f"{self.base_url}/v2/{self.name}/manifests/{ref}"

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


def _is_tag(text: str) -> bool:
    try:
        return bool(Tag(text))
    except ValueError:
        return False


def _is_digest(text: str) -> bool:
    try:
        return bool(Digest(text))
    except ValueError:
        return False


def _manifest_facts(doc: dict[str, Any], media_type: str) -> tuple[int, Digest | None]:
    """(bytes a pull moves, config blob digest) of a manifest; ValueError saying what is wrong.

    A manifest list (index) is sized 0 and has no config of its own: the engine picks the
    platform's manifest when it pulls.
    """
    if media_type in LIST_TYPES or "manifests" in doc:
        entries = doc.get("manifests")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("manifests is not a list of descriptors")
        for index, entry in enumerate(entries):
            _descriptor(entry, f"manifests[{index}]")
        return 0, None
    config_size, config = _descriptor(doc.get("config"), "config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"layers is {_kind(layers)}, not a list")
    sizes = [_descriptor(layer, f"layers[{index}]")[0] for index, layer in enumerate(layers)]
    return config_size + sum(sizes), config


def _descriptor(value: object, where: str) -> tuple[int, Digest]:
    """An OCI descriptor's (size, digest): size a whole number of bytes, digest a ``Digest``."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} is {_kind(value)}, not an object")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{where}.size is {str(size)[:40]!r}, not a byte count")
    try:
        return size, Digest(value.get("digest"))
    except ValueError as exc:
        raise ValueError(f"{where}.digest: {exc}") from None


def _media(value: object) -> str:
    """A descriptor's media type (already checked to be an object), bounded for messages and files."""
    media = value.get("mediaType") if isinstance(value, dict) else None
    return media[:200] if isinstance(media, str) else ""


def _kind(value: object) -> str:
    return "missing" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def _read_bounded(resp: requests.Response, host: str, where: str) -> None:
    """Read the body into ``resp.content``, refusing more than ``MAX_BODY`` bytes.

    A registry sends manifests, tag pages and configs of kilobytes; a body of gigabytes is an
    attack on memory, so it is cut off (and the connection dropped) instead of being held.
    """
    declared = resp.headers.get("Content-Length", "")
    too_large = RegistryError(f"the registry at {host} answered {where} with more than "
                              f"{MAX_BODY >> 20} MiB; refused", hint="the registry is broken or hostile")
    if declared.isdigit() and int(declared) > MAX_BODY:
        resp.close()
        raise too_large
    chunks, size = [], 0
    for chunk in resp.iter_content(65536):
        size += len(chunk)
        if size > MAX_BODY:
            resp.close()
            raise too_large
        chunks.append(chunk)
    resp._content = b"".join(chunks)  # what ``resp.content`` would hold had requests read it


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
