"""What the last ``osctl cloud-init apply`` recorded: ``<root>/var/lib/osctl/cloud-init/status.json``.

Apart from ``operations.cloudinit`` so that ``osctl status`` reads it without loading the
user-data machinery (its models, YAML, MIME parsing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from osctl.adapters import fsutil
from osctl.constants import STATE_DIR

CI_DIR = f"{STATE_DIR}/cloud-init"


def status_path(root: Path) -> Path:
    return root / CI_DIR / "status.json"


def read_status(root: Path) -> dict[str, Any] | None:
    """The recorded status, or None when there is none or it is not JSON."""
    text = fsutil.read_text(status_path(root))
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
