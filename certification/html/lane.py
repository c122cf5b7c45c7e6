"""The lane page's view: the record turned into the sections `templates/lane.html.j2` lays out
(verdict, gate matrix, attribution, veto, cross-seed, cohorts, comparisons, trade-off, what-if,
cards, runtime)."""

from __future__ import annotations

import math
from pathlib import Path

from ..compare import REFERENCES
from ..formatting import OPS, exact, flatten, fmt, near_threshold, short, union_keys
from ..gates import holds
from ..plots import PLOTS
from ..report import FIX_SENTENCE, REASON_LABELS, VERDICT_MEANING
from .page import BAND_CLASS, RECORD, VERDICT_CLASS, Plot, _write_page, environment, normalise

# Which drawn plot shows the distribution a gate summarises. Gates without an entry have no plot
# (their metric is a single number with no per-merchant series behind it in plot_data).
GATE_PLOTS = {
    "T-S1-02": ("s1_top1_vs_top2.png",),
    "T-S1-03": ("s1_hhi_hist.png",),
    "T-S1-04": ("s1_hhi_hist.png",),
    "T-S3-01": ("s3_merchant_std_hist.png",),
    "T-S3-02": ("s3_gamma_by_tz_group.png",),
    "T-S4-01": ("s4_max_p_group_hist.png",),
    "T-S4-02": ("s4_max_p_group_hist.png",),
    "T-S4-03": ("s4_max_p_group_hist.png", "s4_groups_per_merchant_day.png"),
    "T-S4-04": ("s4_groups_per_merchant_day.png",),
    "T-S4-05": ("s4_entropy_hist.png",),
    "T-S4-V1": ("veto_slope_vs_dominance.png",),
    "T-S4-V2": ("veto_share_ratio_hist.png",),
    "T-S3-04": ("s3_acf1_hist.png",),
    "T-S3-05": ("holiday_effects.png",),
    "T-S5-01": ("s5_local_hour.png",),
    "T-R-01": ("r_lorenz.png",),
    "T-R-02": ("holiday_effects.png",),
}
# Cohort columns that name the cohort rather than measure it: shown first, in this order.
COHORT_KEYS = ("cohort_kind", "cohort", "merchants", "sites", "merchant_days")


