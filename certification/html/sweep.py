"""The sweep page's view: one row per point in ranked order and one table per gate."""

from __future__ import annotations

from pathlib import Path

from ..formatting import fmt, short
from .lane import _condition_text
from .page import VERDICT_CLASS, Plot, _write_page, environment, normalise

SWEEP_RECORD = "sweep_record.json"


def sweep_view(record: dict, plots: dict[str, Plot]) -> dict:
    knobs = [k.get("label") for k in record.get("knobs") or []]
    points = record.get("points") or []
    by_name = {p.get("name"): p for p in points}
    ranked = [by_name[n] for n in record.get("ranking") or [] if n in by_name]
    ranked += [p for p in points if p not in ranked]
    seeds = sorted({s for p in points for s in p.get("per_seed") or {}}, key=lambda s: (len(s), s))

    def settings(p):
        return [short(p["settings"][k]) if k in (p.get("settings") or {}) else "today" for k in knobs]

    rows = []
    for i, p in enumerate(ranked, 1):
        bands = [g.get("band") for s in (p.get("per_seed") or {}).values() for g in s.values()]
        rerun = sorted({n for s in (p.get("stages") or {}).values() for n, st in s.items() if st == "ran"})
        rows.append({"rank": "-" if "error" in p else str(i), "name": p.get("name"), "settings": settings(p),
                     "verdict": p.get("verdict"), "verdict_class": VERDICT_CLASS.get(p.get("verdict"), "invalid"),
                     "error": p.get("error"), "fails": bands.count("FAIL"), "bs": bands.count("B"),
                     "honest": p.get("structural_failures") == 0, "rerun": ", ".join(rerun) or "none",
                     "seconds": fmt(p.get("seconds")), "best": p.get("name") == record.get("best_honest")})
    gates = []
    for gate, conditions in (record.get("thresholds") or {}).items():
        table = []
        for p in points:
            cells = []
            for s in seeds:
                g = (p.get("per_seed") or {}).get(s, {}).get(gate)
                cells.append(None if g is None else {"band": g.get("band"),
                                                     "values": ", ".join(fmt(v) for v in (g.get("values") or {}).values()),
                                                     "attribution": g.get("attribution")})
            table.append({"name": p.get("name"), "settings": settings(p), "cells": cells})
        gate_plots = [plots[f"{gate}_{c['metric']}.png"] for c in conditions if f"{gate}_{c['metric']}.png" in plots]
        gates.append({"gate": gate, "conditions": [_condition_text(c) for c in conditions], "rows": table, "plots": gate_plots})
    best = by_name.get(record.get("best_honest"))
    return {"title": f"Sweep · {record.get('lane')} lane · {len(points)} points", "lane": record.get("lane"),
            "knobs": [{"label": k.get("label"), "values": ", ".join(short(v) for v in k.get("values") or [])}
                      for k in record.get("knobs") or []],
            "knob_labels": knobs, "seeds": seeds, "replay": record.get("replay"), "wall": fmt(record.get("wall_seconds")),
            "best": None if best is None else {"name": best.get("name"), "verdict": best.get("verdict"),
                                               "where": list(zip(knobs, settings(best)))},
            "rows": rows, "gates": gates, "plots": list(plots.values())}


def render_sweep_html(record: dict, plots: dict[str, Plot] | None = None) -> str:
    return environment().get_template("sweep.html.j2").render(page=sweep_view(normalise(record), plots or {}))


def write_sweep_html(pack: Path) -> Path:
    return _write_page(pack, SWEEP_RECORD, render_sweep_html, captions={})
