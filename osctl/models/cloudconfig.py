"""The cloud-config keys osctl applies, as pydantic models (the schema of ``#cloud-config``).

Why a schema of our own rather than cloud-init's JSON schema: osctl applies only a subset of the
standard keys, and for those it must be at least as strict as cloud-init (a document cloud-init
rejects must not pass here) while telling the user the line and column of every problem, which
``osctl.domain.documents`` does for pydantic models. Objects inside a known key forbid unknown
keys; only the top level allows them, so that ``osctl.domain.userdata`` can tell the other
cloud-init keys (ignored, with a warning) from typos.

cloud-init reads user data as YAML 1.1 and osctl as YAML 1.2; the difference users meet is
``yes``/``no``/``on``/``off``: booleans to cloud-init, strings to osctl. A boolean given so is an
error that says to write true or false (accepting the words would also accept a quoted ``'yes'``,
which cloud-init refuses). Unquoted octal (``permissions: 0644``) is refused by both: YAML turns
it into a number.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WrapValidator, field_validator, model_validator

from osctl.models.base import DocumentModel
from osctl.models.settings import HostSettings

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
TIMEZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_][A-Za-z0-9_+-]*)*")
ACCOUNT = r"(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10})"
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
OWNER = re.compile(rf"{ACCOUNT}(?::{ACCOUNT})?")
PERMISSIONS = re.compile(r"(?:0o|0)?[0-7]{3,4}")
GZIP_MAGIC = b"\x1f\x8b"

Encoding = Literal["text/plain", "b64", "base64", "gz", "gzip", "gz+b64", "gz+base64", "gzip+b64", "gzip+base64"]
BASE64_ENCODINGS = frozenset({"b64", "base64"})
GZIP_ENCODINGS = frozenset({"gz", "gzip"})
GZIP_BASE64_ENCODINGS = frozenset({"gz+b64", "gz+base64", "gzip+b64", "gzip+base64"})


class CloudModel(DocumentModel):
    """Strict types too: cloud-init's JSON schema accepts no ``1`` for a boolean or a string."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)


_YAML11_BOOLEANS = frozenset({"yes", "Yes", "YES", "on", "On", "ON", "no", "No", "NO", "off", "Off", "OFF"})


def _bool(value: object) -> object:
    """Strict booleans, with a message that explains why YAML 1.1's ``yes`` is not one here."""
    if isinstance(value, str) and value in _YAML11_BOOLEANS:
        raise ValueError(f"{value!r} is a string in YAML 1.2, which osctl reads: write true or false")
    return value


Bool = Annotated[bool, BeforeValidator(_bool)]


