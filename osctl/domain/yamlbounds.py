"""Loading YAML text with its cost and its types bounded before anything is built.

Why check the composed node graph rather than the built data: an alias shares a node, so a
document of a few hundred kilobytes (one anchored 1 MB string, six levels of ten aliases) names
a terabyte once copied out, and everything downstream (plain copies, pydantic) copies. The
graph is small; its expanded size is summed once per node (aliases reuse the sum), so this
check costs what the text costs, and a refused document never reaches the constructor.

Tags are checked on the same walk: only what plain YAML 1.2 gives (strings, numbers, booleans,
null, timestamps, lists, mappings, merge keys) is built. ``!!set``, ``!!omap``, ``!!binary``
and local tags (``!thing``) would otherwise reach the models as sets, pairs, bytes or tagged
objects that lax conversions turn into strings or lists. User data may ask for ``!!binary``
(the gzip content of ``write_files``); nothing else can.

Imported only when there is text to parse: ruamel's parser is the bulk of the import time.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from osctl.errors import Issue

MAX_VALUES = 1_000_000  # values a document may have once its YAML aliases are expanded
MAX_EXPANDED_BYTES = 8 << 20  # UTF-8 bytes of all scalars (keys too) once aliases are expanded

_CORE = "tag:yaml.org,2002:"
PLAIN_TAGS = frozenset(_CORE + name for name in ("str", "int", "float", "bool", "null", "timestamp",
                                                  "seq", "map", "merge"))
BINARY_TAG = _CORE + "binary"


class Refused(Exception):
    """The document is well-formed YAML that osctl will not build; ``issue`` says why."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def load(text: str, *, binary: bool = False) -> Any:
    """The round-trip tree of ``text``, after its node graph passed ``check``.

    ``binary``: ``!!binary`` values are allowed (user data). Raises ``Refused``, or ruamel's
    own errors for text that is not YAML.
    """
    yaml = YAML(typ="rt")
    yaml.Constructor = _CheckedConstructor
    constructor = yaml.constructor
    assert isinstance(constructor, _CheckedConstructor)
    constructor.allowed_tags = PLAIN_TAGS | {BINARY_TAG} if binary else PLAIN_TAGS
    return yaml.load(io.StringIO(text))


class _CheckedConstructor(RoundTripConstructor):  # type: ignore[misc]
    """ruamel's round-trip constructor, refusing a document before it builds anything from it."""

    allowed_tags: frozenset[str] = PLAIN_TAGS

    def construct_document(self, node: Any) -> Any:
        check(node, self.allowed_tags)
        return super().construct_document(node)


def check(root: Node, allowed_tags: frozenset[str]) -> None:
    """Refuse tags outside ``allowed_tags``, alias cycles, and expansions over the limits."""
    _Walk(allowed_tags).size(root, "")


class _Walk:
    def __init__(self, allowed_tags: frozenset[str]) -> None:
        self.allowed_tags = allowed_tags
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, bytes) once expanded
        self.open: set[int] = set()  # nodes being summed: meeting one again is a cycle

    def size(self, node: Node, path: str) -> tuple[int, int]:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise Refused(_at(node, path, "a YAML alias refers to a node that contains it"))
        if node.tag not in self.allowed_tags:
            raise Refused(_at(node, path, f"the YAML tag {_shown(node.tag)} is not allowed "
                                          "(use plain strings, numbers, booleans, lists and mappings)"))
        self.open.add(key)
        values, nbytes = 1, 0
        for child, child_path in _children(node, path):
            child_values, child_bytes = self.size(child, child_path)
            values, nbytes = values + child_values, nbytes + child_bytes
            _bound(values, nbytes)
        if isinstance(node, ScalarNode):
            nbytes = len(str(node.value).encode("utf-8", "surrogatepass"))
            _bound(values, nbytes)
        self.open.discard(key)
        self.sizes[key] = (values, nbytes)
        return values, nbytes


def _children(node: Node, path: str) -> list[tuple[Node, str]]:
    if isinstance(node, MappingNode):
        out: list[tuple[Node, str]] = []
        for key, value in node.value:
            name = f"{path}.{key.value}" if path else str(key.value)
            out += [(key, name), (value, name)] if isinstance(key, ScalarNode) else [(key, path), (value, path)]
        return out
    if isinstance(node, SequenceNode):
        return [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]
    return []


def _bound(values: int, nbytes: int) -> None:
    if values > MAX_VALUES:
        raise Refused(Issue("", f"YAML aliases expand to more than {MAX_VALUES} values"))
    if nbytes > MAX_EXPANDED_BYTES:
        raise Refused(Issue("", f"YAML aliases expand to more than {MAX_EXPANDED_BYTES >> 20} MiB of text"))


def _at(node: Node, path: str, message: str) -> Issue:
    mark = node.start_mark
    return Issue(path, message, mark.line + 1, mark.column + 1)


def _shown(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
