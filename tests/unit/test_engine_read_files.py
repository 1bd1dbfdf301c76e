"""Engine.read_files against a stub of the engine API: what is refused before any byte is read.

The stat header comes before the archive; a file over the limit, a folder or a device must be
answered from it, and the unread response closed. The engine's error for a symlink loop names
its overlay2 folder: osctl says "symlink loop in the image" instead.
"""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from osctl.adapters.engine import MAX_FILE_BYTES, Engine
from osctl.errors import ImageFileError

GO_DIR = 1 << 31


class Unread:
    """An archive stream that must not be read; it records being closed."""

    closed = False

    def __iter__(self) -> Any:
        raise AssertionError("the archive was read")

    def close(self) -> None:
        self.closed = True


class StubApi:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.removed: list[str] = []

    def create_container(self, image: str, **_: Any) -> dict[str, str]:
        return {"Id": "helper"}

    def remove_container(self, container: str, force: bool) -> None:
        self.removed.append(container)

    def get_archive(self, container: str, path: str) -> Any:
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        return answer


def engine_with(answers: dict[str, Any]) -> tuple[Engine, StubApi]:
    engine, api = Engine(), StubApi(answers)
    engine._client = SimpleNamespace(api=api)  # type: ignore[assignment]
    return engine, api


def archive(name: str, data: bytes) -> list[bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return [buf.getvalue()]


def test_a_file_over_the_limit_is_refused_from_its_stat_and_never_read() -> None:
    stream = Unread()
    engine, api = engine_with({"/boot/vmlinuz": (stream, {"size": 2 << 30, "mode": 0o644})})
    with pytest.raises(ImageFileError) as caught:
        engine.read_files("img", ["/boot/vmlinuz"], labels={})
    assert caught.value.path == "/boot/vmlinuz" and caught.value.problem == f"larger than {MAX_FILE_BYTES >> 20} MiB"
    assert stream.closed and api.removed == ["helper"]


def test_a_folder_is_not_a_file_and_is_never_read() -> None:
    stream = Unread()
    engine, _ = engine_with({"/boot": (stream, {"size": 4096, "mode": GO_DIR | 0o755})})
    assert engine.read_files("img", ["/boot"], labels={}) == {"/boot": None}
    assert stream.closed


def test_the_engines_symlink_loop_error_is_said_without_its_paths() -> None:
    loop = docker.errors.APIError("500 Server Error", explanation="evalSymlinksInScope: too many links in "
                                  "/var/lib/docker/overlay2/0123/merged/boot/vmlinuz")
    engine, api = engine_with({"/boot/vmlinuz": loop})
    with pytest.raises(ImageFileError) as caught:
        engine.read_files("img", ["/boot/vmlinuz"], labels={})
    assert str(caught.value) == "/boot/vmlinuz: symlink loop in the image" and api.removed == ["helper"]


def test_a_file_within_the_limit_is_read() -> None:
    engine, _ = engine_with({"/boot/vmlinuz": (iter(archive("vmlinuz", b"kernel")), {"size": 6, "mode": 0o644})})
    assert engine.read_files("img", ["/boot/vmlinuz"], labels={}) == {"/boot/vmlinuz": b"kernel"}
