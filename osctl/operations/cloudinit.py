"""``osctl cloud-init apply``: configure a host from its user data, again at every boot.

Every boot is an idempotent reconcile: hostname, time zone, ntp, files (``write_files``),
the ``osctl:`` settings and extra services, ``bootcmd``. Once per instance-id: users and their
keys, appended files, ``runcmd``, user scripts, and converging to the pinned version. A
once-step's marker is written only after it succeeded, so a failed step runs again at the
next boot; a new instance-id runs them all again.

Commands and scripts run in a one-shot container of the host's OS image, with host
networking and the host root mounted at ``/host`` (the working directory); their output goes
to ``<root>/var/log/osctl/cloud-init.log`` and their exit status to ``osctl status``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from osctl.adapters import fsutil
from osctl.adapters.engine import Engine
from osctl.adapters.locking import host_lock
from osctl.constants import CONFIG_FILE, LABEL_ROLE, ROLE_HELPER, STATE_DIR
from osctl.domain import bootpointer, hostfiles, servicestate
from osctl.domain.cloudinitstatus import CI_DIR, status_path
from osctl.domain.naming import host_labels
from osctl.domain.settings import Settings, read_settings_file
from osctl.domain.store import Store
from osctl.domain.userdata import WHOLE_SETTINGS, UserData, merge, parse_user_data
from osctl.errors import ConfigError, Issue, OsctlError, UsageError
from osctl.models.engine import ContainerSpec, Mount
from osctl.models.events import ServiceResult
from osctl.models.settings import HostSettings
from osctl.operations import serviceset
from osctl.operations.services import skipped

SEED_DIR = f"{STATE_DIR}/seed/nocloud"
LOG_FILE = "var/log/osctl/cloud-init.log"
COMMAND_TIMEOUT = 600.0
DEFAULT_INSTANCE = "iid-local"


@dataclass
class Step:
    name: str
    result: str  # changed, unchanged, ran, skipped, failed, would-run, would-change
    detail: str = ""
    exit_code: int | None = None


@dataclass
class ApplyReport:
    instance_id: str
    source: str
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.result == "failed"]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- where the user data comes from ------------------------------------------------------------
def datasource(settings: Settings, user_data: Path | None, instance_id: str | None) -> tuple[bytes, str, str] | None:
    """(raw user data, instance-id, source name), from --user-data or the NoCloud seed; None if neither."""
    seed = settings.root / SEED_DIR
    meta_id = _meta_instance_id(seed / "meta-data")
    if user_data is not None:
        try:
            raw = user_data.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {user_data}: {exc.strerror or exc}") from None
        return raw, instance_id or meta_id or DEFAULT_INSTANCE, str(user_data)
    try:
        raw = (seed / "user-data").read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {seed / 'user-data'}: {exc.strerror or exc}") from None
    return raw, instance_id or meta_id or DEFAULT_INSTANCE, f"{seed}/user-data"


def _meta_instance_id(path: Path) -> str | None:
    text = fsutil.read_text(path)
    if not text:
        return None
    for line in text.splitlines():  # meta-data is YAML; instance-id is all osctl reads from it
        key, _, value = line.partition(":")
        if key.strip() in ("instance-id", "instance_id") and value.strip():
            return value.strip().strip("'\"")
    return None


# -- apply -------------------------------------------------------------------------------------
def apply(settings: Settings, engine: Engine, *, user_data: Path | None = None, instance_id: str | None = None,
          dry_run: bool = False, strict: bool = False, converge: Callable[[str], str] | None = None) -> ApplyReport | None:
    """Apply the host's user data; None when it has none. Raises ``ConfigError`` when invalid."""
    found = datasource(settings, user_data, instance_id)
    if found is None:
        return None
    raw, iid, source = found
    data = parse_user_data(raw, source, strict=strict)
    data.raise_if_invalid(source)
    report = ApplyReport(iid, source, dry_run=dry_run, warnings=[w.render(source) for w in data.warnings])
    run = _Applier(settings, engine, data, report, dry_run)
    with host_lock(settings.root, "cloud-init apply"):
        run.every_boot()
        run.once()
    if not dry_run:
        fsutil.atomic_write(settings.root / CI_DIR / "user-data", raw, mode=0o600)
    pinned = run.merged_settings.version if run.merged_settings else None
    bundle = run.merged_settings.bundle if run.merged_settings else None
    if pinned and bundle and settings.bundle_option is None and Store(settings.root).get(pinned) is None:
        # `from:` names where the pinned version comes from, until it is stored (the stick may
        # be gone by the next boot); the converge below runs in this invocation, whose settings
        # say where new content comes from (docs/bundles.md).
        settings.bundle_option = str(settings.root / bundle)
    if pinned and converge is not None:
        run.once_step("converge", lambda: converge(pinned))
    if not dry_run:
        _record(settings.root, report)
    return report


