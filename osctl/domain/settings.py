"""Resolving the host's settings: command line, then environment, then the settings file.

``--root`` picks the host's state folder; ``--host-id`` names the host (default: the root's
``etc/machine-id``, created once if missing, as systemd does); ``--image`` names the OS image
repository; ``--etcd`` (comma-separated, or repeated) and ``--group`` say where the host's
fleet coordinates (settings keys ``fleet.etcd`` and ``fleet.group``). Values are checked with
the same validators as the settings file, so a bad value fails the same way wherever it came
from.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from osctl.adapters import fsutil
from osctl.constants import CONFIG_FILE, DEFAULT_ROOT, MACHINE_ID_FILE, TRUST_ROOT_FILE
from osctl.errors import ConfigError, Issue, UsageError
from osctl.models.refs import validate_etcd_endpoint, validate_group, validate_host_id, validate_repository

if TYPE_CHECKING:
    from osctl.models.settings import HostSettings

ENV_ROOT = "OSCTL_ROOT"
ENV_HOST_ID = "OSCTL_HOST_ID"
ENV_IMAGE = "OSCTL_IMAGE"
ENV_ETCD = "OSCTL_ETCD"
ENV_GROUP = "OSCTL_GROUP"
ENV_TRUST_ROOT = "OSCTL_TRUST_ROOT"
DEFAULT_GROUP = "default"
MAX_ROOT = 512_000  # bytes of a root.json: python-tuf's own limit for root metadata


@dataclass(frozen=True)
class TrustConfig:
    """Which root this host trusts, where it came from, and whether it is enforced."""

    root: bytes | None  # the root metadata's bytes; None: no root is configured
    origin: str  # option, environment, settings file, or unset
    mode: str  # enforce or off
    metadata_url: str | None  # a plain TUF folder to read instead of the registry's <image>-tuf

    @property
    def enforced(self) -> bool:
        return self.root is not None and self.mode == "enforce"


@dataclass
class Settings:
    """Settings of one invocation; files are read only when a value is first needed."""

    root_option: str | None = None
    host_id_option: str | None = None
    image_option: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    etcd_option: str | Sequence[str] | None = None  # one comma-separated string, or several
    group_option: str | None = None
    trust_root_option: str | None = None
    bundle_option: str | None = None  # ``--from FILE``: this invocation's new content comes from a bundle
    # Results that the operations of one invocation share, so that each is made once: the
    # refreshed release metadata, and the warnings already given about it.
    # Not an init field: ``dataclasses.replace`` (the agent's fresh read at every tick) starts empty.
    memo: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def root(self) -> Path:
        raw = self.root_option or self.env.get(ENV_ROOT) or DEFAULT_ROOT
        root = Path(raw).absolute()
        if not root.is_dir():
            raise UsageError(f"the host root {raw} is not a directory", hint="create it, or pass --root / set OSCTL_ROOT")
        return root

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @cached_property
    def file(self) -> HostSettings:
        """The settings file's content; an absent file means every key takes its default."""
        from osctl.models.settings import HostSettings  # builds the manifest models: only when needed

        raw = fsutil.read_bytes(self.config_path)
        if raw is None or not raw.strip():
            return HostSettings()
        from osctl.domain import documents  # the YAML machinery, only when there is a file

        parsed = documents.parse_yaml(raw, str(self.config_path), ConfigError)
        return documents.validate(parsed, HostSettings, str(self.config_path), ConfigError)

    @cached_property
    def host_id(self) -> str:
        explicit = _first(("--host-id", self.host_id_option), (ENV_HOST_ID, self.env.get(ENV_HOST_ID)))
        if explicit:
            return _checked(validate_host_id, *explicit)
        return self._from_file("host_id") or self._machine_id()

    @cached_property
    def image(self) -> str | None:
        """The OS image repository, or None when nothing names one."""
        explicit = _first(("--image", self.image_option), (ENV_IMAGE, self.env.get(ENV_IMAGE)))
        if explicit:
            return _checked(validate_repository, *explicit)
        return self._from_file("image")

    @cached_property
    def etcd_endpoints(self) -> tuple[str, ...]:
        """The etcd client URLs of the host's fleet; empty when nothing names one (no fleet)."""
        option = ",".join(self.etcd_option) if not isinstance(self.etcd_option, str | None) else self.etcd_option
        explicit = _first(("--etcd", option), (ENV_ETCD, self.env.get(ENV_ETCD)))
        if explicit:
            origin, text = explicit
            parts = [part.strip() for part in text.split(",") if part.strip()]
            if not parts:
                raise UsageError(f"{origin}: {text!r} names no etcd endpoint (use http://HOST:PORT, comma-separated)")
            return tuple(dict.fromkeys(_checked(validate_etcd_endpoint, origin, part) for part in parts))
        if not self.config_path.exists():
            return ()
        return tuple(self.file.fleet.etcd)

    @cached_property
    def group(self) -> str:
        """The host's fleet group: hosts of one group share a rollout and its concurrency limit."""
        explicit = _first(("--group", self.group_option), (ENV_GROUP, self.env.get(ENV_GROUP)))
        if explicit:
            return _checked(validate_group, *explicit)
        if not self.config_path.exists():
            return DEFAULT_GROUP
        return self.file.fleet.group

    @cached_property
    def esp(self) -> Path:
        """The EFI system partition the loader reads (``boot.esp``; default ``<root>/boot``)."""
        configured = self.file.boot.esp
        return Path(configured) if configured else self.root / "boot"

    @cached_property
    def trust(self) -> TrustConfig:
        """The trusted root (``--trust-root``, ``OSCTL_TRUST_ROOT``, settings ``trust.root``) and mode.

        Only bytes are read here; whether they are root metadata is the TUF adapter's to say.
        A path in the settings file is read relative to the file's folder; inline, the root is
        the document itself (JSON is YAML), as user data gives it at first boot.
        """
        section = self.file.trust if self.config_path.exists() else None
        mode = (section.mode if section is not None else None) or "enforce"
        url = section.metadata_url if section is not None else None
        explicit = _first(("--trust-root", self.trust_root_option), (ENV_TRUST_ROOT, self.env.get(ENV_TRUST_ROOT)))
        if explicit:
            origin, path = explicit
            return TrustConfig(_read_root(Path(path), origin), "option" if origin == "--trust-root" else "environment",
                               mode, url)
        if section is None or section.root is None:
            shipped = self._shipped_root()
            if shipped is not None:
                return TrustConfig(shipped[1], f"OS image {shipped[0]}", mode, url)
            return TrustConfig(None, "unset", mode, url)
        if isinstance(section.root, dict):
            import json

            return TrustConfig(json.dumps(section.root).encode(), "settings file", mode, url)
        return TrustConfig(_read_root(self.config_path.parent / section.root, f"{self.config_path}: trust.root"),
                           "settings file", mode, url)

    def _shipped_root(self) -> tuple[str, bytes] | None:
        """The root the host's default version ships (``/usr/lib/osctl/trust/root.json``), if any.

        The weakest source, used only when nothing else names a root: an OS image carries the
        keys that vouch for its successors, as an installer medium does. A root that the chain
        of roots already passed is not a step back: the trusted metadata folder keeps the newest.
        """
        from osctl.domain import bootpointer
        from osctl.domain.store import Store

        version = bootpointer.read(self.root).default
        if version is None:
            return None
        path = Store(self.root).version_dir(version) / TRUST_ROOT_FILE
        if not path.is_file():
            return None
        return version, _read_root(path, f"the root shipped in {version}")

    def require_etcd(self) -> tuple[str, ...]:
        if not self.etcd_endpoints:
            raise UsageError(
                "no etcd endpoints are configured for the fleet",
                hint=f"pass --etcd, set {ENV_ETCD}, or add 'fleet: {{etcd: [http://HOST:2379]}}' to {self.config_path}",
            )
        return self.etcd_endpoints

    def check_file(self) -> None:
        """Validate the settings file now, if there is one, even when options give every value:
        a broken file must be reported, not silently ignored until the day it is needed."""
        if self.config_path.exists():
            self.file  # noqa: B018 - parsing is the check

    def _from_file(self, key: str) -> str | None:
        """A key of the settings file; with no file, no models are built just to say None."""
        if not self.config_path.exists():
            return None
        value = getattr(self.file, key)
        return str(value) if value else None

    @property
    def bundle(self) -> Path | None:
        """The bundle that new content comes from in this invocation (``--from``), instead of the
        registry; None when the registry is the source. Whether it is a bundle is for the bundle
        reader to say."""
        return Path(self.bundle_option).absolute() if self.bundle_option else None

    def require_image(self) -> str:
        if not self.image:
            raise UsageError(
                "no OS image repository is configured",
                hint=f"pass --image, set {ENV_IMAGE}, or add 'image:' to {self.config_path}",
            )
        return self.image

    def source_of(self, name: str) -> str:
        """Where a setting came from, for ``osctl status``: option, environment, settings file, or
        what stands in for it (machine-id, unset, default)."""
        option, env = {"host_id": (self.host_id_option, ENV_HOST_ID), "image": (self.image_option, ENV_IMAGE),
                       "root": (self.root_option, ENV_ROOT), "etcd_endpoints": (self.etcd_option, ENV_ETCD),
                       "group": (self.group_option, ENV_GROUP)}[name]
        if option:
            return "option"
        if self.env.get(env):
            return "environment"
        if name in ("host_id", "image") and self._from_file(name):
            return "settings file"
        if name == "etcd_endpoints" and self.config_path.exists() and self.file.fleet.etcd:
            return "settings file"
        if name == "group" and self.config_path.exists() and "group" in self.file.fleet.model_fields_set:
            return "settings file"
        return {"host_id": "machine-id", "image": "unset", "root": "default", "etcd_endpoints": "unset",
                "group": "default"}[name]

    def _machine_id(self) -> str:
        path = self.root / MACHINE_ID_FILE
        text = fsutil.read_text(path)
        if text is None or not text.strip():
            # Created once, like systemd-machine-id-setup: the host keeps this name for good.
            text = uuid.uuid4().hex
            fsutil.atomic_write(path, text + "\n", mode=0o444)
        value = text.strip()
        try:
            return validate_host_id(value)
        except ValueError as exc:
            raise ConfigError(str(path), [Issue("", str(exc), 1, 1)],
                              hint="fix the file, or pass --host-id") from None


def _first(*candidates: tuple[str, str | None]) -> tuple[str, str] | None:
    for origin, value in candidates:
        if value:
            return origin, value
    return None


def _checked(validator: Callable[[str], str], origin: str, value: str) -> str:
    try:
        return validator(value)
    except ValueError as exc:
        raise UsageError(f"{origin}: {exc}") from None


def _read_root(path: Path, origin: str) -> bytes:
    """A root.json's bytes, bounded; a usage error naming where the path came from."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ROOT + 1)
    except OSError as exc:
        raise UsageError(f"{origin}: cannot read the trusted root {path}: {exc.strerror or exc}",
                         hint="give the root.json that `osctl release init` wrote") from None
    if len(data) > MAX_ROOT:
        raise UsageError(f"{origin}: {path} is larger than {MAX_ROOT} bytes: not a root.json")
    return data


def read_settings_file(root: Path) -> HostSettings:
    """The settings file of a host root alone (no options, no environment)."""
    return Settings(root_option=str(root), env={}).file
