"""Bounded waits on an observable state, instead of fixed sleeps.

``wait_for(predicate, timeout, what)`` polls ``predicate`` until it is true and returns how long
that took; after ``timeout`` seconds it fails with "timed out after N s waiting for: <what>".
``what`` may be a callable, called only on failure, so that the message can carry the state
seen last (a log, a status).

A fixed sleep stays only where a test asserts that something does NOT happen during a window;
such a sleep says so in a comment.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Describe = Callable[[], str] | str


def wait_for(predicate: Callable[[], object], timeout: float, what: Describe, every: float = 0.1) -> float:
    """Poll ``predicate`` every ``every`` s until it is truthy; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what() if callable(what) else what}")
        time.sleep(every)
    return time.monotonic() - started
