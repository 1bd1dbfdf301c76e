"""One way to keep a state file: a pydantic model in a JSON file under the host root.

Every record osctl keeps (store records, boot pointer, journal, history, services state,
supervisor status, the agent's memory) is read, validated and written here, so that all of them
are written whole (``fsutil.atomic_write``) and all of them meet damage on disk the way their
owner chose, explicitly, instead of each file improvising:

- ``Damage.RAISE``: osctl cannot guess what the file said, and acting without it could do harm
  (a store record, the journal): a clear ``StateError`` naming the file and what to do.
- ``Damage.LAST_GOOD``: every write also keeps a copy (``NAME.bak``), written after the file;
  a damaged file is replaced by that copy of the same content, never by an older one, and
  repaired. With no usable copy it is a ``StateError``, as with ``RAISE``.
- ``Damage.SET_ASIDE``: the file only informs (the history, what the supervisor saw): the
  damaged file is renamed to ``NAME.damaged`` (kept for a person to look at, never overwritten
  silently) and reading starts from the empty model; a warning is logged.

A missing file is not damage: ``read`` returns None and ``load`` the model's defaults.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from osctl.adapters import fsutil
from osctl.errors import StateError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class Damage(enum.Enum):
    """What reading a damaged state file does (see the module docstring)."""

    RAISE = "raise"
    LAST_GOOD = "last-good"
    SET_ASIDE = "set-aside"


@dataclass(frozen=True)
class StateFile(Generic[M]):
    """One state file: where it is, what it holds, what damage means, and how to say it."""

    path: Path
    model: type[M]
    damage: Damage
    what: str  # "the journal": names the file in messages
    hint: str | None = None  # what to do about a damaged file that cannot be repaired

    @property
    def backup(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    def read(self) -> M | None:
        """The file's content, None when there is none; damage handled by the file's policy."""
        text = fsutil.read_text(self.path)
        if text is not None:
            value = self._parse(text)
            if value is not None:
                return value
        if self.damage is Damage.LAST_GOOD:
            saved = fsutil.read_text(self.backup)
            value = self._parse(saved) if saved is not None else None
            if value is not None:
                if text is not None:  # repair the damaged file from its copy
                    log.warning("%s was damaged; repaired from %s", self.path, self.backup)
                    fsutil.atomic_write(self.path, saved)  # type: ignore[arg-type]
                return value
        if text is None:
            return None
        if self.damage is Damage.SET_ASIDE:
            aside = self.path.with_name(self.path.name + ".damaged")
            try:
                os.replace(self.path, aside)
            except OSError as exc:
                raise StateError(f"{self.what} {self.path} is damaged and cannot be set aside: "
                                 f"{exc.strerror or exc}") from exc
            log.warning("%s was damaged; kept as %s, starting from an empty one", self.path, aside)
            return None
        raise StateError(f"{self.what} {self.path} is damaged", hint=self.hint)

    def load(self) -> M:
        """``read``, with the model's defaults when there is no file (a new host)."""
        value = self.read()
        return value if value is not None else self.model()

    def write(self, value: M) -> None:
        """Replace the file whole (and then its copy, for ``LAST_GOOD``)."""
        data = json.dumps(value.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        fsutil.atomic_write(self.path, data)
        if self.damage is Damage.LAST_GOOD:
            fsutil.atomic_write(self.backup, data)

    def _parse(self, text: str) -> M | None:
        try:
            return self.model.model_validate_json(text)
        except ValidationError:
            return None
