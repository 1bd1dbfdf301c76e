"""The one error hierarchy of osctl.

Every failure a user can cause or meet is an ``OsctlError``: it carries a one-line message, an
optional hint saying what to do, and the process exit code. The CLI turns it into one red line;
anything else reaching the top is a bug and is reported as such.

This module is a leaf: it imports nothing from osctl, so every layer may raise these.

    OsctlError                      exit 1  something failed
    ├── UsageError                  exit 2  bad input: argument, version string, file content
    │   ├── DocumentError           exit 2  a document failed validation (carries every issue)
    │   │   ├── ConfigError         exit 2  a settings file or user data is invalid
    │   │   └── ManifestError       exit 2  a release manifest (or the OS image carrying it) is invalid
    │   ├── NotFoundError           exit 2  a named thing (version, image, service) does not exist
    │   ├── BundleError             exit 2  a file given as a bundle is not one, is cut short, or lacks what was asked
    │   └── ImageFileError          exit 2  a file in an image cannot be read: a symlink loop, too large
    ├── EngineUnavailable           exit 3  no Docker engine answers at the configured address
    ├── EngineError                 exit 1  the engine answered with an error
    ├── RegistryUnavailable         exit 4  the registry cannot be reached
    ├── RegistryAuthError           exit 2  the registry refused the credentials (or there were none)
    ├── RegistryError               exit 1  the registry answered with something osctl cannot use
    ├── EtcdUnavailable             exit 6  no etcd endpoint answers, or the cluster has no quorum
    ├── EtcdError                   exit 1  etcd answered, but with an error
    ├── HostLocked                  exit 5  another osctl process is changing this host
    ├── ServiceFailed               exit 1  a system service did not start, complete or become healthy
    ├── IntegrityError              exit 1  content differs from what was resolved or recorded
    ├── TrustError                  exit 7  the release keys do not vouch for it (unsigned, revoked,
    │                                       stale or forged metadata, a digest other than the signed one)
    ├── StateError                  exit 1  files under the host root are unreadable or unwritable
    └── SpaceError                  exit 8  a download would not fit where it goes (checked before the first byte)
"""

from __future__ import annotations

from dataclasses import dataclass


class ExitCode:
    """Process exit codes; documented in docs/cli.md and stable for scripts."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    ENGINE_UNAVAILABLE = 3
    REGISTRY_UNAVAILABLE = 4
    LOCKED = 5
    ETCD_UNAVAILABLE = 6
    UNTRUSTED = 7
    NO_SPACE = 8


class OsctlError(Exception):
    """Base of every error osctl reports to a user."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(OsctlError):
    """The user gave osctl something it cannot use: an argument, a version, a file."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Issue:
    """One problem found in a document: where it is and what is wrong.

    ``path`` is the dotted path of the key (``services.syslog.healthcheck.interval``), ``line``
    and ``column`` are 1-based positions in the source text when known.
    """

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def render(self, source: str | None = None) -> str:
        where = source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
            if self.column is not None:
                where += f":{self.column}"
        prefix = f"{where}: " if where else ""
        key = f"{self.path}: " if self.path else ""
        return f"{prefix}{key}{self.message}"


class DocumentError(UsageError):
    """A document (manifest, settings, user data) failed validation; carries every issue."""

    kind = "document"

    def __init__(self, source: str, issues: list[Issue], *, hint: str | None = None) -> None:
        self.source = source
        self.issues = list(issues)
        first = self.issues[0].render(source) if self.issues else f"{source}: invalid {self.kind}"
        more = len(self.issues) - 1
        message = f"invalid {self.kind}: {first}" + (f" (and {more} more)" if more > 0 else "")
        super().__init__(message, hint=hint)


class ConfigError(DocumentError):
    """A settings file (``<root>/etc/osctl/config.yaml``) or user data is invalid."""

    kind = "settings"


class ManifestError(DocumentError):
    """A release manifest, or the OS image that carries it, breaks the image contract."""

    kind = "release manifest"


class NotFoundError(UsageError):
    """A version, image or service named by the user does not exist."""


class BundleError(UsageError):
    """A file given as a bundle is not one osctl can use: not a tar, cut short, malformed, or
    without the version or image asked for. The message names the file; nothing was stored."""


class ImageFileError(UsageError):
    """A file osctl reads out of an image is a symlink loop or too large to hold.

    Raised with the path inside the image; the caller, who knows which key named that path
    (``boot.kernel``), says so.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class EngineUnavailable(OsctlError):
    """No Docker engine answers at the address osctl tried."""

    exit_code = ExitCode.ENGINE_UNAVAILABLE


class EngineError(OsctlError):
    """The Docker engine answered, but with an error."""


class RegistryUnavailable(OsctlError):
    """The registry could not be reached after bounded retries."""

    exit_code = ExitCode.REGISTRY_UNAVAILABLE


class RegistryAuthError(OsctlError):
    """The registry wants credentials osctl does not have, or refused the ones it has.

    A usage error, not an outage: retrying cannot help, fixing the credentials (``docker login``)
    does.
    """

    exit_code = ExitCode.USAGE


class RegistryError(OsctlError):
    """The registry answered, but with something osctl refuses to use: a malformed manifest or
    tag list, a digest that is not a digest, an answer larger than any registry sends.

    Said about the one tag (or list) concerned, so that one bad tag does not hide the others;
    ``reason`` is what was wrong without the registry and tag, for a listing that names them.
    """

    def __init__(self, message: str, *, hint: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason or message


class EtcdUnavailable(OsctlError):
    """No etcd endpoint answered, or none could serve the request (no quorum), after bounded retries.

    Its own exit code: a fleet agent's supervisor (or a script) waits and tries again, while any
    other failure needs a human.
    """

    exit_code = ExitCode.ETCD_UNAVAILABLE


class EtcdError(OsctlError):
    """etcd answered, but with an error (a compacted revision, a malformed value, ...)."""


class EtcdLeaseGone(EtcdError):
    """A write under a lease that has expired (its keys are gone): take a new lease and write again."""


class HostLocked(OsctlError):
    """Another osctl process holds this host's lock."""

    exit_code = ExitCode.LOCKED


class ServiceFailed(OsctlError):
    """A system service failed to come up; names it and quotes its last log lines."""

    def __init__(self, service: str, detail: str, logs: list[str], *, others: int = 0) -> None:
        self.service, self.detail, self.logs = service, detail, logs
        tail = f"; last log lines: {' | '.join(logs[-3:])}" if logs else ""
        more = f" (and {others} more)" if others else ""
        super().__init__(f"service {service} failed: {detail}{tail}{more}", hint=f"osctl service logs {service}")


class IntegrityError(OsctlError):
    """What arrived is not what was resolved: a tag moved, a digest differs."""


class TrustError(OsctlError):
    """The release keys do not vouch for what was asked: refused, and nothing was changed.

    Its own exit code, so that a script or a fleet tells "not trusted" (someone must look at the
    registry or the keys) from "failed" (try again).
    """

    exit_code = ExitCode.UNTRUSTED


class StateError(OsctlError):
    """A file under the host root cannot be read or written."""


class SpaceError(OsctlError):
    """A download would not fit: the bytes it needs and the bytes free, said before the first byte.

    Its own exit code, so that a script or a fleet tells "make room and try again" from a failure.
    """

    exit_code = ExitCode.NO_SPACE
