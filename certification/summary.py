"""`summary.md`: the pack in at most `MAX_LINES` lines of Markdown, for a CI job-summary panel.

`render_summary(record)` returns the text, built from the record alone: the verdict and why, the
gates below B+ with the attribution of each (where its fix belongs), what moved against the last
good candidate (from `record["comparisons"]`), one line against the baseline, and the pack's path.
Tables are capped so the whole stays within `MAX_LINES`; what is cut is counted and points to the
pack's `report.html`. `seg2b certify --summary-to FILE` appends the text to FILE (what
`$GITHUB_STEP_SUMMARY` names), so several lanes in one job add up.
"""

from __future__ import annotations

from pathlib import Path

from .formatting import fmt, short
from .report import REASON_LABELS, VERDICT_MEANING

SUMMARY = "summary.md"
MAX_LINES = 60
MAX_GATE_ROWS = 16
MAX_MOVED_ROWS = 12
MAX_POLICY_ROWS = 4

VERDICT_MARK = {"PASS_BPLUS": "✅", "PASS_B": "☑️", "FAIL_REALISM": "❌", "INVALID_FOR_GRADING": "⛔"}
ORDER = ("FAIL", "B", "B+")


def _cell(text) -> str:
    # A pipe would split a table cell, a newline end the row, and '<' open raw HTML in the panel.
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace("\r", " ").replace("\n", " ")


def _signed(v) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:+.4g}"
    return "n/a"


def _shortfall_rows(record: dict) -> list[tuple[str, str, str, str]]:
    """(worst band, gate, seeds with bands, attributions) per gate below B+ on some seed, FAIL first."""
    seeds = [str(s) for s in record["seeds"]]
    per_seed = record["per_seed"]
    gates = []
    for s in seeds:
        gates += [g for g in per_seed[s]["gates"] if g not in gates]
    rows = []
    for g in gates:
        hits = [(s, per_seed[s]["gates"][g]) for s in seeds if g in per_seed[s]["gates"]
                and per_seed[s]["gates"][g].get("band") != "B+"]
        if not hits:
            continue
        worst = min((r.get("band") for _, r in hits), key=lambda b: ORDER.index(b) if b in ORDER else -1)
        where = ", ".join(f"{s} {r.get('band')} {fmt(next(iter((r.get('values') or {}).values()), None))}" for s, r in hits)
        atts = []
        for _, r in hits:
            a = r.get("attribution") or "n/a"
            if a not in atts:
                atts.append(a)
        family = " (veto)" if hits[0][1].get("family") == "veto" else ""
        rows.append((worst, g + family, where, "; ".join(atts)))
    rows.sort(key=lambda r: ORDER.index(r[0]) if r[0] in ORDER else -1)
    return rows


def _reasons_line(record: dict) -> str:
    r = record.get("reasons") or {}
    parts = []
    for key in ("preconditions_failed", "structural_failed", "veto_failed", "realism_failed"):
        if r.get(key):
            shown = r[key][:6]
            more = f" (+{len(r[key]) - len(shown)} more)" if len(r[key]) > len(shown) else ""
            parts.append(f"{REASON_LABELS[key]}: {', '.join(shown)}{more}")
    x01 = r.get("T-X-01")
    if x01 not in (None, "N/A"):
        parts.append(f"cross-seed T-X-01 {x01}")
    if r.get("s3_drift_ok") is False:
        parts.append("S3 drift out of bounds")
    if r.get("below_bplus"):
        parts.append(f"{len(r['below_bplus'])} gate result(s) at B")
    return "; ".join(parts) if parts else "every gate at B+ on every seed, cross-seed and drift within bounds"


