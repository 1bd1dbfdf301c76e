"""The engine adapter: the only module that imports ``docker``.

Everything above talks to the Docker engine through ``Engine`` and gets plain dataclasses back
(``osctl.models.engine``). Every docker or transport exception is translated here, once, into
an ``OsctlError`` that names what osctl was doing and what the user can do about it.

Why the SDK and never the CLI: the client binary on PATH may be newer than the engine; the
SDK negotiates the API version with whatever engine answers.

The SDK puts names into API paths without escaping '/' (``/images/<name>/json``), and dockerd
cleans a path with '..' in it and redirects there: a "digest" like ``sha256:/../../volumes/x``
once turned an untag into the removal of someone's volume. So nothing reaches the SDK that has
not passed its grammar here (``ImageRef``/``Digest`` for images, Docker's name grammar for
containers and volumes), no redirect of the engine is ever followed (``_refuse_redirects``), and
every removal first checks that what it removes is osctl's, for the host that asks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import posixpath
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import docker
import docker.constants
import docker.errors
import requests.exceptions
from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential

from osctl.adapters import hostprocs
from osctl.constants import DEFAULT_DOCKER_HOST, LABEL_HOST, LABEL_ROLE, ROLE_HELPER, SETUP_COMMAND
from osctl.errors import EngineError, EngineUnavailable, ImageFileError, NotFoundError, RegistryUnavailable, UsageError
from osctl.models.engine import (
    DEFAULT_STOP_TIMEOUT,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    EngineInfo,
    ImageInfo,
    PullProgress,
    VolumeInfo,
)
from osctl.models.refs import DIGEST, ImageRef

log = logging.getLogger(__name__)

_PROBE_API_VERSION = "1.24"  # the oldest API docker-py speaks; enough for GET /version
MAX_FILE_BYTES = 64 << 20  # what read_files will hold in memory for one file
_MAX_LINKS = 8  # symbolic links read_files follows in a row before calling it a loop
_LOOP_WORDS = ("too many links", "too many levels of symbolic links")  # the engine's words for a loop
_GO_MODE_SYMLINK = 1 << 27  # the stat header's mode is Go's os.FileMode
_GO_MODE_TYPE = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)  # not a plain file
_REGISTRY_DOWN = ("connection refused", "no such host", "i/o timeout", "timeout exceeded", "connection reset")
_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")  # container and volume names and ids


def engine_address() -> str:
    """The address the SDK will use, for messages: ``DOCKER_HOST`` or the local socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


