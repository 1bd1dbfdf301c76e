"""YAML documents validated against pydantic models, with every problem located.

Why not ``yaml.safe_load`` + ``model_validate``: users need the line, the column and the dotted
key path of each problem, all at once, and pydantic's messages name Python types. Here YAML
syntax errors, schema errors and (through ``extra_issues``) semantic errors all come out as one
list of ``Issue`` objects, raised as one ``DocumentError`` subclass.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from osctl.errors import DocumentError, Issue

M = TypeVar("M", bound=BaseModel)

MAX_DOCUMENT_BYTES = 1 << 20  # a manifest or settings file is small; refuse absurd input early


class ParsedYaml:
    """A parsed document: plain Python data for validation, the ruamel tree for positions."""

    def __init__(self, tree: Any) -> None:
        self.tree = tree
        self.data = _plain(tree)

    def locate(self, loc: Iterable[object]) -> tuple[str, int | None, int | None]:
        """Dotted path, line and column (1-based) of the deepest part of ``loc`` in the text."""
        node, parts, line, column = self.tree, [], None, None
        for seg in loc:
            if isinstance(node, CommentedMap) and isinstance(seg, str | int) and seg in node:
                line, column = node.lc.key(seg)
                parts.append(str(seg))
                node = node[seg]
            elif isinstance(node, CommentedSeq) and isinstance(seg, int) and 0 <= seg < len(node):
                line, column = node.lc.item(seg)
                parts[-1:] = [f"{parts[-1]}[{seg}]"] if parts else [f"[{seg}]"]
                node = node[seg]
            else:
                break
        if line is None:
            return ".".join(parts), None, None
        return ".".join(parts), line + 1, column + 1


def _plain(node: Any) -> Any:
    """ruamel's comment-keeping containers and scalar subclasses, as plain Python values.

    An alias shares a node, and copying it out expands it: ``yamlbounds`` has bounded that
    expansion before the tree was built.
    """
    if isinstance(node, dict):
        return {_plain(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for kind in (str, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


_DUPLICATE = re.compile(r'(found duplicate key "[^"]*") with value .*')


def parse_yaml(text: str | bytes, source: str, error: type[DocumentError], *, binary: bool = False) -> ParsedYaml:
    """Parse YAML 1.2 text; syntax errors become an ``error`` with the position of the problem.

    The text's size, its size once YAML aliases are expanded, and its tags are bounded before
    anything is built (``yamlbounds``); ``binary`` allows ``!!binary`` values (user data).
    """
    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            raise error(source, [Issue("", f"larger than {MAX_DOCUMENT_BYTES} bytes")])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(source, [Issue("", f"not UTF-8 text (byte {exc.start})")]) from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise error(source, [Issue("", f"larger than {MAX_DOCUMENT_BYTES} bytes")])
    from osctl.domain import yamlbounds  # the parser proper is only needed when there is text to parse

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = yamlbounds.load(text, binary=binary)
    except yamlbounds.Refused as exc:
        raise error(source, [exc.issue]) from None
    except RecursionError:
        raise error(source, [Issue("", "nested too deeply")]) from None
    except Exception as exc:  # ruamel raises many types; all mean "this is not valid YAML"
        # (the message never quotes values: a duplicate key's values may be secrets)
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = _DUPLICATE.sub(r"\1", str(problem))
        raise error(source, [Issue("", f"not valid YAML: {problem}", line, column)]) from None
    try:
        return ParsedYaml(tree)
    except RecursionError:
        raise error(source, [Issue("", "nested too deeply")]) from None


def validate(
    parsed: ParsedYaml,
    model: type[M],
    source: str,
    error: type[DocumentError],
    *,
    extra_issues: Callable[[M, ParsedYaml], list[Issue]] | None = None,
    context: dict[str, Any] | None = None,
) -> M:
    """Validate parsed data against ``model``; raise ``error`` listing every issue found."""
    if not isinstance(parsed.data, dict):
        what = "empty" if parsed.data is None else f"a {type(parsed.data).__name__}"
        raise error(source, [Issue("", f"must be a mapping of keys, but it is {what}", 1, 1)])
    try:
        result = model.model_validate(parsed.data, context=context)
    except ValidationError as exc:
        known = _field_names(model)
        issues = _dedupe(_issue(e, parsed, known) for e in exc.errors(include_url=False))
        raise error(source, issues) from None
    except RecursionError:
        raise error(source, [Issue("", "nested too deeply")]) from None
    issues = extra_issues(result, parsed) if extra_issues else []
    if issues:
        raise error(source, issues)
    return result


def _issue(err: Any, parsed: ParsedYaml, known: set[str]) -> Issue:
    loc = tuple(err["loc"])
    path, line, column = parsed.locate(loc)
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(key, known, n=1)
        msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif kind == "missing":
        missing = str(loc[-1]) if loc else "?"
        path = f"{path}.{missing}" if path else missing
        msg = "required key is missing"
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        msg = f"{err['input']!r} is not one of {expected.replace(' or ', ', ')}"
    elif kind in ("value_error", "assertion_error"):
        msg = msg.split(", ", 1)[1] if ", " in msg else msg
    else:
        msg = msg[:1].lower() + msg[1:]
    return Issue(path, msg, line, column)


def _dedupe(issues: Iterable[Issue]) -> list[Issue]:
    seen: dict[tuple[str, str], Issue] = {}
    for issue in issues:
        seen.setdefault((issue.path, issue.message), issue)
    return sorted(seen.values(), key=lambda i: (i.line or 0, i.column or 0, i.path))


def _field_names(model: type[BaseModel], _seen: set[type] | None = None) -> set[str]:
    """Every key name the model family accepts, for "did you mean" hints."""
    seen = _seen if _seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for sub in _models_in(field.annotation):
            names |= _field_names(sub, seen)
    return names


def _models_in(annotation: Any) -> Iterable[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and hasattr(annotation, "__metadata__"):
        yield from _models_in(origin)