def _comparison_lines(record: dict) -> list[str]:
    comps = record.get("comparisons") or {}
    lines = []
    last = comps.get("last_good")
    if last is None:
        lines.append("**Against last good**: not compared (no comparison in the record).")
    elif "missing" in last:
        lines.append(f"**Against last good**: {_cell(last['missing'])}.")
    else:
        a = last.get("a") or {}
        gates = last.get("gates") or []
        moved = [g for g in gates if g.get("band_change") or g.get("delta") not in (None, 0, 0.0)]
        diffs = last.get("policy_differences") or []
        lines.append(f"**Against last good** (`{a.get('evidence_pack')}`): verdict {a.get('verdict')} → {record.get('verdict')}; "
                     f"{len(diffs)} policy difference(s); {len(moved)} of {len(gates)} gate metrics moved, "
                     f"{sum(1 for g in moved if g.get('band_change'))} band change(s).")
        for note in last.get("notes") or []:
            lines.append(f"- note: {_cell(note)}")
        for d in diffs[:MAX_POLICY_ROWS]:
            old, new = _cell(short(d.get("old"), 60)), _cell(short(d.get("new"), 60))
            lines.append(f"- `{d.get('policy')}{d.get('pointer')}`: `{old}` → `{new}`")
        if len(diffs) > MAX_POLICY_ROWS:
            lines.append(f"- … {len(diffs) - MAX_POLICY_ROWS} more policy difference(s) in report.html")
        if moved:
            # Band changes first, then the largest moves: what a reviewer needs before the noise.
            moved.sort(key=lambda g: (-abs(g.get("band_change") or 0),
                                      -abs(g["delta"]) if isinstance(g.get("delta"), (int, float)) else 0))
            lines += ["", "| seed | gate | metric | last good | this run | delta | band |", "|---|---|---|---:|---:|---:|---|"]
            for g in moved[:MAX_MOVED_ROWS]:
                band = (f"{g.get('band_a')} → {g.get('band_b')}" if g.get("band_change") else g.get("band_b"))
                lines.append(f"| {g.get('seed')} | {g.get('gate')} | `{g.get('metric')}` | {fmt(g.get('value_a'))} | "
                             f"{fmt(g.get('value_b'))} | {_signed(g.get('delta'))} | {band} |")
            if len(moved) > MAX_MOVED_ROWS:
                lines.append(f"\n… {len(moved) - MAX_MOVED_ROWS} more moved gate metric(s) in report.html.")
    base = comps.get("baseline")
    if base is not None:
        lines.append("")
        if "missing" in base:
            lines.append(f"**Against baseline**: {_cell(base['missing'])}.")
        else:
            gates = base.get("gates") or []
            moved = [g for g in gates if g.get("band_change") or g.get("delta") not in (None, 0, 0.0)]
            lines.append(f"**Against baseline** (`{(base.get('a') or {}).get('evidence_pack')}`): verdict "
                         f"{(base.get('a') or {}).get('verdict')} → {record.get('verdict')}; {len(moved)} gate metrics moved, "
                         f"{sum(1 for g in moved if g.get('band_change'))} band change(s).")
    return lines


def render_summary(record: dict) -> str:
    verdict = record.get("verdict")
    seeds = [str(s) for s in record["seeds"]]
    prov = " (provisional: only the certify lane certifies)" if record.get("provisional") else ""
    mark = VERDICT_MARK.get(verdict, "")
    lines = [f"### {mark + ' ' if mark else ''}Segment 2B `{record.get('lane')}` lane: {verdict}{prov}", ""]
    counts = []
    for s in seeds:
        gates = record["per_seed"][s]["gates"].values()
        counts.append(f"seed {s}: {sum(1 for g in gates if g.get('band') == 'B+')}/{len(gates)} at B+")
    runtime = record.get("runtime") or {}
    wall = runtime.get("lane_wall_seconds_with_evidence") or runtime.get("lane_wall_seconds")
    lines.append(f"{'; '.join(counts)}; wall {fmt(wall)} s.")
    if verdict in VERDICT_MEANING:
        lines.append(f"{verdict}: {VERDICT_MEANING[verdict]}")
    lines += ["", f"**Why**: {_cell(_reasons_line(record))}.", ""]
    rows = _shortfall_rows(record)
    if rows:
        lines += ["| gate | seeds: band value | attribution (where the fix belongs) |", "|---|---|---|"]
        lines += [f"| {_cell(g)} | {_cell(where)} | {_cell(att)} |" for _, g, where, att in rows[:MAX_GATE_ROWS]]
        if len(rows) > MAX_GATE_ROWS:
            lines.append(f"\n… {len(rows) - MAX_GATE_ROWS} more gate(s) below B+ in report.html.")
        lines.append("")
    lines += _comparison_lines(record)
    pack = record.get("evidence_pack")
    lines += ["", f"**Evidence pack**: `{pack}`: open `report.html` there in a browser (self-contained); "
                  "`certification_report.md`, `certification_record.json` and `junit.xml` beside it."]
    lines = [line.rstrip() for line in "\n".join(lines).split("\n")]
    if len(lines) > MAX_LINES:  # the caps above keep well inside; this only guards future growth
        lines = lines[:MAX_LINES - 1] + ["… (cut to the panel's length: see report.html)"]
    return "\n".join(lines) + "\n"


def write_summary(pack: Path, record: dict) -> Path:
    path = Path(pack) / SUMMARY
    path.write_text(render_summary(record), encoding="utf-8")
    return path


def append_summary(target: Path, text: str) -> None:
    """Append to `target` (created if missing), a blank line before when it already has text."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lead = "\n" if target.exists() and target.stat().st_size else ""
    with target.open("a", encoding="utf-8") as fh:
        fh.write(lead + text)
