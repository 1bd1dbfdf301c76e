"""User data: recognise it the way cloud-init does, refuse what osctl will not run, validate the rest.

Formats (docs/cloud-init.md). The raw bytes are gunzipped when they start with gzip's magic
bytes, then read as MIME multi-part when ``mime-version:`` appears in the first 4096 bytes, else
by their first line (case-insensitive, leading whitespace skipped, longest header first):
``#cloud-config`` is a YAML mapping, ``#!`` a script. MIME parts are typed by their
Content-Type (``text/plain`` parts by their first line; gzip-typed parts are gunzipped first;
base64 transfer encoding is undone by the email parser). Headers osctl will not run
(``#include``, ``#part-handler``, ``#cloud-boothook``, jinja templates, archives, JSON patches)
are refused with the reason, never skipped: a silently ignored header is cloud-init's most
common support question.

Merging. Several cloud-config parts merge as cloud-init's default for user data,
``dict(replace)+list()+str()``: maps merge recursively key by key; a later list or scalar
replaces the earlier value (two ``runcmd`` lists do not concatenate). ``merge_how`` and
``Merge-Type`` are not honoured.

Validation. Each part is validated alone, so every problem has a line and column in that part
(``user-data[part 2]:4:3``); then the merged result is validated again, for what only the whole
shows (a service spec split over two parts, a user declared twice). Top-level keys are
classified: keys osctl applies are validated strictly, cloud-init's other keys are warned about
as ignored, anything else is an unknown key (a warning, an error with ``strict``).

Nothing here reads files or logs: the caller passes the bytes, and messages never quote file
contents, scripts or passwords. ``effective_config`` is the one view of values, redacted.
"""

from __future__ import annotations

import difflib
import email
import email.policy
import re
import zlib
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from osctl.domain import documents
from osctl.errors import ConfigError, Issue
from osctl.models.cloudconfig import APPLIED_KEYS, GZIP_MAGIC, UNSUPPORTED_USER_FIELDS, CloudConfig

MAX_USER_DATA_BYTES = 16 << 20  # raw, after gunzip, and in total over all MIME parts
MAX_PARTS = 500

CLOUD_CONFIG = "text/cloud-config"
SHELL_SCRIPT = "text/x-shellscript"

# First-line headers, as cloud-init maps them to content types (tried longest first).
_HEADERS = sorted(
    {
        "#include-once": "text/x-include-once-url",
        "#include": "text/x-include-url",
        "#cloud-config-archive": "text/cloud-config-archive",
        "#cloud-config-jsonp": "text/cloud-config-jsonp",
        "#cloud-config": CLOUD_CONFIG,
        "#cloud-boothook": "text/cloud-boothook",
        "#part-handler": "text/part-handler",
        "## template: jinja": "text/jinja2",
        "#!": SHELL_SCRIPT,
    }.items(),
    key=lambda item: -len(item[0]),
)

# Content types osctl refuses: what the user wrote, and why osctl will not do it.
_REFUSED = {
    "text/x-include-url": ("#include", "it fetches user data from URLs without any integrity check; "
                                       "put the content in the user data itself"),
    "text/x-include-once-url": ("#include-once", "it fetches user data from URLs without any integrity check; "
                                                 "put the content in the user data itself"),
    "text/cloud-config-archive": ("#cloud-config-archive", "send the parts as MIME multi-part instead"),
    "text/cloud-config-jsonp": ("#cloud-config-jsonp", "JSON patches are not applied; send a #cloud-config part"),
    "text/cloud-boothook": ("#cloud-boothook", "use bootcmd, which runs at every boot"),
    "text/part-handler": ("#part-handler", "it runs user-supplied Python inside the agent"),
    "text/jinja2": ("## template: jinja", "osctl has no instance data to render templates with; "
                                          "send the rendered document"),
    "text/x-shellscript-per-boot": ("text/x-shellscript-per-boot", "use bootcmd for every boot"),
    "text/x-shellscript-per-instance": ("text/x-shellscript-per-instance",
                                        "send it as text/x-shellscript (scripts run once per instance)"),
    "text/x-shellscript-per-once": ("text/x-shellscript-per-once",
                                    "send it as text/x-shellscript (scripts run once per instance)"),
}