def _record(root: Path, report: ApplyReport) -> None:
    status = {"instance_id": report.instance_id, "source": report.source,
              "applied_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "steps": {s.name: {"result": s.result, "detail": s.detail, "exit_code": s.exit_code}
                        for s in report.steps}}
    fsutil.atomic_write(status_path(root), json.dumps(status, indent=2, sort_keys=True) + "\n")


class _Applier:
    def __init__(self, settings: Settings, engine: Engine, data: UserData, report: ApplyReport, dry_run: bool):
        self.settings, self.engine, self.data, self.report, self.dry_run = settings, engine, data, report, dry_run
        self.root = settings.root
        self.config: dict[str, Any] = data.config
        self.sem = self.root / CI_DIR / "instances" / _safe(report.instance_id) / "sem"
        self.merged_settings: HostSettings | None = None

    # -- bookkeeping ---------------------------------------------------------------------------
    def step(self, name: str, action: Callable[[], str | None]) -> None:
        """Run an every-boot step; its return value says what changed (None: nothing)."""
        try:
            detail = action()
        except OsctlError as exc:
            self.report.steps.append(Step(name, "failed", exc.message))
            return
        if self.dry_run:
            self.report.steps.append(Step(name, "would-change" if detail else "unchanged", detail or ""))
        else:
            self.report.steps.append(Step(name, "changed" if detail else "unchanged", detail or ""))

    def once_step(self, name: str, action: Callable[[], str | None], *, command: bool = False) -> None:
        """Run a step once per instance: skipped when its marker exists, marked after success."""
        marker = self.sem / name
        if marker.exists():
            self.report.steps.append(Step(name, "skipped", f"already done for {self.report.instance_id}"))
            return
        if self.dry_run:
            self.report.steps.append(Step(name, "would-run", ""))
            return
        try:
            detail = action()
        except CommandFailed as exc:
            self.report.steps.append(Step(name, "failed", exc.message, exc.code))
            return
        except OsctlError as exc:
            self.report.steps.append(Step(name, "failed", exc.message))
            return
        fsutil.atomic_write(marker, datetime.now(UTC).isoformat(timespec="seconds") + "\n")
        self.report.steps.append(Step(name, "ran", detail or "", 0 if command else None))

    def write(self, path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> bool:
        """Write a host file when its content differs; True when it changed (or would)."""
        try:
            current = path.read_bytes()
        except OSError:
            current = None
        same = current == data and (path.stat().st_mode & 0o7777) == mode if current is not None else False
        if same and owner is None:
            return False
        if not self.dry_run and not same:
            fsutil.atomic_write(path, data, mode=mode)
        if owner is not None and not self.dry_run:
            os.chown(path, *owner)
        return not same

    # -- every boot ----------------------------------------------------------------------------
    def every_boot(self) -> None:
        c = self.config
        if "hostname" in c or "fqdn" in c:
            self.step("hostname", self.hostname)
        if "timezone" in c:
            self.step("timezone", self.timezone)
        self.step("settings", self.host_settings)
        if "ntp" in c:
            self.step("ntp", self.ntp)
        if (c.get("osctl") or {}).get("services") or c.get("ntp"):
            self.step("services", self.services)
        files = [f for f in c.get("write_files") or [] if not f.get("defer") and not f.get("append")]
        if files:
            self.step("write_files", lambda: self.write_files(files))
        if c.get("bootcmd"):
            self.once_or_boot_commands("bootcmd", c["bootcmd"], every_boot=True)

    def hostname(self) -> str | None:
        fqdn = self.config.get("fqdn")
        name = self.config.get("hostname") or (fqdn.split(".")[0] if fqdn else None)
        changed = self.write(hostfiles.under_root(self.root, "/etc/hostname"), f"{name}\n".encode())
        hosts = hostfiles.under_root(self.root, "/etc/hosts")
        current = hosts.read_text() if hosts.is_file() else "127.0.0.1\tlocalhost\n"
        kept = [line for line in current.splitlines() if not line.endswith("# osctl hostname")]
        alias = f"{fqdn} {name}" if fqdn and fqdn != name else name
        wanted = "\n".join([*kept, f"127.0.1.1\t{alias}\t# osctl hostname"]) + "\n"
        changed = self.write(hosts, wanted.encode()) or changed
        return f"hostname {name}" if changed else None

    def timezone(self) -> str | None:
        zone = self.config["timezone"]
        changed = self.write(hostfiles.under_root(self.root, "/etc/timezone"), f"{zone}\n".encode())
        link = hostfiles.under_root(self.root, "/etc/localtime")
        target = f"/usr/share/zoneinfo/{zone}"
        if not (link.is_symlink() and os.readlink(link) == target):
            if not self.dry_run:
                link.unlink(missing_ok=True)
                link.symlink_to(target)
            changed = True
        return f"time zone {zone}" if changed else None

    def ntp(self) -> str | None:
        ntp = self.config.get("ntp") or {}
        if ntp.get("enabled") is False:
            return None
        servers = [f"server {s} iburst" for s in ntp.get("servers") or []] + \
                  [f"pool {p} iburst" for p in ntp.get("pools") or []]
        text = "# written by osctl from user data\n" + "\n".join(servers) + "\n"
        changed = self.write(hostfiles.under_root(self.root, "/etc/ntp.conf"), text.encode())
        return f"{len(servers)} ntp server(s), given to the ntp service" if changed else None

    def host_settings(self) -> str | None:
        """The ``osctl:`` section over the settings file; ntp servers go to the ntp service."""
        section = dict(self.config.get("osctl") or {})
        ntp = self.config.get("ntp") or {}
        names = [*(ntp.get("servers") or []), *(ntp.get("pools") or [])]
        if names and ntp.get("enabled") is not False:
            services = dict(section.get("services") or {})
            ntp_service = dict(services.get("ntp") or {})
            ntp_service["environment"] = {**(ntp_service.get("environment") or {}), "NTP_SERVERS": " ".join(names)}
            services["ntp"] = ntp_service
            section["services"] = services
        path = self.root / CONFIG_FILE
        current = read_settings_file(self.root).model_dump(mode="json", exclude_defaults=True, by_alias=True)
        merged = merge(current, section, WHOLE_SETTINGS)
        try:
            self.merged_settings = HostSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(str(path), [Issue(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]) from None
        if not section:
            return None
        self.check_trust_root(section.get("trust"), path)
        from ruamel.yaml import YAML  # only when there is something to write

        out = io.StringIO()
        out.write("# osctl host settings; user data (osctl: section) is merged in at every boot\n")
        YAML(typ="safe", pure=True).dump(merged, out)
        return "settings updated" if self.write(path, out.getvalue().encode()) else None

    def check_trust_root(self, trust: Any, config: Path) -> None:
        """The ``trust.root`` the user data gives, checked before it is written: an inline root
        must be TUF root metadata (a host with a broken root refuses every new version); a path
        is read on the host when the root is used, so a path that is not there gets a warning."""
        root = trust.get("root") if isinstance(trust, dict) else None
        if isinstance(root, dict):
            from osctl.adapters.tufclient import root_version  # python-tuf, only when a root is given

            try:
                root_version(json.dumps(root).encode())
            except UsageError as exc:
                raise UsageError(f"osctl.trust.root: {exc.message}", hint=exc.hint) from None
        elif isinstance(root, str) and not (where := config.parent / root).is_file() and not self.writes(where.resolve()):
            self.report.warnings.append(
                f"osctl.trust.root: {where} does not exist on this host: the trusted root is read "
                "from there when a version is resolved; ship the file first (write_files, or the OS image), or "
                "give the root inline")

    def writes(self, path: Path) -> bool:
        """Does ``write_files`` of this user data write ``path`` (later in this boot)?"""
        for entry in self.config.get("write_files") or []:
            try:
                if hostfiles.under_root(self.root, entry["path"]) == path:
                    return True
            except OsctlError:
                continue
        return False

    def services(self) -> str | None:
        """The running set takes the host's extra services (and their changes) now."""
        state = servicestate.read_services(self.root)
        if self.dry_run or state.desired != "up" or not state.version:
            return None
        sset = serviceset.load_service_set(self.settings.host_id, self.root, state.version)
        outcomes = serviceset.up(self.engine, sset, skip=skipped(state), wait_healthy=False)
        touched = [o.service for o in outcomes
                   if o.result in (ServiceResult.CREATED, ServiceResult.RECREATED, ServiceResult.STARTED)]
        return f"services {', '.join(touched)} (re)started" if touched else None

    def write_files(self, files: list[dict[str, Any]]) -> str | None:
        changed = []
        for entry in files:
            path = hostfiles.under_root(self.root, entry["path"])
            data = _decode(entry.get("content") or "", entry.get("encoding") or "text/plain", entry["path"])
            owner = hostfiles.owner_ids(self.root, entry.get("owner") or "root:root")
            mode = int(str(entry.get("permissions") or "0644"), 8)
            if entry.get("append"):
                if not self.dry_run:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "ab") as handle:
                        handle.write(data)
                    os.chown(path, *owner)
                changed.append(entry["path"])
            elif self.write(path, data, mode, owner if owner != (0, 0) else None):
                changed.append(entry["path"])
        return ", ".join(changed) if changed else None

    # -- once per instance ---------------------------------------------------------------------
    def once(self) -> None:
        c = self.config
        if c.get("users") or c.get("ssh_authorized_keys"):
            self.once_step("users", self.users)
        later = [f for f in c.get("write_files") or [] if f.get("defer") or f.get("append")]
        if later:
            self.once_step("write_files_once", lambda: self.write_files(later))
        if c.get("runcmd"):
            self.once_or_boot_commands("runcmd", c["runcmd"], every_boot=False)
        for index, script in enumerate(self.data.scripts):
            self.once_step(f"script:{script.name}", lambda s=script, i=index: self.script(s, i), command=True)

    def users(self) -> str | None:
        made = []
        for user in self.config.get("users") or []:
            if user == "default" or not isinstance(user, dict):
                continue
            made.append(self.user(user["name"], user.get("shell") or "/bin/sh", _groups(user.get("groups")),
                                  list(user.get("ssh_authorized_keys") or [])))
        if self.config.get("ssh_authorized_keys"):
            self.keys("/root", 0, 0, list(self.config["ssh_authorized_keys"]))
            made.append("root's keys")
        return ", ".join(made)

    def user(self, name: str, shell: str, groups: list[str], keys: list[str]) -> str:
        uid = hostfiles.add_user(self.root, name, shell)
        for group in groups:
            hostfiles.add_to_group(self.root, name, group)
        if keys:
            self.keys(f"/home/{name}", uid, uid, keys)
        return name

    def keys(self, home: str, uid: int, gid: int, keys: list[str]) -> None:
        ssh = hostfiles.under_root(self.root, f"{home}/.ssh")
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chown(ssh.parent, uid, gid)
        os.chown(ssh, uid, gid)
        path = ssh / "authorized_keys"
        present = path.read_text().splitlines() if path.is_file() else []
        wanted = present + [k for k in keys if k not in present]
        fsutil.atomic_write(path, "\n".join(wanted) + "\n", mode=0o600)
        os.chown(path, uid, gid)

    def once_or_boot_commands(self, name: str, commands: list[Any], *, every_boot: bool) -> None:
        def run() -> str:
            for index, command in enumerate(commands):
                argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
                self.container(f"{name}[{index}]", argv)
            return f"{len(commands)} command(s)"

        if every_boot:
            if self.dry_run:
                self.report.steps.append(Step(name, "would-run", f"{len(commands)} command(s)"))
                return
            try:
                self.report.steps.append(Step(name, "ran", run(), 0))
            except CommandFailed as exc:
                self.report.steps.append(Step(name, "failed", exc.message, exc.code))
            except OsctlError as exc:
                self.report.steps.append(Step(name, "failed", exc.message))
        else:
            self.once_step(name, run, command=True)

    def script(self, script: Any, index: int) -> str:
        folder = self.root / CI_DIR / "instances" / _safe(self.report.instance_id) / "scripts"
        path = folder / f"{index:02d}-{script.name}"
        fsutil.atomic_write(path, script.content, mode=0o700)
        self.container(f"script {script.name}", [f"/host/{path.relative_to(self.root)}"])
        return script.name

    def container(self, what: str, argv: list[str]) -> None:
        """Run one command in a one-shot container of the host's OS image; raise on failure."""
        image = _os_image(self.settings)
        spec = ContainerSpec(
            name=f"osctl-{self.settings.host_id}-cloudinit-{uuid.uuid4().hex[:8]}",
            image=image,
            labels={**host_labels(self.settings.host_id), LABEL_ROLE: ROLE_HELPER},
            command=argv,
            environment={"OSCTL_HOST_ROOT": "/host", "INSTANCE_ID": self.report.instance_id},
            mounts=[Mount(str(self.root.resolve()), "/host", volume=False)],
            network_mode="host",
            working_dir="/host",
        )
        code, output = self.engine.run_to_completion(spec, COMMAND_TIMEOUT)
        log = hostfiles.under_root(self.root, "/" + LOG_FILE)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')} {what}: exit {code}\n{output}")
        if code != 0:
            last = output.strip().splitlines()[-1:] if output.strip() else []
            raise CommandFailed(what, code, last)


class CommandFailed(OsctlError):
    def __init__(self, what: str, code: int | None, last: list[str]) -> None:
        self.code = code
        said = f"; last line: {last[0]}" if last else ""
        super().__init__(f"{what} {'timed out' if code is None else f'exited with code {code}'}{said}")


def _os_image(settings: Settings) -> str:
    pointer = bootpointer.read(settings.root)
    version = pointer.default
    record = Store(settings.root).get(version) if version else None
    if record is None:
        raise UsageError("no OS version is installed yet to run commands in; they run at a later boot")
    return record.image_id


def _decode(content: str, encoding: str, path: str) -> bytes:
    enc = encoding.lower()
    try:
        data = content.encode()
        if enc in ("b64", "base64", "gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            data = base64.b64decode(data, validate=True)
        if enc in ("gz", "gzip", "gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
            data = gzip.decompress(data)
        return data
    except (binascii.Error, OSError, EOFError, ValueError) as exc:
        raise UsageError(f"write_files {path}: cannot decode its {encoding} content ({exc})") from None


def _groups(value: Any) -> list[str]:
    if isinstance(value, str):
        return [g.strip() for g in value.split(",") if g.strip()]
    return [str(g) for g in value or []]


def _safe(instance_id: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in instance_id)[:64]
    return cleaned or hashlib.sha256(instance_id.encode()).hexdigest()[:16]
