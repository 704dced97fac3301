"""What a config schema says about each of its keys: the dotted key, its type, its default and
the comment written beside the field. `--help` of every command and the configuration page of the
docs are both made from this, so neither can drift from the dataclasses."""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["KeyDoc", "describe", "help_text"]


@dataclass(frozen=True)
class KeyDoc:
    """One key of a schema."""

    key: str  # dotted, e.g. "proxy.epochs"
    type: str  # as annotated, e.g. "int", "list[float] | None"
    default: Any  # the value a run gets when the key is not given
    comment: str  # the comment beside the field (or on the lines just above it); "" if none


@cache
def _comments(cls: type) -> dict[str, str]:
    """Field name -> its comment, from the source of `cls` (not of its bases)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []  # comment lines waiting for the field below them
    line_field: dict[int, str] = {}  # source line -> the field defined on it
    depth = 0  # the class body is depth 0 inside; methods are skipped by their indentation
    body_indent = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.INDENT:
            depth += 1
            body_indent = body_indent or tok.end[1]
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            row = tok.start[0]
            if row in line_field:
                out[line_field[row]] = text
            elif depth == 1 and tok.start[1] == body_indent:
                above.append(text)
        elif tok.type == tokenize.NAME and depth == 1 and tok.start[1] == body_indent:
            if tok.string in ("def", "class", "return") or tok.string.startswith("@"):
                above = []
                continue
            line_field[tok.start[0]] = tok.string
            if above:
                out[tok.string] = " ".join(above)
            above = []
        elif tok.type == tokenize.NL and not above:
            continue
    return out


def _comment(cls: type, name: str) -> str:
    for klass in cls.__mro__:  # a field inherited from a base schema has its comment there
        if name in getattr(klass, "__annotations__", {}):
            found = _comments(klass).get(name)
            if found is not None:
                return found
    return ""


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def describe(schema: type, prefix: str = "") -> list[KeyDoc]:
    """Every key of the dataclass `schema`, nested schemas flattened into dotted keys, in the
    order of the fields."""
    out = []
    for f in dataclasses.fields(schema):
        value = _default(f)
        if dataclasses.is_dataclass(value):
            out += describe(type(value), f"{prefix}{f.name}.")
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(KeyDoc(f"{prefix}{f.name}", kind, value, _comment(schema, f.name)))
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return str(value)


def help_text(schema: type, usage: str) -> str:
    """`usage`, then every key of `schema` with its default and comment, one per line."""
    keys = describe(schema)
    width = max(len(f"{k.key}={_shown(k.default)}") for k in keys)
    lines = [usage, "", "keys (key=default  comment):"]
    for k in keys:
        lines.append(f"  {f'{k.key}={_shown(k.default)}':<{width}}  {k.comment}".rstrip())
    return "\n".join(lines)
