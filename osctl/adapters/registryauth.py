"""Registry authentication: the credentials ``docker login`` left, and answers to a registry's challenges.

A job apart from the registry API: its inputs are the Docker client's config file and the
credential helpers it names, and its failures are all one kind (``RegistryAuthError``, which a
retry cannot fix). It follows the Docker client so that osctl is let in wherever the engine is:

- credentials for a host come from ``credHelpers[host]``, else ``credsStore``, else ``auths``
  (a helper is the program ``docker-credential-<name>``, asked with ``get`` and the host on stdin);
- a ``Basic`` challenge is answered with those credentials; a ``Bearer`` challenge with a token
  from the challenge's realm, asked with those credentials (or anonymously without any).

The token request goes through the registry adapter's transport (handed in as ``Send``), so that
it gets the same retries, TLS trust and proxies as every other request. No secret ever appears
in a message or a log line.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from osctl.errors import OsctlError, RegistryAuthError, RegistryError

HELPER_TIMEOUT = 10.0  # for docker-credential-* helpers

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')

Send = Callable[[str, str | None], requests.Response]
"""GET a URL with an ``Authorization`` header value (or none), with the adapter's retries."""


class Authorizer:
    """The ``Authorization`` header for one repository of one registry, and how it is earned.

    Safe to share between threads: ``answer`` runs under a lock, and a header once earned (a
    token lives as long as this object) is what every thread sends from then on.
    """

    def __init__(self, host: str, scope: str, config: Path) -> None:
        self.host, self.scope, self.config = host, scope, config
        self.header: str | None = None  # what to send now; None until a challenge was answered
        self._creds: tuple[str, str] | None = None
        self._creds_read = False
        self._lock = threading.Lock()

    def answer(self, challenge: str, used: str | None, send: Send) -> None:
        """Set ``header`` from a ``WWW-Authenticate`` challenge met by a request that sent ``used``.

        Skipped when another thread already answered since ``used`` was sent: sixteen workers
        meeting the same challenge fetch one token, not sixteen.
        """
        with self._lock:
            if self.header != used:
                return
            kind, _, rest = challenge.strip().partition(" ")
            params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                      for m in _PARAM.finditer(rest)}
            creds = self._credentials()
            if kind.lower() == "basic":
                if creds is None:
                    raise self.failed(None)
                self.header = "Basic " + _basic(creds)
            elif kind.lower() == "bearer" and params.get("realm"):
                self.header = "Bearer " + self._token(params, creds, send)
            else:
                raise RegistryAuthError(f"authentication to {self.host} failed: unsupported challenge "
                                        f"{kind or '(none)'!r}", hint=self.hint())

    def failed(self, reason: str | None) -> RegistryAuthError:
        """The error for a refusal: ``reason``, or by default what was wrong with the credentials."""
        if reason is None:
            reason = ("the registry refused the credentials from " if self._creds is not None
                      else "it requires credentials and there are none for it in ") + str(self.config)
        return RegistryAuthError(f"authentication to {self.host} failed: {reason}", hint=self.hint())

    def hint(self) -> str:
        return (f"run `docker login {self.host}` (or set DOCKER_CONFIG to the folder whose config.json "
                f"holds credentials for {self.host})")

    def _token(self, params: dict[str, str], creds: tuple[str, str] | None, send: Send) -> str:
        """Ask the challenge's realm for a token (anonymously when we have no credentials)."""
        if urllib.parse.urlsplit(params["realm"]).scheme not in ("http", "https"):  # never file:// or ftp://
            raise RegistryAuthError(f"authentication to {self.host} failed: its token realm is not an http(s) URL",
                                    hint=self.hint())
        query = {"service": params.get("service", ""), "scope": params.get("scope") or self.scope}
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v})
        resp = send(url, "Basic " + _basic(creds) if creds else None)
        if resp.status_code in (401, 403):
            raise self.failed(None)
        if resp.status_code >= 400:
            raise OsctlError(f"the token service of {self.host} answered HTTP {resp.status_code}: {error_text(resp)}")
        data = json_object(resp, self.host, "token answer")
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise OsctlError(f"the token service of {self.host} answered without a token")
        return token

    def _credentials(self) -> tuple[str, str] | None:
        """(user, password) for our host from the Docker config file, read once, or None.

        Follows the Docker client: ``credHelpers[host]``, else ``credsStore``, else ``auths``.
        """
        if self._creds_read:
            return self._creds
        config: dict[str, Any] = {}
        if self.config.is_file():
            try:
                config = json.loads(self.config.read_text())
            except (OSError, ValueError) as exc:
                raise RegistryAuthError(f"cannot read the Docker config {self.config}: {type(exc).__name__}",
                                        hint=self.hint()) from None
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
            raise RegistryAuthError(f"the credential helper {program} named in {self.config} is not installed",
                                    hint=f"install {program}, or remove it from {self.config}") from None
        except subprocess.TimeoutExpired:
            raise RegistryAuthError(f"the credential helper {program} did not answer within "
                                    f"{HELPER_TIMEOUT:g} s", hint=self.hint()) from None
        if proc.returncode != 0:
            said = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
            if said and "credentials not found" in said[0].lower():
                return None
            raise RegistryAuthError(f"the credential helper {program} failed for {self.host}: "
                                    f"{said[0][:200] if said else f'exit {proc.returncode}'}", hint=self.hint())
        try:
            data = json.loads(proc.stdout)
            return str(data["Username"]), str(data["Secret"])
        except (ValueError, KeyError, TypeError):
            raise RegistryAuthError(f"the credential helper {program} answered something unreadable",
                                    hint=self.hint()) from None


# -- reading answers (the registry adapter reads its own the same way) -------------------------
def error_text(resp: requests.Response) -> str:
    """The registry's own words from an ``{"errors": [...]}`` body, when it sent some."""
    try:
        errors = json.loads(resp.content).get("errors") or []
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors[:3])
    except (ValueError, AttributeError, RecursionError):
        return ""


def json_object(resp: requests.Response, host: str, what: str) -> dict[str, Any]:
    """The body as a JSON object; anything else is the registry's fault, said in one line.

    RecursionError too: a body of a few MiB of ``[`` nests deeper than the decoder goes."""
    try:
        data = json.loads(resp.content)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise RegistryError(f"the registry at {host} sent an unreadable {what} (not a JSON object)")
    return data


# -- helpers -----------------------------------------------------------------------------------
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