_GZIP_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/gzip-compressed",
                         "application/x-gzip-compressed"})
_SNIFFED_TYPES = frozenset({"text/plain", "text/x-not-multipart"})

# cloud-init's other top-level keys (its schema, v22.4 to v25): accepted and ignored, with a warning.
CLOUD_INIT_KEYS = frozenset("""
    allow_public_ssh_keys ansible apk_repos apt apt_ftp_proxy apt_http_proxy apt_https_proxy apt_mirror
    apt_mirror_search apt_mirror_search_dns apt_pipelining apt_preserve_sources_list apt_proxy
    apt_reboot_if_required apt_sources apt_update apt_upgrade authkey_hash autoinstall byobu_by_default
    ca-certs ca_certs chef chpasswd cloud_config_modules cloud_final_modules cloud_init_modules
    create_hostname_file datasource datasource_list debconf_selections device_aliases disable_ec2_metadata
    disable_root disable_root_opts disk_setup drivers fan final_message fs_setup groups growpart grub-dpkg
    grub_dpkg keyboard landscape locale locale_configfile lxd manage_etc_hosts manage_resolv_conf
    manual_cache_clean mcollective merge_how merge_type migrate mount_default_fields mounts
    no_ssh_fingerprints output package_reboot_if_required package_update package_upgrade packages password
    phone_home power_state prefer_fqdn_over_hostname preserve_hostname puppet random_seed reporting
    resize_rootfs resolv_conf rh_subscription rsyslog salt_minion snap spacewalk ssh ssh_deletekeys
    ssh_fp_console_blacklist ssh_fp_console_blocklist ssh_genkeytypes ssh_import_id
    ssh_key_console_blacklist ssh_key_console_blocklist ssh_keys ssh_publish_hostkeys ssh_pwauth
    ssh_quiet_keygen swap system_info ubuntu_advantage ubuntu_pro updates user vendor_data wireguard
    yum_repo_dir yum_repos zypper
""".split())

_IMAGE_BASED = "osctl hosts are image-based: run software as a service under osctl.services"
_KEY_HINTS = {
    **dict.fromkeys(("packages", "package_update", "package_upgrade", "package_reboot_if_required", "apt",
                     "yum_repos", "apk_repos", "zypper", "snap"), _IMAGE_BASED),
    **dict.fromkeys(("merge_how", "merge_type"), "parts always merge as dict(replace)+list()+str()"),
}

# cloud-init keys inside the objects osctl applies that osctl does not take: still errors (a
# value there is meant to do something), but said as such rather than as a typo.
_NESTED_CLOUD_INIT_KEYS = {
    "users": frozenset({"expiredate", "inactive", "no_create_home", "no_log_init", "no_user_group",
                        "create_groups", "selinux_user", "snapuser", "ssh_import_id", "ssh_redirect_user",
                        "doas"}),
    "ntp": frozenset({"peers", "allow", "ntp_client", "config"}),
}

_SECRET_KEYS = frozenset({"passwd", "hashed_passwd", "plain_text_passwd", "chpasswd"})
_SECRET_WORDS = ("password", "passphrase", "secret", "token", "private", "api_key", "apikey")


class UserDataError(ConfigError):
    """User data that osctl cannot apply: every issue, each with its source and position."""

    kind = "user data"


@dataclass(frozen=True)
class SourcedIssue(Issue):
    """An issue that knows which document it is in (``user-data[part 2]`` in a MIME file)."""

    source: str = ""

    def render(self, source: str | None = None) -> str:
        return super().render(self.source or source)

    def as_dict(self, severity: str) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "line": self.line, "column": self.column,
                "message": self.message, "severity": severity}