def _hostname(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be a string (a host name)")
    if len(value) > 253 or not HOSTNAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a host name (letters, digits and '-' in dot-separated labels)")
    return value


def _host_or_address(value: object) -> object:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
    return _hostname(value)


def _timezone(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be a string such as 'UTC' or 'Europe/Berlin'")
    if len(value) > 64 or not TIMEZONE.fullmatch(value):
        raise ValueError(f"{value!r} is not a time zone name (e.g. 'UTC' or 'Europe/Berlin')")
    return value


def _groups(value: object) -> object:
    """cloud-init takes ``"a,b"`` or ``[a, b]`` (its deprecated mapping form is refused)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(g, str) and g for g in value):
        return value
    raise ValueError("must be a string 'group1,group2' or a non-empty list of group names")


def _command(value: object) -> object:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(a, str) for a in value)):
        return value
    raise ValueError("a command is a string (run by sh) or a list of strings (argv)")


def _sudo(value: object) -> object:
    if isinstance(value, str | bool) or (isinstance(value, list) and all(isinstance(r, str) for r in value)):
        return value
    raise ValueError("must be a sudo rule (a string), a list of rules, or false")


def _uid(value: object) -> object:
    if (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str):
        return value
    raise ValueError("must be a number")


def _content(value: object) -> object:
    if isinstance(value, str | bytes):
        return value
    raise ValueError("must be a string (the file's content)")


def _ssh_key(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("an SSH public key is a string")
    if not value.strip() or "\n" in value.strip():
        raise ValueError("an SSH public key is one non-empty line")
    return value


def _absolute(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("a path is a string")
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (starting with /)")
    if value.endswith("/") or ".." in value.split("/") or "\0" in value or len(value) > 4096:
        raise ValueError("must be the absolute path of a file, without '..'")
    return value


def _permissions(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be a quoted octal string such as '0644' (unquoted, YAML reads it as a number)")
    if not PERMISSIONS.fullmatch(value):
        raise ValueError(f"{value!r} is not an octal mode such as '0644'")
    return value


def _owner(value: object) -> object:
    if not isinstance(value, str) or not OWNER.fullmatch(value):
        raise ValueError("must be 'user:group' (or 'user'), e.g. 'root:root'")
    return value


Hostname = Annotated[str, BeforeValidator(_hostname)]
HostOrAddress = Annotated[str, BeforeValidator(_host_or_address)]
Timezone = Annotated[str, BeforeValidator(_timezone)]
Command = Annotated[str | list[str], BeforeValidator(_command)]
SshKey = Annotated[str, BeforeValidator(_ssh_key)]
SshKeys = Annotated[list[SshKey], Field(min_length=1)]


class User(CloudModel):
    """One entry of ``users``. The fields after ``ssh_authorized_keys`` are cloud-init's: they are
    checked so a typo is caught, but osctl does not apply them (``UNSUPPORTED_USER_FIELDS``)."""

    name: str
    groups: Annotated[str | list[str], BeforeValidator(_groups)] | None = None
    shell: Annotated[str, BeforeValidator(_absolute)] | None = None
    ssh_authorized_keys: SshKeys | None = None
    gecos: str | None = None
    homedir: str | None = None
    lock_passwd: Bool | None = None
    passwd: str | None = None
    hashed_passwd: str | None = None
    plain_text_passwd: str | None = None
    sudo: Annotated[str | list[str] | bool, BeforeValidator(_sudo)] | None = None
    primary_group: str | None = None
    system: Bool | None = None
    uid: Annotated[int | str, BeforeValidator(_uid)] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not USER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a user name (letters, digits, '_', '.', '-'; max 32)")
        return value


UNSUPPORTED_USER_FIELDS = ("gecos", "homedir", "lock_passwd", "passwd", "hashed_passwd", "plain_text_passwd",
                           "sudo", "primary_group", "system", "uid")


def _user_entry(value: Any, handler: Any) -> Any:
    """A user object, or the string ``default`` (the distribution's default user: osctl has none)."""
    if value == "default":
        return value
    if isinstance(value, str):
        raise ValueError(f"a user is an object such as {{name: {value!r}}} (or the string 'default')")
    if not isinstance(value, dict):
        raise ValueError("a user is an object with a name (or the string 'default')")
    return handler(value)


UserEntry = Annotated[User, WrapValidator(_user_entry)]
"""A ``User``, or the string ``"default"``, which osctl ignores."""


def _users(value: object) -> object:
    return ["default"] if value == "default" else value


class WriteFile(CloudModel):
    """One entry of ``write_files``; ``content`` is decoded according to ``encoding``."""

    path: Annotated[str, BeforeValidator(_absolute)]
    content: Annotated[str | bytes, BeforeValidator(_content)] = ""
    encoding: Encoding = "text/plain"
    owner: Annotated[str, BeforeValidator(_owner)] = "root:root"
    permissions: Annotated[str, BeforeValidator(_permissions)] = "0644"
    append: Bool = False
    defer: Bool = False
    source: Any = None

    @field_validator("source", mode="before")
    @classmethod
    def _no_source(cls, value: object) -> object:
        if value is None:
            return value
        raise ValueError("not supported by osctl: it does not fetch content from URLs (put it in 'content')")

    @model_validator(mode="after")
    def _content_matches_encoding(self) -> WriteFile:
        # Messages never quote the content: it may be a secret.
        if self.encoding in GZIP_ENCODINGS:
            if not isinstance(self.content, bytes) or not self.content.startswith(GZIP_MAGIC):
                raise ValueError(f"with encoding {self.encoding}, content must be gzip data as a !!binary value "
                                 "(or use encoding gz+b64 with base64 text)")
        elif isinstance(self.content, bytes):
            if self.encoding != "text/plain":
                raise ValueError(f"with encoding {self.encoding}, content must be base64 text, not !!binary")
        elif self.encoding in BASE64_ENCODINGS | GZIP_BASE64_ENCODINGS:
            data = decode_base64(self.content)
            if data is None:
                raise ValueError(f"content is not valid base64 (encoding {self.encoding})")
            if self.encoding in GZIP_BASE64_ENCODINGS and not data.startswith(GZIP_MAGIC):
                raise ValueError(f"content is base64 but not of gzip data (encoding {self.encoding})")
        return self


def decode_base64(text: str) -> bytes | None:
    """Strict base64 (line breaks and spaces allowed), or None when the text is not base64."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


class Ntp(CloudModel):
    """``ntp``: which time servers the host's NTP service uses."""

    enabled: Bool = True
    servers: list[HostOrAddress] = []
    pools: list[HostOrAddress] = []

    @field_validator("servers", "pools")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        for item in value:
            if value.count(item) > 1:
                raise ValueError(f"{item!r} is listed twice")
        return value


def _not_null(value: object) -> object:
    if value is None:
        raise ValueError("has no value (null): give one, or remove the key")
    return value


class CloudConfig(CloudModel):
    """A ``#cloud-config`` document (or several merged). Unknown top-level keys are kept in
    ``model_extra`` so that they can be classified; every other level forbids them."""

    model_config = ConfigDict(extra="allow", frozen=True, validate_default=False, strict=True)

    hostname: Hostname | None = None
    fqdn: Hostname | None = None
    users: Annotated[list[UserEntry], Field(min_length=1), BeforeValidator(_users)] | None = None
    ssh_authorized_keys: SshKeys | None = None
    write_files: Annotated[list[WriteFile], Field(min_length=1)] | None = None
    bootcmd: Annotated[list[Command], Field(min_length=1)] | None = None
    runcmd: Annotated[list[Command], Field(min_length=1)] | None = None
    ntp: Ntp | None = None
    timezone: Timezone | None = None
    osctl: HostSettings | None = None

    @field_validator("hostname", "fqdn", "users", "ssh_authorized_keys", "write_files", "bootcmd", "runcmd",
                     "timezone", "osctl", mode="before")
    @classmethod
    def _present_keys_have_values(cls, value: object) -> object:
        # cloud-init refuses `hostname:` with no value; only `ntp:` may be null (its schema says so).
        return _not_null(value)


APPLIED_KEYS = tuple(CloudConfig.model_fields)
