"""The layers of DESIGN.md, enforced: dependencies point down, docker/etcd3gw/requests/click/rich stay in place.

Lazy imports inside functions count too: a layer violation is a violation wherever it hides.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "osctl"

# Rank of each part of the package; a module may import only parts of equal or lower rank.
RANKS = {"errors": 0, "constants": 0, "models": 0, "adapters": 1, "domain": 2, "operations": 3, "cli": 4,
         "__init__": 0, "__main__": 5}
# Third-party packages that only some modules may import.
CONFINED = {
    "docker": ("adapters/engine.py",),
    "etcd3gw": ("adapters/etcd.py",),
    "requests": ("adapters/",),  # HTTP is an adapter's business (registry, etcd)
    "tuf": ("adapters/",),  # metadata and its verification: the TUF adapters (tufrepo, tufclient)
    "securesystemslib": ("adapters/",),
    "click": ("cli/",),
    "rich": ("cli/",),
}


def _part(relative: str) -> str:
    return relative.split("/")[0].removesuffix(".py")


def violations(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        rank = RANKS[_part(relative)]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                head, _, rest = name.partition(".")
                if head == package.name and rest:
                    target = rest.split(".")[0]
                    if target in RANKS and RANKS[target] > rank:
                        found.append(f"{relative}:{node.lineno} imports {name} (layer {target} is above {_part(relative)})")
                elif head in CONFINED and not relative.startswith(CONFINED[head]):
                    found.append(f"{relative}:{node.lineno} imports {head}, allowed only in {', '.join(CONFINED[head])}")
    return sorted(set(found))


def test_package_respects_the_layers() -> None:
    assert violations(PACKAGE) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("domain/bad.py", "from osctl.cli import render\n", "imports osctl.cli"),
        ("models/bad.py", "def f():\n    import osctl.adapters.engine\n", "imports osctl.adapters"),
        ("operations/bad.py", "import docker\n", "imports docker"),
        ("domain/bad.py", "from etcd3gw.client import Etcd3Client\n", "imports etcd3gw"),
        ("adapters/registry.py", "import etcd3gw\n", "imports etcd3gw"),
        ("operations/bad.py", "from requests.adapters import HTTPAdapter\n", "imports requests"),
        ("domain/bad.py", "from rich.console import Console\n", "imports rich"),
    ],
)
def test_checker_catches_a_violation(tmp_path: Path, module: str, source: str, expected: str) -> None:
    package = tmp_path / "osctl"
    (package / module).parent.mkdir(parents=True)
    (package / module).write_text(source)
    assert any(expected in line for line in violations(package))
