"""The transaction journal: where a version change stands, durably, so a crash can be undone.

Every step is written (and fsynced) before it starts. After a crash the journal says which
transaction was cut short and at what step; together with the boot pointer (written at
commit, the one source of truth for what boots) that decides between rolling back and
rolling forward.

Crash points: setting ``OSCTL_CRASH_AT=<point>`` makes osctl kill itself with SIGKILL at that
point, exactly as a power cut or ``kill -9`` would. Points are the step names (the moment the
step is journaled, before its work) and a few marks inside steps (``swap:old-stopped``,
``commit:pointer-written``, ``boot:trial-started``). Only this module reads the variable.
"""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

from osctl.adapters.statefile import Damage, StateFile
from osctl.constants import STATE_DIR
from osctl.models.journal import History, HistoryEntry, Kind, Stop, Transaction

STEPS = ("resolve", "pull", "verify", "stage", "prepare", "swap", "health", "commit", "cleanup")
MARKS = ("swap:old-stopped", "commit:pointer-written", "boot:trial-started")
CRASH_POINTS = STEPS + MARKS
CRASH_ENV = "OSCTL_CRASH_AT"
HISTORY_KEEP = 100


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def crash_point(name: str) -> None:
    """Die here, like a power cut, when the environment asks for it (tests only)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class Journal:
    """The journal raises on damage (what was interrupted cannot be guessed); the history, which
    only informs, is set aside and started again."""

    def __init__(self, root: Path) -> None:
        self.file = StateFile(root / STATE_DIR / "journal.json", Transaction, Damage.RAISE, "the journal",
                              hint="osctl cannot tell what was interrupted; check `osctl status`, then remove it")
        self.history_file = StateFile(root / STATE_DIR / "history.json", History, Damage.SET_ASIDE, "the history")

    def current(self) -> Transaction | None:
        """The transaction in progress (or cut short), if any."""
        txn = self.file.read()
        return txn if txn is not None and txn.result == "in-progress" else None

    def begin(self, kind: Kind, from_version: str | None, to_version: str) -> Transaction:
        txn = Transaction(id=uuid.uuid4().hex[:12], kind=kind, from_version=from_version, to_version=to_version,
                          started_at=now(), pid=os.getpid())
        self._write(txn)
        return txn

    def step(self, txn: Transaction, name: str) -> Transaction:
        """Record that ``name`` starts now; a crash point sits right after the record."""
        if txn.step not in ("begin", name):
            txn = txn.model_copy(update={"steps_done": [*txn.steps_done, txn.step]})
        txn = txn.model_copy(update={"step": name})
        self._write(txn)
        crash_point(name)
        return txn

    def stopping(self, txn: Transaction, stops: list[Stop]) -> Transaction:
        """Record the batch of stops about to be issued (all of it, before the first), or, with an
        empty list, that every stop recorded is done.

        One write per batch: a swap stops a level's services together, so this costs one write
        per level however many services it has.
        """
        txn = txn.model_copy(update={"stopping": list(stops)})
        self._write(txn)
        return txn

    def finish(self, txn: Transaction, result: str, reason: str | None = None, *, recovered: bool = False) -> None:
        """Close the transaction: history first, then the journal says it is over."""
        done = txn.model_copy(update={"result": result, "reason": reason, "finished_at": now()})
        history = self.history()
        history.entries.append(HistoryEntry(id=done.id, kind=done.kind, from_version=done.from_version,
                                            to_version=done.to_version, result=done.result, reason=reason,
                                            started_at=done.started_at, finished_at=done.finished_at,
                                            recovered=recovered))
        history.entries = history.entries[-HISTORY_KEEP:]
        self.history_file.write(history)
        self._write(done)

    def history(self) -> History:
        return self.history_file.load()  # history informs; damage never blocks a host

    def _write(self, txn: Transaction) -> None:
        self.file.write(txn)
