"""Strict JSON reading: one value per text, or an EngineError naming the file and the rule.

Python's json module is lenient where an input law must not be: it takes the last of duplicate
keys, reads `NaN`/`Infinity` and `1e400` (as infinity), integers of any size, lone surrogates
that cannot be written back as UTF-8, and recurses until the interpreter's stack gives out. Every
JSON input of the engine (policies, the upstream manifest, bundle indexes) is read here instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NoReturn

from .errors import EngineError

MAX_DEPTH = 64  # policies nest a handful of levels; anything deeper is not a policy
MAX_INT = (1 << 64) - 1  # merchant ids are the largest integers any input holds


class _Reject(ValueError):
    def __init__(self, field: str, rule: str) -> None:
        super().__init__(rule)
        self.field = field


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Reject(f"key {key!r}", "duplicate key: a JSON object must not repeat a key (the last would silently win)")
        obj[key] = value
    return obj


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject("(number)", f"number {text} is not finite as a 64-bit float")
    return value


def _int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_INT:
        raise _Reject("(number)", f"integer {text[:24]}{'...' if len(text) > 24 else ''} is out of range (|n| < 2^64)")
    return value


def _constant(token: str) -> NoReturn:
    raise _Reject("(number)", f"non-finite number {token} is not allowed")


def _depth(raw: str) -> int:
    """Nesting depth of a JSON text, counted outside strings, without recursion."""
    depth = top = 0
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > top:
                top = depth
                if top > MAX_DEPTH:
                    return top
        elif ch in "]}":
            depth -= 1
    return top


def loads(raw: bytes, where: str | Path) -> object:
    """The value of a UTF-8 JSON document, under the strict rules above."""
    where = str(where)  # the place an EngineError names (it prints a path as this text anyway)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngineError(where, "(document)", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    # Counting first keeps the parser away from deep recursion (a RecursionError is no input error).
    if _depth(text) > MAX_DEPTH:
        raise EngineError(where, "(document)", f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_float=_float, parse_int=_int,
                           parse_constant=_constant)
    except _Reject as exc:
        raise EngineError(where, exc.field, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise EngineError(where, "(document)", f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise EngineError(where, "(document)", f"malformed JSON: {exc}") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EngineError(where, "(document)", f"string holds a lone surrogate ({exc.reason}); not valid Unicode") from None
    return value
