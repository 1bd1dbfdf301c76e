"""Headless Chromium driven over the DevTools protocol on a pipe, with the standard library only.

Why a pipe: ``--remote-debugging-pipe`` makes Chromium read commands on its fd 3 and write
answers on its fd 4, each a JSON message ended by a NUL byte; no websocket client (which the
standard library lacks) and no port to find. One page stays open while the test changes etcd,
and ``evaluate`` reads its DOM: so a test sees the page change by itself, which proves that the
updates are pushed (a page loaded twice would not).

    with Chromium() as browser:                 # skips the test when there is no chromium
        page = browser.open("http://127.0.0.1:8080/")
        browser.evaluate(page, "document.title")
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio", "--no-proxy-server")


class Chromium:
    def __init__(self, binary: str = CHROMIUM, timeout: float = 30.0) -> None:
        if not os.access(binary, os.X_OK):
            pytest.skip(f"no Chromium at {binary} (Debian's chromium package; scripts/setup installs it)")
        self.binary, self.timeout = binary, timeout
        self._profile = tempfile.mkdtemp(prefix="osctl-chromium-")
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Chromium:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # Out of the way of 3 and 4, so that the dup2s in the child cannot clobber each other.
        moved_r, moved_w = _above(to_child_r, 10), _above(from_child_w, 10)

        def wire() -> None:  # in the child, before exec: its fd 3 reads commands, fd 4 writes answers
            os.dup2(moved_r, 3)
            os.dup2(moved_w, 4)

        self._log = open(Path(self._profile) / "chromium.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=wire,
            close_fds=False, start_new_session=True)
        os.close(moved_r)
        os.close(moved_w)
        self._write, self._read = to_child_w, from_child_r
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            try:
                self.send("Browser.close")
            except (AssertionError, OSError):
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for fd in (self._write, self._read):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol ----------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result (AssertionError on an error answer or a timeout)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer.get("result") or {}
            self._events.append(answer)

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"Chromium did not answer in time; its log: {self.log_tail()}"
            ready, _, _ = select.select([self._read], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self._read, 65536)
                assert chunk, f"Chromium closed the pipe; its log: {self.log_tail()}"
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)  # type: ignore[no-any-return]

    def log_tail(self, lines: int = 10) -> str:
        path = Path(self._profile) / "chromium.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- pages -------------------------------------------------------------------------------
    def open(self, url: str) -> str:
        """A new tab on ``url``; the session to ``evaluate`` in."""
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        return str(self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JS expression in the page (JSON-able values only)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")


def _above(fd: int, floor: int) -> int:
    """``fd`` duplicated to a number >= ``floor``, inheritable; the original closed."""
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, floor)
    os.close(fd)
    os.set_inheritable(moved, True)
    return moved
