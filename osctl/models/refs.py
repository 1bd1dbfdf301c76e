"""Image reference syntax, shared by the manifest and the settings models (no pydantic here:
settings are read on every command, and must not pay for building the manifest models)."""

from __future__ import annotations

import re

# A permissive image reference check: [registry[:port]/]path[:tag][@digest].
IMAGE_REF = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