def _worst(bands) -> str:
    bands = [b for b in bands if b in BAND_CLASS]
    return min(bands, key=("FAIL", "B", "B+").index) if bands else "n/a"


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _range(values) -> str:
    vals = [v for v in values if _num(v) and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    return fmt(lo) if lo == hi else f"{fmt(lo)} .. {fmt(hi)}"


def _signed(v) -> str:
    if not _num(v):
        return "n/a"
    if isinstance(v, float) and not math.isfinite(v):
        return fmt(v)
    return f"{v:+.4g}"


def _condition_text(c: dict) -> str:
    op = OPS.get(c.get("op"), c.get("op"))
    if c.get("B") == c.get("B+"):
        return f"{c['metric']} {op} {exact(c.get('B'))} (B and B+)"
    if c.get("B") is None:
        return f"{c['metric']} {op} {exact(c.get('B+'))} (B+ only)"
    return f"{c['metric']} {op} {exact(c.get('B'))} (B), {exact(c.get('B+'))} (B+)"


def fix_sentence(r: dict, seed_block: dict) -> str:
    """Where the fix of a gate below B+ belongs: the Markdown report's sentence, as plain text."""
    att = r.get("attribution") or ""
    metric = next(iter(r.get("values") or {}), None)
    shares = seed_block.get("group_shares") or {}
    veto_failed = [g for g, x in (seed_block.get("gates") or {}).items() if x.get("family") == "veto" and x.get("band") == "FAIL"]
    return FIX_SENTENCE.get(att, "the fix belongs to {att}.").format(
        att=att, band=r.get("band"), value=fmt((r.get("values") or {}).get(metric)),
        floor_band=r.get("floor_band") or "n/a", floor=fmt((r.get("floor_values") or {}).get(metric)),
        data_band=r.get("data_band") or "n/a", data=fmt((r.get("data_values") or {}).get(metric)),
        single=fmt(shares.get("1")), veto=(", and the veto gate(s) " + ", ".join(veto_failed) + " fail") if veto_failed else "")


def _cell(gate: str, seed: str, r: dict | None, seed_block: dict, plots: dict[str, Plot]) -> dict:
    if r is None:
        return {"present": False, "id": f"g-{gate}-{seed}"}
    conditions = r.get("thresholds") or []
    values = r.get("values") or {}
    limits = {c["metric"]: [c.get("B"), c.get("B+")] for c in conditions}
    shown = {m: near_threshold(v, limits.get(m, [])) for m, v in values.items()}
    rows = []
    for c in conditions:
        v = values.get(c["metric"])
        rows.append({"metric": c["metric"], "value": shown.get(c["metric"], fmt(v)), "op": OPS.get(c["op"], c["op"]),
                     "B": exact(c.get("B")) if c.get("B") is not None else "none",
                     "Bplus": exact(c.get("B+")) if c.get("B+") is not None else "none",
                     "at_b": holds(v, c["op"], c.get("B")), "at_bplus": holds(v, c["op"], c.get("B+"))})
    refs = []
    for metric, floor in (r.get("floor_values") or {}).items():
        refs.append({"metric": metric,
                     "floor_band": r.get("floor_band"), "floor": fmt(floor),
                     "data_band": r.get("data_band"), "data": fmt((r.get("data_values") or {}).get(metric)),
                     "band": r.get("band"), "published": shown.get(metric, fmt(values.get(metric)))})
    below = r.get("band") != "B+"
    return {
        "present": True, "id": f"g-{gate}-{seed}", "gate": gate, "seed": seed, "band": r.get("band"),
        "family": r.get("family") or "realism",
        "headline": [(m, shown[m]) for m in values], "rows": rows, "refs": refs,
        "attribution": r.get("attribution"),
        "fix": fix_sentence(r, seed_block) if below and r.get("attribution") else None,
        "plots": [plots[n] for n in GATE_PLOTS.get(gate, ()) if n in plots],
    }


def _matrix(record: dict, seeds: list[str], plots: dict[str, Plot]) -> dict:
    per_seed = record["per_seed"]
    gates = union_keys(per_seed[s].get("gates") for s in seeds)

    def family(g):
        return next((per_seed[s]["gates"][g].get("family") or "realism" for s in seeds if g in per_seed[s]["gates"]), "realism")

    groups = []
    for fam, title in (("realism", "Realism gates"), ("veto", "Anti-artifact veto gates")):
        rows = []
        for g in (g for g in gates if family(g) == fam):
            first = next(per_seed[s]["gates"][g] for s in seeds if g in per_seed[s]["gates"])
            rows.append({"gate": g, "conditions": [_condition_text(c) for c in first.get("thresholds") or []],
                         "cells": [_cell(g, s, per_seed[s]["gates"].get(g), per_seed[s], plots) for s in seeds]})
        if rows:
            groups.append({"family": fam, "title": title, "rows": rows})
    counts = {s: {b: sum(1 for x in per_seed[s]["gates"].values() if x.get("band") == b) for b in BAND_CLASS} for s in seeds}
    return {"groups": groups, "counts": counts}


def _reasons(record: dict) -> list[dict]:
    reasons = record.get("reasons") or {}
    out = []
    for key in [k for k in REASON_LABELS if k in reasons] + [k for k in reasons if k not in REASON_LABELS]:
        value = reasons[key]
        item = {"key": key, "label": REASON_LABELS.get(key, key)}
        if isinstance(value, list):
            item.update(kind="list", items=value, bad=key != "below_bplus" and bool(value))
        elif key == "T-X-01":
            item.update(kind="band", band=value)
        elif isinstance(value, bool) or value is None:
            item.update(kind="ok", ok=value)
        else:
            item.update(kind="text", text=fmt(value))
        out.append(item)
    return out


def _shortfalls(record: dict, seeds: list[str]) -> list[dict]:
    """One row per gate below B+ on some seed: its bands per seed and where the fix belongs."""
    per_seed = record["per_seed"]
    rows = []
    for g in union_keys(per_seed[s].get("gates") for s in seeds):
        hits = [(s, per_seed[s]["gates"][g]) for s in seeds if g in per_seed[s]["gates"]
                and per_seed[s]["gates"][g].get("band") != "B+"]
        if not hits:
            continue
        rows.append({"gate": g, "band": _worst(r.get("band") for _, r in hits),
                     "family": hits[0][1].get("family") or "realism",
                     "seeds": [{"seed": s, "band": r.get("band"), "id": f"g-{g}-{s}"} for s, r in hits],
                     "attributions": union_keys([{r.get("attribution") or "n/a": 1} for _, r in hits])})
    rows.sort(key=lambda r: ("FAIL", "B", "B+").index(r["band"]) if r["band"] in BAND_CLASS else 3)
    return rows


def _attribution(record: dict, seeds: list[str]) -> dict:
    per_seed = record["per_seed"]
    rows = []
    for g in union_keys(per_seed[s].get("gates") for s in seeds):
        for s in seeds:
            r = per_seed[s]["gates"].get(g)
            if not r or not r.get("floor_values"):
                continue
            for metric, floor in r["floor_values"].items():
                rows.append({"gate": g, "seed": s, "metric": metric, "floor_band": r.get("floor_band"), "floor": fmt(floor),
                             "data_band": r.get("data_band"), "data": fmt((r.get("data_values") or {}).get(metric)),
                             "band": r.get("band"), "published": fmt((r.get("values") or {}).get(metric)),
                             "attribution": r.get("attribution") or "none (B+)", "id": f"g-{g}-{s}"})
    sentences = [{"gate": g, "seed": s, "band": r.get("band"), "text": fix_sentence(r, per_seed[s])}
                 for s in seeds for g, r in per_seed[s]["gates"].items() if r.get("band") != "B+" and r.get("attribution")]
    shares = {s: per_seed[s].get("group_shares") or {} for s in seeds}
    buckets = union_keys(shares.values())
    return {"rows": rows, "sentences": sentences, "buckets": buckets,
            "shares": [{"seed": s, "values": [fmt(shares[s].get(b)) for b in buckets]} for s in seeds]}


def _veto(record: dict, seeds: list[str]) -> dict | None:
    per_seed = record["per_seed"]
    gates = [g for g in union_keys(per_seed[s].get("gates") for s in seeds)
             if any((per_seed[s]["gates"].get(g) or {}).get("family") == "veto" for s in seeds)]
    if not gates:
        return None
    rationale = ((record.get("policy_documents") or {}).get("certification_gates_v1") or {}).get("rationale") or {}
    items = []
    for g in gates:
        first = next(per_seed[s]["gates"][g] for s in seeds if g in per_seed[s]["gates"])
        items.append({"gate": g, "conditions": [_condition_text(c) for c in first.get("thresholds") or []],
                      "rationale": rationale.get(g),
                      "seeds": [{"seed": s, "band": (per_seed[s]["gates"].get(g) or {}).get("band"),
                                 "values": [(m, fmt(v))
                                            for m, v in ((per_seed[s]["gates"].get(g) or {}).get("values") or {}).items()],
                                 "id": f"g-{g}-{s}"} for s in seeds]})
    bands = {s: per_seed[s].get("veto_slope_bands") or [] for s in seeds}
    labels = union_keys([{b.get("band"): 1 for b in v} for v in bands.values()])
    slope_rows = []
    for lab in labels:
        cells = []
        for s in seeds:
            b = next((x for x in bands[s] if x.get("band") == lab), None)
            cells.append(None if b is None else {"median": fmt(b.get("median_slope")), "merchants": fmt(b.get("merchants")),
                                                 "graded": b.get("graded")})
        slope_rows.append({"band": lab, "cells": cells})
    return {"gates": items, "slope_rows": slope_rows}


def _cross_seed(record: dict) -> dict:
    x = record.get("cross_seed") or {}
    cv_max = x.get("cv_max") or {}

    def band_of(v):
        if not _num(v):
            return "n/a"
        if cv_max.get("B+") is not None and v <= cv_max["B+"]:
            return "B+"
        if cv_max.get("B") is not None and v <= cv_max["B"]:
            return "B"
        return "FAIL"

    cvs = [{"gate": g, "cv": fmt(v), "band": band_of(v)} for g, v in (x.get("cv") or {}).items()]
    known = {"cv", "cv_max", "T-X-01", "worst_cv", "T-X-02", "s3_drift_cv", "s3_drift_cv_max", "s3_drift_ok"}
    return {"present": bool(x), "cvs": cvs, "cv_max_b": fmt(cv_max.get("B")), "cv_max_bplus": fmt(cv_max.get("B+")),
            "x01": x.get("T-X-01"), "worst": fmt(x.get("worst_cv")), "x02": x.get("T-X-02"),
            "drift": fmt(x.get("s3_drift_cv")), "drift_max": fmt(x.get("s3_drift_cv_max")), "drift_ok": x.get("s3_drift_ok"),
            "extra": [(k, fmt(v)) for k, v in x.items() if k not in known]}


def _structural(record: dict, seeds: list[str]) -> list[dict]:
    per_seed = record["per_seed"]
    rows = []
    for c in sorted(union_keys(per_seed[s].get("structural") for s in seeds)):
        for s in seeds:
            res = (per_seed[s].get("structural") or {}).get(c)
            rows.append({"check": c, "seed": s, "ok": None if res is None else res.get("ok"),
                         "detail": (res or {}).get("detail", "")})
    return rows


def _preconditions(record: dict) -> list[dict]:
    return [{"id": k, "ok": bool(v.get("ok")), "detail": v.get("detail", "")}
            for k, v in sorted((record.get("preconditions") or {}).items())]


def _cohort_cell(v) -> dict:
    if isinstance(v, str) and v in BAND_CLASS:
        return {"band": v, "text": v}
    return {"band": None, "text": fmt(v)}


def _cohorts(record: dict, seeds: list[str]) -> list[dict]:
    out = []
    for s in seeds:
        for name, rows in (record["per_seed"][s].get("cohorts") or {}).items():
            cols = union_keys(rows or [])
            cols = [c for c in COHORT_KEYS if c in cols] + [c for c in cols if c not in COHORT_KEYS]
            out.append({"seed": s, "name": name, "columns": cols,
                        "rows": [[_cohort_cell(r.get(c)) for c in cols] for r in rows or []]})
    return out


def _comparisons(record: dict) -> list[dict]:
    out = []
    comps = record.get("comparisons") or {}
    # last good first: the record's JSON sorts keys, the reader wants the reference that matters most on top
    order = [k for k, _ in REFERENCES if k in comps] + [k for k in comps if k not in dict(REFERENCES)]
    for key, cmp in ((k, comps[k]) for k in order):
        if "missing" in cmp:
            out.append({"key": key, "label": cmp.get("label", key), "missing": cmp["missing"]})
            continue
        a, b = cmp.get("a") or {}, cmp.get("b") or {}
        gates = cmp.get("gates") or []
        moved = [g for g in gates if g.get("band_change") or g.get("delta") not in (None, 0, 0.0)]
        out.append({
            "key": key, "label": cmp.get("label", key), "missing": None,
            "a": {"label": a.get("label"), "verdict": a.get("verdict"), "pack": a.get("evidence_pack"),
                  "seeds": ", ".join(str(s) for s in a.get("seeds") or []), "lane": a.get("lane")},
            "b": {"label": b.get("label"), "verdict": b.get("verdict"),
                  "seeds": ", ".join(str(s) for s in b.get("seeds") or []), "lane": b.get("lane")},
            "notes": cmp.get("notes") or [],
            "policy": [{"policy": d.get("policy"), "pointer": d.get("pointer"),
                        "old": short(d.get("old")), "new": short(d.get("new"))} for d in cmp.get("policy_differences") or []],
            "compared": len(gates),
            "moved": [{"seed": g.get("seed"), "gate": g.get("gate"), "metric": g.get("metric"),
                       "a": fmt(g.get("value_a")), "b": fmt(g.get("value_b")), "delta": _signed(g.get("delta")),
                       "band_a": g.get("band_a"), "band_b": g.get("band_b"), "change": g.get("band_change") or 0}
                      for g in moved],
            "stages": [{"seed": s, "changed": ", ".join(st.get("changed") or []) or "none",
                        "reused": ", ".join(st.get("reused") or []) or "none",
                        "ran": ", ".join(st.get("ran") or []) or "none"} for s, st in (cmp.get("stages") or {}).items()],
        })
    return out


def _tradeoff(record: dict, seeds: list[str], plots: dict[str, Plot]) -> dict | None:
    per_seed = record["per_seed"]
    points = {s: per_seed[s].get("tradeoff") or [] for s in seeds}
    if not any(points.values()):
        return None
    labels = union_keys([{p.get("label"): 1 for p in v} for v in points.values()])
    gates = union_keys([p.get("gates") for v in points.values() for p in v])
    rows, honest = [], {}
    for lab in labels:
        entries = [e for e in (next((p for p in points[s] if p.get("label") == lab), None) for s in seeds) if e]
        veto_fail = any(x.get("band") == "FAIL" for e in entries for g, x in (e.get("gates") or {}).items() if "-V" in g)
        cells = []
        for g in gates:
            xs = [e["gates"][g] for e in entries if g in (e.get("gates") or {})]
            band = _worst(x.get("band") for x in xs)
            cells.append({"band": band, "range": _range(next(iter((x.get("values") or {}).values()), None) for x in xs)})
            if not veto_fail and "-V" not in g and band in BAND_CLASS:
                best = honest.get(g)
                if best is None or ("FAIL", "B", "B+").index(band) > ("FAIL", "B", "B+").index(best[0]):
                    honest[g] = (band, lab)
        rows.append({"label": lab, "strength": fmt(entries[0].get("strength")) if entries else "n/a",
                     "mode": entries[0].get("mode") if entries else "", "veto_fail": veto_fail, "cells": cells})
    return {"gates": gates, "rows": rows, "honest": [{"gate": g, "band": b, "label": lab} for g, (b, lab) in honest.items()],
            "plot": plots.get("s4_tradeoff.png")}


def _what_if(record: dict) -> dict | None:
    rows_in = record.get("what_if")
    if not rows_in:
        return None
    gates = union_keys([w.get("gates") for r in rows_in for w in (r.get("seeds") or {}).values()])
    rows = []
    for r in rows_in:
        ws = list((r.get("seeds") or {}).values())
        mt = [w["multi_tz_share"] for w in ws if _num(w.get("multi_tz_share"))]
        single = [w["group_shares"].get("1") for w in ws if w.get("group_shares") and _num(w["group_shares"].get("1"))]
        cells = []
        for g in gates:
            xs = [w["gates"][g] for w in ws if g in (w.get("gates") or {})]
            cells.append({"data_band": _worst(x.get("data_band") for x in xs),
                          "floor_band": _worst(x.get("floor_band") for x in xs),
                          "range": _range(x.get("data") for x in xs)})
        calib = [w.get("calibration_pass") for w in ws]
        rows.append({"world": r.get("world"), "multi": fmt(sum(mt) / len(mt)) if mt else "n/a",
                     "single": fmt(sum(single) / len(single)) if single else "n/a", "cells": cells,
                     "calibrated": all(calib) if calib else None})
    return {"gates": gates, "rows": rows}


def _cards(record: dict, seeds: list[str]) -> dict:
    per_seed = record["per_seed"]
    world = {s: per_seed[s].get("world_card") or {} for s in seeds}
    roster = {s: per_seed[s].get("roster_card") or {} for s in seeds}
    calib_by_seed = {s: {r.get("metric"): r for r in (world[s].get("calibration") or [])} for s in seeds}
    calibration = []
    for m in union_keys(calib_by_seed.values()):
        cells = []
        for s in seeds:
            r = calib_by_seed[s].get(m)
            if r is None:
                cells.append(None)
                continue
            applies = r.get("applies", True)
            cells.append({"ok": r.get("pass") if applies else None, "applies": applies, "measured": fmt(r.get("measured")),
                          "lo": fmt(r.get("accept_lo")), "hi": fmt(r.get("accept_hi"))})
        calibration.append({"metric": m, "cells": cells})

    def facts(cards, skip=()):
        flat = {s: flatten(cards[s], skip=skip) for s in seeds}
        return [{"fact": k, "values": [flat[s].get(k, "n/a") for s in seeds]} for k in union_keys(flat.values())]

    return {"calibration": calibration, "world": facts(world, ("calibration",)), "roster": facts(roster)}


def _runtime(record: dict, seeds: list[str]) -> dict:
    rt = record.get("runtime") or {}
    by_seed = rt.get("per_seed_stage_seconds")
    if by_seed is None:
        by_seed = {s: d.get("runtime_seconds") or {} for s, d in record["per_seed"].items()}
    by_seed = {s: by_seed.get(s) or {} for s in seeds}
    states = union_keys(by_seed.values())
    totals = {s: sum(v for v in by_seed[s].values() if _num(v)) for s in seeds}
    rows = []
    for st in states:
        cells = []
        for s in seeds:
            v = by_seed[s].get(st)
            share = (v / totals[s]) if _num(v) and totals[s] > 0 else 0.0
            cells.append({"text": fmt(v), "pct": f"{100 * share:.1f}"})
        rows.append({"state": st, "cells": cells})
    facts = [(k, fmt(v)) for k, v in rt.items() if k != "per_seed_stage_seconds"]
    return {"rows": rows, "totals": [fmt(round(totals[s], 4)) for s in seeds], "facts": facts}


def lane_view(record: dict, plots: dict[str, Plot]) -> dict:
    seeds = [str(s) for s in record["seeds"]]
    verdict = record.get("verdict")
    sections = {
        "veto": _veto(record, seeds),
        "tradeoff": _tradeoff(record, seeds, plots),
        "what_if": _what_if(record),
        "comparisons": _comparisons(record),
        "cohorts": _cohorts(record, seeds),
    }
    toc = [("matrix", "Gates"), ("veto", "Veto gates") if sections["veto"] else None, ("attribution", "Attribution"),
           ("cross-seed", "Cross-seed"), ("cohorts", "Cohorts"), ("structural", "Structural"),
           ("comparisons", "Against last good") if sections["comparisons"] else None,
           ("tradeoff", "Trade-off") if sections["tradeoff"] else None,
           ("what-if", "What-if") if sections["what_if"] else None,
           ("cards", "Cards"), ("runtime", "Runtime"), ("plots", "Plots"), ("provenance", "Versions")]
    return {
        "title": f"{verdict} · Segment 2B {record.get('lane')} lane",
        "lane": record.get("lane"), "seeds": seeds, "verdict": verdict, "verdict_class": VERDICT_CLASS.get(verdict, "invalid"),
        "provisional": bool(record.get("provisional")), "meaning": VERDICT_MEANING.get(verdict),
        "facts": [(k, record.get(k)) for k in ("parameter_hash", "manifest_fingerprint", "evidence_pack") if record.get(k)],
        "full_grid": record.get("full_grid"), "grid_days": fmt(record.get("grid_days")),
        "reasons": _reasons(record), "shortfalls": _shortfalls(record, seeds),
        "matrix": _matrix(record, seeds, plots), "attribution": _attribution(record, seeds),
        "cross_seed": _cross_seed(record), "structural": _structural(record, seeds),
        "preconditions": _preconditions(record), "cards": _cards(record, seeds), "runtime": _runtime(record, seeds),
        "versions": [(k, fmt(v)) for k, v in (record.get("versions") or {}).items()],
        "fingerprints": list((record.get("policy_fingerprints") or {}).items()),
        "plots": list(plots.values()), "missing_plots": [c for n, c in PLOTS.items() if n not in plots],
        "toc": [t for t in toc if t],
        **sections,
    }


def render_lane_html(record: dict, plots: dict[str, Plot] | None = None) -> str:
    """The lane page for `record` (a record dict as built or as read from its JSON file)."""
    return environment().get_template("lane.html.j2").render(page=lane_view(normalise(record), plots or {}))


def write_lane_html(pack: Path) -> Path:
    return _write_page(pack, RECORD, render_lane_html)
