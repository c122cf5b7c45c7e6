"""How record values read in the report, the page and the summary: one formatting for all."""

from __future__ import annotations

import json
import math

BAND_MARKS = {"B+": "✅ B+", "B": "☑️ B", "FAIL": "❌ FAIL"}
OK_MARKS = {True: "✅ pass", False: "❌ fail", None: "n/a"}
OPS = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}
SIG = 4  # significant digits of every value shown in the report


def fmt(value, sig: int = SIG) -> str:
    """A record value as report text: floats to `sig` significant digits, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{sig}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, sig) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v, sig)}" for k, v in value.items()) or "none"
    return str(value)


def exact(threshold) -> str:
    """A threshold in its shortest exact form (thresholds are never rounded)."""
    if threshold is None:
        return "none"
    text = f"{threshold:g}"
    return text if float(text) == threshold else repr(threshold)


def near_threshold(value, thresholds: list) -> str:
    """`fmt(value)`, with more digits when rounding would print exactly a threshold the value is not:
    a FAIL shown as "0.006" next to ">= 0.006" would read as a contradiction."""
    text = fmt(value)
    if not isinstance(value, float) or not math.isfinite(value):
        return text
    for digits in range(SIG + 1, 18):
        if not any(t is not None and float(text) == t and value != t for t in thresholds):
            break
        text = fmt(value, digits)
    return text


def band_mark(b) -> str:
    return BAND_MARKS.get(b, "n/a" if b is None else str(b))


def cell(text) -> str:
    """Table-cell safe: a literal pipe would split the cell, a newline would end the row."""
    return str(text).replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>")


def table(header: list, rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def short(v, width: int = 80) -> str:
    """A value for a table cell: numbers as `fmt`, structures as compact JSON cut to `width`."""
    if isinstance(v, (dict, list)):
        text = json.dumps(v, separators=(",", ":"), sort_keys=True)
        return text if len(text) <= width else text[: width - 3] + "..."
    return fmt(v)


def union_keys(dicts) -> list:
    """Keys of several dicts in first-seen order (seeds may differ in what they report)."""
    seen = {}
    for d in dicts:
        for k in d or {}:
            seen.setdefault(k, None)
    return list(seen)


def flatten(card, prefix: str = "", skip: tuple = ()) -> dict:
    """Scalar facts of a card as dotted keys; long lists and lists of rows point to the JSON file."""
    out = {}
    for k, v in (card or {}).items():
        if k in skip:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            scalar = all(not isinstance(e, (dict, list)) for e in v)
            out[key] = fmt(v) if scalar and len(v) <= 12 else f"list of {len(v)} (see JSON)"
        else:
            out[key] = fmt(v)
    return out