class Engine:
    """A lazily connected Docker engine client.

    Constructing it costs nothing; the first call connects (with a short bounded retry, since a
    freshly started dockerd may take a moment) and fails with ``EngineUnavailable`` naming the
    address tried and the setup command.
    """

    def __init__(self, *, timeout: float = 120.0, connect_attempts: int = 3) -> None:
        self.address = engine_address()
        self._timeout = timeout
        self._connect_attempts = connect_attempts
        self._client: docker.DockerClient | None = None
        self._api_version: str | None = None  # negotiated once; an event stream's client reuses it

    # -- connection ----------------------------------------------------------------------
    @property
    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            retrying = Retrying(
                retry=retry_if_exception_type(EngineUnavailable),
                stop=stop_after_attempt(self._connect_attempts),
                wait=wait_exponential(multiplier=0.1, max=0.5),
                before_sleep=before_sleep_log(log, logging.INFO),
                reraise=True,
            )
            self._client = retrying(self._connect)
        return self._client

    def _connect(self) -> docker.DockerClient:
        """Ask the engine for its API version, then open a client speaking that version.

        ``docker.from_env()`` would negotiate by itself, but when the engine is down it leaves
        its socket unclosed; probing with a pinned version lets us close it either way.
        """
        if self.address.startswith("unix://") and not os.path.exists(self.address.removeprefix("unix://")):
            # Checked here because docker-py leaks the socket object when the path is missing.
            raise self._unavailable(FileNotFoundError(self.address))
        if self._api_version is None:  # a second connection (an event stream) needs no second probe
            probe = _refuse_redirects(docker.from_env(version=_PROBE_API_VERSION, timeout=10))
            try:
                server = probe.api.version(api_version=False)
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise self._unavailable(exc) from exc
            finally:
                probe.close()
            self._api_version = min(server.get("ApiVersion", _PROBE_API_VERSION),
                                    docker.constants.DEFAULT_DOCKER_API_VERSION, key=_api_key)
        return _refuse_redirects(docker.from_env(version=self._api_version, timeout=int(self._timeout)))

    def _unavailable(self, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"cannot reach the Docker engine at {self.address}: {_root_cause(exc)}",
            hint=f"start it with {SETUP_COMMAND} (as root), or point DOCKER_HOST at a running engine",
        )

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn docker and transport exceptions into osctl errors that say what failed."""
        try:
            yield
        except docker.errors.NotFound as exc:
            raise NotFoundError(f"{action}: {_explain(exc)}") from exc
        except docker.errors.APIError as exc:
            raise EngineError(f"{action}: {_explain(exc)}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise self._unavailable(exc) from exc
        except requests.exceptions.Timeout as exc:
            raise EngineError(f"{action}: the engine at {self.address} did not answer in time") from exc
        except docker.errors.DockerException as exc:
            raise EngineError(f"{action}: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- engine --------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        with self._translated("asking the engine for its version"):
            data = self._docker.api.version()
        return EngineInfo(self.address, data.get("Version", "?"), data.get("ApiVersion", "?"))

    def data_root(self) -> str:
        """Where the engine keeps images and layers (``DockerRootDir``): a path on the engine's
        machine, which is this one only when the engine is local. Empty when the engine does not say."""
        with self._translated("asking the engine where it keeps its data"):
            data = self._docker.api.info()
        return str(data.get("DockerRootDir") or "")

    def layer_chains(self) -> set[str]:
        """The ChainIDs (``chain_ids``) of every layer of every image the engine holds.

        A layer is stored once per ChainID, that is per layer *and everything below it*: the
        same diff on another base is unpacked again. So this, not a set of diff ids, says which
        layers of an image to come the engine already has. Listed images are inspected side by
        side (an engine holding hundreds of images answers in well under a second); an image
        removed meanwhile is skipped. Intermediate images need no listing: their layers are
        the lower layers of the images built on them.
        """
        with self._translated("listing the engine's images"):
            ids = sorted({str(image.get("Id") or "") for image in self._docker.api.images()})

        def layers(image_id: str) -> list[str]:
            try:
                with self._translated(f"inspecting image {image_id[:19]}"):
                    attrs = self._docker.api.inspect_image(image_id)
            except NotFoundError:
                return []
            return [str(d) for d in (attrs.get("RootFS") or {}).get("Layers") or []]

        wanted = [i for i in ids if DIGEST.fullmatch(i)]  # only ids that passed the grammar reach a path
        with ThreadPoolExecutor(max_workers=8) as pool:
            return {chain for diff_ids in pool.map(layers, wanted) for chain in chain_ids(diff_ids)}

    # -- images --------------------------------------------------------------------------
    def image(self, ref: ImageRef | str) -> ImageInfo | None:
        """The local image ``ref`` (a reference or an image id), or None when the engine does not hold it."""
        name = _image_name(ref)
        try:
            with self._translated(f"inspecting image {name}"):
                attrs = self._docker.api.inspect_image(name)
        except NotFoundError:
            return None
        return _image_info(attrs)

    def pull(self, ref: ImageRef | str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo:
        """Pull ``ref`` (``repo:tag`` or ``repo@digest``), reporting per-layer byte progress.

        The stream is read to its end before anything else is asked of the engine: a stream
        left half-read blocks the next call on the same client.
        """
        parsed = _parsed_ref(ref)
        ref = str(parsed)
        action = f"pulling {ref}"
        try:
            with self._translated(action):
                for event in self._docker.api.pull(parsed.repository, tag=parsed.pin, stream=True, decode=True):
                    if "error" in event:
                        raise EngineError(event.get("error") or "unknown error")
                    if progress is not None and event.get("id"):
                        detail = event.get("progressDetail") or {}
                        progress(PullProgress(ref, event["id"], event.get("status", ""),
                                              int(detail.get("current") or 0), int(detail.get("total") or 0)))
        except (EngineError, NotFoundError) as exc:
            raise _pull_error(ref, exc) from exc
        info = self.image(ref)
        if info is None:
            raise EngineError(f"{action}: the engine reported success but does not hold the image")
        return info

    def tag(self, image_id: str, ref: ImageRef | str) -> None:
        """Give a local image a human-readable tag (``docker images`` shows versions by name)."""
        parsed = _parsed_ref(ref)
        if parsed.digest is not None or parsed.tag is None:
            raise UsageError(f"cannot tag an image as {parsed}: a tag is repository:tag")
        with self._translated(f"tagging {parsed}"):
            self._docker.api.tag(_image_id(image_id), parsed.repository, str(parsed.tag))

    def untag(self, ref: ImageRef | str) -> None:
        """Remove one name of an image; the image stays while it has other names or users.

        Only a name (``repo:tag`` or ``repo@digest``): an image id here would remove the image.
        """
        parsed = _parsed_ref(ref)
        if parsed.tag is None and parsed.digest is None:
            raise UsageError(f"cannot untag {parsed}: name the tag or digest to remove")
        try:
            with self._translated(f"untagging {parsed}"):
                self._docker.api.remove_image(str(parsed), force=False, noprune=True)
        except NotFoundError:
            pass
        except EngineError as exc:
            if "conflict" not in str(exc).lower():
                raise

    def remove_image(self, image_id: str, *, unless_tagged: str) -> Literal["removed", "held", "in-use", "gone"]:
        """Remove an image with all its names, if nobody needs it; says what happened.

        ``"held"`` (nothing removed) while any of its names starts with ``unless_tagged`` (the
        hold tags by which hosts say they need it: checked right before the removal, not when
        the caller decided), ``"in-use"`` while any container, of any owner, is made from it or
        other images are built on it; ``"gone"`` when the engine no longer has it, ``"removed"``
        otherwise.
        """
        image_id = _image_id(image_id)
        action = f"removing image {image_id[:19]}"
        with self._translated(action):
            try:
                names = self._docker.api.inspect_image(image_id).get("RepoTags") or []
            except docker.errors.NotFound:
                return "gone"
            if any(name.startswith(unless_tagged) for name in names):
                return "held"
            if self._docker.api.containers(all=True, filters={"ancestor": image_id}):
                return "in-use"
        try:
            with self._translated(action):
                # force: the image has several names (repo:tag, repo@digest) and all must go.
                self._docker.api.remove_image(image_id, force=True)
        except NotFoundError:
            return "gone"
        except EngineError as exc:
            if "conflict" in str(exc).lower():  # e.g. other images are built on it
                return "in-use"
            raise
        return "removed"

    def load(self, chunks: Iterable[bytes]) -> list[str]:
        """Load the docker-archive streamed by ``chunks``; the ids of the images the engine says
        it loaded (``Loaded image ID: sha256:...``; images the archive tags are not counted).

        The engine's answer is read to its end (a half-read answer blocks the next call). An
        exception raised by ``chunks`` (a bundle's ``IntegrityError``) comes out as itself,
        whatever requests or the SDK make of it: the request then ends without its last chunk,
        the engine sees a cut-short archive, and loads nothing of it. Not ``quiet``: the engine's
        progress events while it registers the layers keep a load of gigabytes from looking,
        to the client's read timeout, like an engine that stopped answering.
        """
        failed: list[BaseException] = []

        def body() -> Iterator[bytes]:
            try:
                yield from chunks
            except BaseException as exc:
                failed.append(exc)
                raise

        loaded: list[str] = []
        try:
            with self._translated("loading images into the engine"):
                for event in self._docker.api.load_image(data=body(), quiet=False):
                    if not isinstance(event, dict):
                        continue
                    if event.get("error") or event.get("errorDetail"):
                        detail = event.get("error") or (event.get("errorDetail") or {}).get("message")
                        raise EngineError(f"loading images into the engine: {str(detail)[:300]}")
                    text = str(event.get("stream") or "").strip()
                    if text.startswith("Loaded image ID: ") and DIGEST.fullmatch(text.split(": ", 1)[1]):
                        loaded.append(text.split(": ", 1)[1])
        except BaseException:
            if failed:
                raise failed[0] from None
            raise
        return loaded

    def read_files(self, image: ImageRef | str, paths: list[str], *,
                   labels: dict[str, str]) -> dict[str, bytes | None]:
        """Read files out of an image without running it: None for a path that is not there.

        A helper container is created (never started), labelled so that leftovers from a crash
        can be found, and removed afterwards (by the id this call was given: it is this call's
        own). Symbolic links inside the image are followed.
        """
        out: dict[str, bytes | None] = {}
        image = _image_name(image)
        with self._translated(f"reading files from image {image}"):
            api = self._docker.api
            container = api.create_container(image, command=["/osctl-never-started"],
                                             labels={**labels, LABEL_ROLE: ROLE_HELPER})
            try:
                for path in paths:
                    out[path] = self._read_one(container["Id"], path)
            finally:
                api.remove_container(container["Id"], force=True)
        return out

    def _read_one(self, container: str, path: str) -> bytes | None:
        """One file's content; symbolic links are followed inside the image, at most 8 in a row.

        The engine's stat header (sent before the archive) says what the path is: a directory,
        a device or a file over ``MAX_FILE_BYTES`` is answered without reading the archive, so
        a sparse 2 GB "kernel" costs nothing. A response left unread is closed, never left
        half-read on the client (that would block the next call).
        """
        current = path
        for _ in range(_MAX_LINKS + 1):
            try:
                stream, stat = self._docker.api.get_archive(container, current)
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as exc:
                if any(words in _explain(exc) for words in _LOOP_WORDS):  # the engine's own resolution
                    raise ImageFileError(path, "symlink loop in the image") from None
                raise
            mode, size = int((stat or {}).get("mode", 0)), int((stat or {}).get("size", 0))
            is_file, is_link = not mode & _GO_MODE_TYPE, bool(mode & _GO_MODE_SYMLINK)
            if not (is_file or is_link) or (is_file and size > MAX_FILE_BYTES):
                stream.close()  # unstarted: this drops the only reference to the response, which closes it
                if is_file:
                    raise ImageFileError(path, f"larger than {MAX_FILE_BYTES >> 20} MiB")
                return None
            member, content = _first_entry(stream, path)
            if member is None or not member.issym():
                return content
            current = posixpath.normpath(posixpath.join(posixpath.dirname(current), member.linkname))
        raise ImageFileError(path, f"more than {_MAX_LINKS} symbolic links in a row in the image")

    # -- containers and volumes ------------------------------------------------------------
    def containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """Every container (running or not) carrying all of ``labels``."""
        with self._translated("listing containers"):
            found = self._docker.api.containers(all=True, filters={"label": _label_filter(labels)})
        return [
            ContainerInfo(c["Id"], (c.get("Names") or ["?"])[0].lstrip("/"), c.get("Labels") or {},
                          c.get("State", "?"), c.get("Image", "?"))
            for c in found
        ]

    def volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        """Every volume carrying all of ``labels``."""
        with self._translated("listing volumes"):
            found = self._docker.api.volumes(filters={"label": _label_filter(labels)})
        return [VolumeInfo(v["Name"], v.get("Labels") or {}) for v in (found.get("Volumes") or [])]

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a system container; its named volumes are created first, labelled.

        Every system container runs with the engine's init as PID 1, so a daemon in it gets
        SIGTERM like any process and stops at once instead of waiting out the stop timeout.
        The engine's own restart policy stays "no": osctl's supervisor owns restarts, with
        backoff and a failed state the engine does not have.
        """
        api = self._docker.api
        with self._translated(f"creating container {spec.name}"):
            for mount in spec.mounts:
                if mount.volume:
                    self._ensure_volume(_object_name(mount.source, "volume"), spec.volume_labels.get(mount.source, {}))
            host_config = api.create_host_config(
                binds={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts},
                network_mode=spec.network_mode, privileged=spec.privileged, init=True,
                restart_policy={"Name": "no"}, log_config={"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
            )
            healthcheck = None
            if spec.probe is not None:
                healthcheck = {"test": spec.probe.test, "interval": _ns(spec.probe.interval),
                               "timeout": _ns(spec.probe.timeout), "retries": spec.probe.retries,
                               "start_period": _ns(spec.probe.start_period)}
            created = api.create_container(
                _image_name(spec.image), command=spec.command, entrypoint=spec.entrypoint, environment=spec.environment,
                labels=spec.labels, name=_object_name(spec.name, "container"), host_config=host_config, healthcheck=healthcheck,
                detach=True, stop_signal=spec.stop_signal, stop_timeout=spec.stop_timeout, working_dir=spec.working_dir,
            )
        return str(created["Id"])

    def _ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        try:
            self._docker.api.inspect_volume(name)
        except docker.errors.NotFound:
            self._docker.api.create_volume(name, labels=labels)

    def start(self, container_id: str) -> None:
        with self._translated(f"starting container {container_id[:12]}"):
            self._docker.api.start(_object_name(container_id, "container"))

    def stop(self, container_id: str, timeout: float = 10.0) -> None:
        with contextlib.suppress(NotFoundError), self._translated(f"stopping container {container_id[:12]}"):
            self._docker.api.stop(_object_name(container_id, "container"), timeout=max(0, int(timeout)))

    def inspect(self, container_id: str) -> ContainerState | None:
        """The container's state, or None when it does not exist."""
        try:
            with self._translated(f"inspecting container {container_id[:12]}"):
                attrs = self._docker.api.inspect_container(_object_name(container_id, "container"))
        except NotFoundError:
            return None
        state = attrs.get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        return ContainerState(
            id=attrs["Id"], name=attrs.get("Name", "").lstrip("/"), labels=(attrs.get("Config") or {}).get("Labels") or {},
            status=state.get("Status", "?"), running=bool(state.get("Running")), exit_code=int(state.get("ExitCode") or 0),
            started_at=state.get("StartedAt", ""), finished_at=state.get("FinishedAt", ""), health=health,
            image=attrs.get("Image", ""), restart_count=int(attrs.get("RestartCount") or 0),
            binds=tuple(m.get("Source", "") for m in attrs.get("Mounts") or [] if m.get("Type") == "bind"),
            stop_timeout=_stop_timeout((attrs.get("Config") or {}).get("StopTimeout")),
        )

    def wait(self, container_id: str, timeout: float) -> int | None:
        """The exit code once the container stops, or None if it still runs after ``timeout``."""
        try:
            with self._translated(f"waiting for container {container_id[:12]}"):
                return int(self._docker.api.wait(_object_name(container_id, "container"),
                                                 timeout=timeout)["StatusCode"])
        except EngineError as exc:
            if isinstance(exc.__cause__, requests.exceptions.RequestException | docker.errors.DockerException):
                return None
            raise

    def run_probe(self, container_id: str, test: list[str], timeout: float) -> bool:
        """Run a health check command in the container now; True when it exits 0 in time.

        A probe still running at its timeout is ended with all it started (``_end_probe``): an
        exec the engine was left running would run on, and a probe that hangs once hangs every
        time, one more process per try. One that could not be ended is remembered, and no new
        probe of that container starts while it runs: the answer is False until it ends.
        """
        if test[0] == "CMD-SHELL":
            argv = ["/bin/sh", "-c", test[1]]
        else:
            argv = list(test[1:])
        api = self._docker.api
        try:
            with self._translated(f"probing container {container_id[:12]}"):
                if _UNENDED_PROBES.running(container_id, self._end_probe):
                    return False
                exec_id = api.exec_create(_object_name(container_id, "container"), argv, stdout=False, stderr=False)["Id"]
                api.exec_start(exec_id, detach=True)
                deadline = time.monotonic() + timeout
                while True:
                    info = api.exec_inspect(exec_id)
                    if not info.get("Running"):
                        return info.get("ExitCode") == 0
                    if time.monotonic() > deadline:
                        if not self._end_probe(exec_id):
                            _UNENDED_PROBES.remember(container_id, exec_id)
                        return False
                    time.sleep(0.02)
        except (EngineError, NotFoundError):
            return False

    def _end_probe(self, exec_id: str) -> bool:
        """SIGKILL a running exec and its descendants from the host; True once the engine
        reports it ended (within a second), or it is gone.

        The exec's host pid (``exec_inspect`` -> ``Pid``) leads a session of its own (the
        runtime starts every exec that way), so a ``/bin/sh -c`` probe's children, the part
        that usually hangs, are found with it. ``hostprocs.kill_session`` says why signalling
        a pid from the host cannot reach a stranger.
        """
        api = self._docker.api
        try:
            info = api.exec_inspect(exec_id)
        except docker.errors.NotFound:
            return True
        pid, container = int(info.get("Pid") or 0), str(info.get("ContainerID") or "")
        if info.get("Running") and pid > 0:

            def still_leader() -> bool:
                now = api.exec_inspect(exec_id)
                return bool(now.get("Running")) and int(now.get("Pid") or 0) == pid

            if hostprocs.kill_session(pid, container, still_leader) == 0:
                log.info("cannot end the timed-out probe %s (pid %s) from this host", exec_id[:12], pid)
        for _ in range(50):
            try:
                if not api.exec_inspect(exec_id).get("Running"):
                    return True
            except docker.errors.NotFound:
                return True
            time.sleep(0.02)
        return False

    def logs(self, container_id: str, *, tail: int | None = None, follow: bool = False) -> Iterator[bytes]:
        """The container's output (stdout and stderr, as written), streamed when following."""
        with self._translated(f"reading logs of {container_id[:12]}"):
            stream = self._docker.api.logs(_object_name(container_id, "container"), stream=True, follow=follow,
                                           tail="all" if tail is None else tail)
            yield from stream

    def last_lines(self, container_id: str, count: int = 10) -> list[str]:
        """The last lines a container wrote, for error messages."""
        try:
            data = b"".join(self.logs(container_id, tail=count))
        except (EngineError, NotFoundError):
            return []
        return data.decode("utf-8", errors="replace").rstrip("\n").splitlines()[-count:]

    def events(self, labels: dict[str, str]) -> EventStream:
        """The engine's container events for ``labels``, on a connection of their own.

        The stream blocks while it waits; a separate client keeps the main one free for the
        calls the supervisor makes while reacting to an event.
        """
        client = self._connect()
        try:
            stream = client.api.events(decode=True, filters={"type": "container", "label": _label_filter(labels)})
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            client.close()
            raise self._unavailable(exc) from exc
        return EventStream(client, stream, self._unavailable)

    def run_to_completion(self, spec: ContainerSpec, timeout: float) -> tuple[int | None, str]:
        """Run a helper container to its end: (exit code or None on timeout, its output).

        The container is removed afterwards whatever happens (it carries ``spec``'s host label,
        which the removal checks); its output is returned so the caller can keep it in a log.
        """
        container_id = self.create(spec)
        try:
            self.start(container_id)
            code = self.wait(container_id, timeout)
            if code is None:
                self.stop(container_id, 1)
            output = b"".join(self.logs(container_id)).decode("utf-8", errors="replace")
            return code, output
        finally:
            self.remove_container(container_id, host_id=spec.labels.get(LABEL_HOST, ""))

    def stop_and_remove(self, container_id: str, timeout: float = 10.0, *, host_id: str) -> None:
        """Stop a container of ``host_id`` (its processes get SIGTERM, then SIGKILL after
        ``timeout``) and remove it; named volumes stay. A container already gone is fine; one
        that is not ``host_id``'s is refused before anything is done to it."""
        if self._owned("container", container_id, host_id):
            self.stop(container_id, timeout)
            self._remove_container(container_id)

    def remove_container(self, container_id: str, *, host_id: str) -> None:
        """Remove a container of ``host_id`` (checked by its label first); gone already is fine."""
        if self._owned("container", container_id, host_id):
            self._remove_container(container_id)

    def _remove_container(self, container_id: str) -> None:
        with contextlib.suppress(NotFoundError), self._translated(f"removing container {container_id[:12]}"):
            self._docker.api.remove_container(_object_name(container_id, "container"), force=True, v=False)

    def remove_volume(self, name: str, *, host_id: str) -> None:
        """Remove a named volume of ``host_id`` (checked by its label first); gone already is fine."""
        if self._owned("volume", name, host_id):
            with contextlib.suppress(NotFoundError), self._translated(f"removing volume {name}"):
                self._docker.api.remove_volume(_object_name(name, "volume"), force=True)

    def _owned(self, kind: str, name: str, host_id: str) -> bool:
        """Whether ``name`` exists, and is labelled as ``host_id``'s; anything else's is an error.

        Asked right before each removal, so that a removal can only ever reach what osctl
        created for this host, whatever id or name the caller was handed.
        """
        api = self._docker.api
        try:
            with self._translated(f"inspecting {kind} {name[:12]}"):
                if kind == "container":
                    labels = (api.inspect_container(_object_name(name, kind)).get("Config") or {}).get("Labels")
                else:
                    labels = api.inspect_volume(_object_name(name, kind)).get("Labels")
        except NotFoundError:
            return False
        owner = (labels or {}).get(LABEL_HOST)
        if not host_id or owner != host_id:
            raise EngineError(f"refusing to remove {kind} {name[:64]}: it is not osctl's for host {host_id or '?'} "
                              f"({LABEL_HOST}={owner or 'none'}); it was left alone")
        return True


class _UnendedProbes:
    """Probes (container id -> exec id) that outlived their timeout and could not be ended.

    Process-wide, not per ``Engine``: the supervisor makes a new ``Engine`` at every reconnect,
    and the exec it could not end is still there. Probes of several containers run side by
    side (one thread per service), hence the lock.
    """

    def __init__(self) -> None:
        self._execs: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, container_id: str, exec_id: str) -> None:
        with self._lock:
            self._execs[container_id] = exec_id

    def running(self, container_id: str, end: Callable[[str], bool]) -> bool:
        """Whether the container's last unended probe still runs, after one more try to end it."""
        with self._lock:
            exec_id = self._execs.get(container_id)
        if exec_id is None or end(exec_id):
            with self._lock:
                self._execs.pop(container_id, None)
            return False
        return True


_UNENDED_PROBES = _UnendedProbes()


class EventStream:
    """Engine events as plain dicts; ``close()`` from another thread ends the iteration."""

    def __init__(self, client: docker.DockerClient, stream: Any,
                 unavailable: Callable[[BaseException], EngineUnavailable]) -> None:
        self._client, self._stream, self._unavailable = client, stream, unavailable
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for event in self._stream:
                yield {"action": event.get("Action") or event.get("status", ""), "id": event.get("id", ""),
                       "labels": (event.get("Actor") or {}).get("Attributes") or {}}
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            if not self.closed:
                self.close()
                raise self._unavailable(exc) from exc
            return
        if not self.closed:  # the engine ended the stream: it is going away
            self.close()
            raise self._unavailable(ConnectionError("the engine closed the event stream"))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self._stream.close()
            with contextlib.suppress(Exception):
                self._client.close()


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The OCI ChainIDs of a stack of layers (base first), one per layer.

    ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256 of "ChainID(Ln-1) DiffID(Ln)" (OCI image spec,
    config.md). Here because the engine keys its layer store by them; ``domain.preflight`` uses
    the same function for the layers of an image still to come.
    """
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def _stop_timeout(value: object) -> int:
    """A container's own stop timeout; unset (created before osctl set one) is the engine's default."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else DEFAULT_STOP_TIMEOUT


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _refuse_redirects(client: docker.DockerClient) -> docker.DockerClient:
    """Make every redirect of the engine an error instead of a request to follow.

    The engine API never redirects, except when dockerd cleans a path holding '..': following
    that (requests keeps the method of a 301/307, DELETE included) would act on whatever the
    cleaned path names. A response hook runs before requests would follow it.
    """
    def check(resp: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if resp.is_redirect:
            where = requests.utils.urlparse(resp.request.url or "").path
            resp.close()
            raise EngineError(f"the engine redirected {resp.request.method} {where[:120]} to "
                              f"{resp.headers.get('Location', '?')[:120]}; refused, nothing was done")
        return resp

    client.api.hooks["response"].append(check)
    return client


def _parsed_ref(ref: ImageRef | str) -> ImageRef:
    """A reference checked against the grammar before the SDK puts it into a path."""
    if isinstance(ref, ImageRef):
        return ref
    try:
        return ImageRef.parse(ref)
    except ValueError as exc:
        raise UsageError(f"refusing to give the engine {exc}") from None


def _image_id(value: str) -> str:
    if not DIGEST.fullmatch(value):
        raise UsageError(f"refusing to give the engine {value[:80]!r} as an image id (sha256:<64 hex>)")
    return value


def _image_name(ref: ImageRef | str) -> str:
    """An image id (``sha256:<hex>``) as it is, or a reference that passed the grammar."""
    return ref if isinstance(ref, str) and DIGEST.fullmatch(ref) else str(_parsed_ref(ref))


def _object_name(value: str, kind: str) -> str:
    """A container or volume name or id: Docker's name grammar, so nothing in it can be a path."""
    if not _OBJECT_NAME.fullmatch(value):
        raise UsageError(f"refusing to give the engine {value[:80]!r} as a {kind} name")
    return value


def _api_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _label_filter(labels: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in sorted(labels.items())]


def _image_info(attrs: dict[str, Any]) -> ImageInfo:
    config = attrs.get("Config") or {}
    return ImageInfo(
        id=attrs["Id"],
        labels=dict(config.get("Labels") or {}),
        repo_digests=list(attrs.get("RepoDigests") or []),
        repo_tags=list(attrs.get("RepoTags") or []),
        size=int(attrs.get("Size") or 0),
        created=str(attrs.get("Created") or ""),
    )


def _pull_error(ref: str, exc: BaseException) -> BaseException:
    text = str(exc)
    lowered = text.lower()
    if any(marker in lowered for marker in _REGISTRY_DOWN):
        return RegistryUnavailable(f"cannot pull {ref}: the registry did not answer ({text.split(': ')[-1]})",
                                   hint="check that the registry is running; stored versions work offline")
    if "manifest unknown" in lowered or "not found" in lowered:
        return NotFoundError(f"{ref} does not exist in the registry")
    if isinstance(exc, EngineError) and text.startswith("pulling "):
        return exc
    return EngineError(f"pulling {ref}: {text}")


def _first_entry(stream: Iterator[bytes], path: str) -> tuple[tarfile.TarInfo | None, bytes | None]:
    """The first entry of an archive stream, and its content when it is a regular file.

    The stream is always read to its end, even past the size limit (a half-read stream blocks
    the client's next call); only ``MAX_FILE_BYTES`` of it are kept.
    """
    buf, received = io.BytesIO(), 0
    for chunk in stream:
        received += len(chunk)
        if received <= MAX_FILE_BYTES + 65536:
            buf.write(chunk)
    if received > MAX_FILE_BYTES + 65536:
        raise ImageFileError(path, f"larger than {MAX_FILE_BYTES >> 20} MiB")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            return member, None
        handle = tar.extractfile(member)
        return member, handle.read() if handle is not None else None


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation if isinstance(exc.explanation, str) and exc.explanation else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost reason, in words: 'no socket at ...', 'connection refused', ..."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, FileNotFoundError):
            return "the socket does not exist (is dockerd running?)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is dockerd running?)"
        if isinstance(cause, PermissionError):
            return "permission denied on the socket (run as root or join the docker group)"
        inner = cause.__cause__ or cause.__context__
        if inner is None and cause.args and isinstance(cause.args[-1], BaseException):
            inner = cause.args[-1]
        cause = inner
    text = str(exc)
    for marker in ("FileNotFoundError", "No such file or directory"):
        if marker in text:
            return "the socket does not exist (is dockerd running?)"
    if "Connection refused" in text:
        return "connection refused (is dockerd running?)"
    return text.splitlines()[0] if text else type(exc).__name__