@dataclass(frozen=True)
class Script:
    """A ``#!`` script from user data; ``name`` is safe as a file name."""

    name: str
    content: bytes

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass
class UserData:
    """User data taken apart: the merged cloud-config, the scripts in order, and the findings."""

    config: dict[str, Any] = field(default_factory=dict)
    scripts: list[Script] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.issues

    def raise_if_invalid(self, source: str) -> None:
        """For callers that apply user data: every error at once, as one ``UserDataError``."""
        if self.issues:
            raise UserDataError(source, self.issues, hint=f"osctl cloud-init validate {source}")


def parse_user_data(raw: bytes, source: str, *, strict: bool = False) -> UserData:
    """Take user data apart and validate it; problems are returned, never raised."""
    parser = _Parser(source, strict)
    try:
        parser.run(bytes(raw))
    except RecursionError:
        parser.error(source, Issue("", "nested too deeply"))
    return parser.result()


def validate(raw: bytes, source: str, *, strict: bool = False) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) of user data; ``strict`` makes unknown keys errors."""
    data = parse_user_data(raw, source, strict=strict)
    return data.issues, data.warnings


# Values of the settings (the ``osctl:`` section) that a later one replaces whole instead of being
# merged into: a signed document is only valid as its author wrote it (two roots merged key by
# key are neither root, and their signatures fail).
WHOLE_SETTINGS: frozenset[tuple[str, ...]] = frozenset({("trust", "root")})
WHOLE_USER_DATA: frozenset[tuple[str, ...]] = frozenset(("osctl", *path) for path in WHOLE_SETTINGS)


def merge(base: Any, update: Any, whole: AbstractSet[tuple[str, ...]] = frozenset(),
          _at: tuple[str, ...] = ()) -> Any:
    """cloud-init's ``dict(replace)+list()+str()``: maps merge recursively, the rest is replaced.

    A map at one of the key paths in ``whole`` is replaced too, never merged into.
    """
    if isinstance(base, dict) and isinstance(update, dict) and _at not in whole:
        merged = dict(base)
        for key, value in update.items():
            merged[key] = merge(base[key], value, whole, (*_at, key)) if key in base else value
        return merged
    return update


def effective_config(user_data: UserData) -> dict[str, Any]:
    """The merged configuration as plain JSON-able data, with passwords, secrets, tokens, private
    keys and the content of ``write_files`` replaced by placeholders."""
    config = dict(user_data.config)
    files = config.get("write_files")
    if isinstance(files, list):
        config["write_files"] = [_without_content(entry) for entry in files]
    return _redacted(config)  # type: ignore[no-any-return]


def _without_content(entry: Any) -> Any:
    if not isinstance(entry, dict) or "content" not in entry:
        return entry
    content = entry["content"]
    size = len(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content) \
        if isinstance(content, str | bytes) else 0
    return {**entry, "content": f"<redacted: {size} bytes>"}


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or any(word in lowered for word in _SECRET_WORDS)


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): "<redacted>" if _is_secret(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | AbstractSet):
        return [_redacted(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return f"<binary: {len(value)} bytes>"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class _Parser:
    """One pass over user data, collecting parts, scripts and issues."""

    def __init__(self, source: str, strict: bool) -> None:
        self.source, self.strict = source, strict
        self.budget = MAX_USER_DATA_BYTES
        self.errors: list[SourcedIssue] = []
        self.warnings: list[SourcedIssue] = []
        self.configs: list[tuple[str, documents.ParsedYaml]] = []
        self.scripts: list[Script] = []
        self.parts: list[str] = []
        self.config: dict[str, Any] = {}
        self.labels = {source: 0}  # the order parts come in, for the order of issues

    # -- findings ---------------------------------------------------------------------------

    def error(self, source: str, issue: Issue) -> None:
        self.errors.append(SourcedIssue(issue.path, issue.message, issue.line, issue.column, source))

    def warn(self, source: str, issue: Issue) -> None:
        self.warnings.append(SourcedIssue(issue.path, issue.message, issue.line, issue.column, source))

    def result(self) -> UserData:
        order = self.labels

        def key(issue: SourcedIssue) -> tuple[int, str, int, int]:
            return order.get(issue.source, len(order)), issue.source, issue.line or 0, issue.column or 0

        return UserData(config=self.config, scripts=self.scripts, parts=self.parts,
                        issues=sorted(self.errors, key=key), warnings=sorted(self.warnings, key=key))

    # -- formats ----------------------------------------------------------------------------

    def run(self, raw: bytes) -> None:
        if len(raw) > MAX_USER_DATA_BYTES:
            self.error(self.source, Issue("", f"user data is larger than {_mib(MAX_USER_DATA_BYTES)}"))
            return
        data: bytes | None = raw
        if raw.startswith(GZIP_MAGIC):
            data = self.gunzip(raw, self.source)
            self.budget = MAX_USER_DATA_BYTES  # the budget is for what the parts hold, counted below
        if data is None or not data.strip():
            return  # empty user data: nothing to do
        if b"mime-version:" in data[:4096].lower():
            self.mime(data)
        else:
            self.part(data, self.source, None, 1, None)
        self.finish()

    def gunzip(self, data: bytes, source: str) -> bytes | None:
        try:
            out = _gunzip(data, self.budget)
        except _TooLarge:
            self.error(source, Issue("", f"larger than {_mib(MAX_USER_DATA_BYTES)} after gzip decompression"))
            return None
        except ValueError as exc:
            self.error(source, Issue("", f"starts like gzip data but cannot be decompressed: {exc}"))
            return None
        self.budget -= len(out)
        return out

    def mime(self, data: bytes) -> None:
        try:
            message = email.message_from_bytes(data, policy=email.policy.compat32)
        except Exception:  # the parser is lenient; should it give up, the reason is the format
            self.error(self.source, Issue("", "not a valid MIME multi-part document"))
            return
        number = 0
        for part in message.walk():
            if part.is_multipart():
                continue
            number += 1
            label = f"{self.source}[part {number}]"
            if number > MAX_PARTS:
                self.error(self.source, Issue("", f"more than {MAX_PARTS} MIME parts"))
                return
            if part.get("Merge-Type") or part.get("X-Merge-Type"):
                self.warn(label, Issue("", "the Merge-Type header is not supported by osctl (ignored): "
                                           "parts always merge as dict(replace)+list()+str()"))
            payload = part.get_payload(decode=True)
            payload = payload if isinstance(payload, bytes) else b""
            if part.get_content_type() not in _GZIP_TYPES:
                if len(payload) > self.budget:
                    self.error(self.source, Issue("", f"user data is larger than {_mib(MAX_USER_DATA_BYTES)}"))
                    return
                self.budget -= len(payload)
            try:
                filename = part.get_filename()
            except Exception:  # a malformed RFC 2231 parameter: the part keeps its number as name
                filename = None
            self.part(payload, label, part.get_content_type(), number, filename)

    def part(self, payload: bytes, label: str, declared: str | None, number: int, filename: str | None) -> None:
        self.labels.setdefault(label, len(self.labels))
        ctype = declared
        if ctype in _GZIP_TYPES:
            unpacked = self.gunzip(payload, label)
            if unpacked is None:
                return
            payload, ctype = unpacked, None
        if ctype is None or ctype in _SNIFFED_TYPES:
            if not payload.strip():
                return  # an empty part: nothing to do
            ctype = _sniff(payload)
            if ctype is None:
                self.parts.append(declared or "unknown")
                self.error(label, Issue("", _no_header(payload, declared is not None), 1, 1))
                return
        self.parts.append(ctype)
        if ctype == CLOUD_CONFIG:
            self.cloud_config(payload, label)
        elif ctype == SHELL_SCRIPT:
            self.script(payload, label, number, filename)
        elif ctype in _REFUSED:
            what, why = _REFUSED[ctype]
            self.error(label, Issue("", f"{what} is not supported by osctl: {why}", 1, 1))
        else:
            self.warn(label, Issue("", f"content type {ctype} is not handled by osctl (part ignored)"))

    def script(self, payload: bytes, label: str, number: int, filename: str | None) -> None:
        if not payload.startswith(b"#!"):
            self.error(label, Issue("", "a script must start with #! (its interpreter) on its very first line",
                                    1, 1))
            return
        name = _safe_name(filename) or f"part-{number}"
        if any(script.name == name for script in self.scripts):
            self.warn(label, Issue("", f"script name {name!r} is used twice: this one is named {name}-{number}"))
            name = f"{name}-{number}"
        self.scripts.append(Script(name, payload))

    # -- cloud-config -----------------------------------------------------------------------

    def cloud_config(self, payload: bytes, label: str) -> None:
        try:
            parsed = documents.parse_yaml(payload, label, UserDataError, binary=True)
        except UserDataError as exc:
            for issue in exc.issues:
                self.error(label, issue)
            return
        if parsed.data is None:
            return  # a bare "#cloud-config": nothing to do
        if isinstance(parsed.data, dict):
            self.classify(parsed, label)
        try:
            documents.validate(parsed, CloudConfig, label, UserDataError)
        except UserDataError as exc:
            for issue in exc.issues:
                self.error(label, _explained(issue))
        if isinstance(parsed.data, dict):
            self.configs.append((label, parsed))

    def classify(self, parsed: documents.ParsedYaml, label: str) -> None:
        known = sorted(set(APPLIED_KEYS) | CLOUD_INIT_KEYS)
        for key in parsed.data:
            if not isinstance(key, str) or key in APPLIED_KEYS:
                continue
            path, line, column = parsed.locate((key,))
            if key in CLOUD_INIT_KEYS:
                hint = f"; {_KEY_HINTS[key]}" if key in _KEY_HINTS else ""
                self.warn(label, Issue(path, f"not supported by osctl (ignored){hint}", line, column))
                continue
            close = difflib.get_close_matches(key, known, n=1)
            issue = Issue(path, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""), line, column)
            (self.error if self.strict else self.warn)(label, issue)
        users = parsed.data.get("users")
        for index, user in enumerate(users if isinstance(users, list) else []):
            for name in UNSUPPORTED_USER_FIELDS:
                if isinstance(user, dict) and name in user:
                    path, line, column = parsed.locate(("users", index, name))
                    self.warn(label, Issue(path, "not supported by osctl (ignored)", line, column))

    def finish(self) -> None:
        """Merge the cloud-config parts; validate the result when every part was valid."""
        for _, parsed in self.configs:
            self.config = merge(self.config, parsed.data, WHOLE_USER_DATA)
        if self.errors or not self.configs:
            return
        merged = _Merged(self.config, self.configs)
        try:
            model = documents.validate(merged, CloudConfig, self.source, UserDataError)
        except UserDataError as exc:
            for issue in exc.issues:
                self.error(merged.source_of(issue), _explained(issue))
            return
        self.relations(model, merged)

    def relations(self, config: CloudConfig, merged: _Merged) -> None:
        names: dict[str, int] = {}
        for index, user in enumerate(config.users or []):
            if isinstance(user, str):
                continue
            if user.name in names:
                where = merged.at(("users", index, "name"), f"user {user.name!r} is declared twice "
                                                            f"(first as users[{names[user.name]}])")
                self.error(*where)
            names.setdefault(user.name, index)
        paths: dict[str, int] = {}
        for index, entry in enumerate(config.write_files or []):
            if entry.path in paths and not entry.append:
                where = merged.at(("write_files", index, "path"), f"{entry.path} is also written by "
                                  f"write_files[{paths[entry.path]}]: this later entry replaces that content")
                self.warn(*where)
            paths.setdefault(entry.path, index)


class _Merged(documents.ParsedYaml):
    """The merged config for ``documents.validate``: key paths come from the merged data, line
    and column from the last part that wrote the key (the part whose value won)."""

    def __init__(self, data: dict[str, Any], parts: list[tuple[str, documents.ParsedYaml]]) -> None:
        self.tree = self.data = data
        self.parts = parts
        self.sources: dict[tuple[str, int | None, int | None], str] = {}

    def locate(self, loc: Any) -> tuple[str, int | None, int | None]:
        node: Any = self.data
        parts: list[str] = []
        for seg in loc:
            if isinstance(node, dict) and isinstance(seg, str | int) and seg in node:
                parts.append(str(seg))
            elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
                parts[-1:] = [f"{parts[-1]}[{seg}]"] if parts else [f"[{seg}]"]
            else:
                break
            node = node[seg]
        path = ".".join(parts)
        best = (-1, self.parts[-1][0], None, None)
        for label, parsed in reversed(self.parts):
            found, line, column = parsed.locate(loc)
            if len(found) > best[0]:
                best = (len(found), label, line, column)
        _, label, line, column = best
        self.sources[(path, line, column)] = label
        return path, line, column

    def source_of(self, issue: Issue) -> str:
        exact = self.sources.get((issue.path, issue.line, issue.column))
        parent = self.sources.get((issue.path.rsplit(".", 1)[0], issue.line, issue.column))  # a missing key
        return exact or parent or self.parts[-1][0]

    def at(self, loc: tuple[Any, ...], message: str) -> tuple[str, Issue]:
        path, line, column = self.locate(loc)
        return self.source_of(Issue(path, message, line, column)), Issue(path, message, line, column)


def _sniff(payload: bytes) -> str | None:
    start = payload.lstrip()[:64].lower()
    for header, ctype in _HEADERS:
        if start.startswith(header.encode()):
            return ctype
    return None


def _no_header(payload: bytes, in_mime: bool) -> str:
    what = "this MIME part" if in_mime else "user data"
    why = ""
    if payload.startswith(b"\xef\xbb\xbf"):
        why = " (it starts with a UTF-8 byte order mark; save it without one)"
    elif b"\0" in payload[:4096] or not _is_utf8(payload[:4096]):
        why = " (it is binary data, not text)"
    elif payload.lstrip()[:1] != b"#":
        why = " (a YAML document needs the #cloud-config line first)"
    typed = "; or give the part a content type such as text/cloud-config" if in_mime else ""
    return f"{what} must start with #cloud-config or #! (a script){why}{typed}"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 3  # a character cut by the 4096-byte window is fine
    return True


def _safe_name(filename: str | None) -> str:
    """cloud-init's rule: '/' becomes '_', then only [A-Za-z0-9_.()-] is kept."""
    if not filename:
        return ""
    name = re.sub(r"[^A-Za-z0-9_.()-]", "", filename.replace("/", "_"))[:128]
    return "" if name.strip(".") == "" else name


class _TooLarge(Exception):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    """Every gzip member of ``data``, refusing output beyond ``limit`` bytes (a gzip bomb)."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise ValueError(str(exc).removeprefix("Error -3 while decompressing data: ")) from None
        if len(out) > limit:
            raise _TooLarge
        if not inflater.eof:
            raise ValueError("the data is truncated")
        rest = inflater.unused_data
        if rest.strip(b"\0") == b"":
            break
        if not rest.startswith(GZIP_MAGIC):
            raise ValueError("unexpected bytes after the gzip data")
    return bytes(out)


def _explained(issue: Issue) -> Issue:
    """An unknown key that cloud-init knows is said to be unsupported rather than a typo."""
    if not issue.message.startswith("unknown key"):
        return issue
    section = re.split(r"[.\[]", issue.path, maxsplit=1)[0]
    key = issue.path.rsplit(".", 1)[-1]
    if key in _NESTED_CLOUD_INIT_KEYS.get(section, ()):
        return Issue(issue.path, "a cloud-init key that osctl does not support (remove it)", issue.line,
                     issue.column)
    return issue


def _mib(size: int) -> str:
    return f"{size >> 20} MiB"
