"""The evidence pack beside `certification_record.json` and `junit.xml` (docs/certification.md, Evidence pack).

`write_pack(pack, record, outcome)` writes into `pack`:

- `certification_report.md`: the record, readable: verdict first, then the reasons, the per-seed
  gate table, floor attribution, structural checks, preconditions, cohorts, cross-seed CVs, world
  and roster card summaries, runtime, versions, and the plots embedded by relative links.
- `plots/*.png`: fixed names (`PLOTS` below), one line or box per seed.
- `flags.txt`: the S8 `_passed.flag` digest of every seed.
- `world_card_<seed>.json`, `roster_card_<seed>.json`: the cards as the record holds them.
- `runtime.csv`: seconds per state (rows) and seed (columns).

Every number of the Markdown report comes from `record`; the plots are the only thing drawn from
`outcome.scores[seed].plot_data`, which `certification/plot_series.py:plot_series(s1, s3, s4)`
fills with plain lists and dicts:

    {
      "s1_hhi":            [float]  per merchant, HHI = sum p_weight^2
      "s1_top1":           [float]  per merchant with >= 2 sites, largest p_weight
      "s1_top2":           [float]  same merchants and order, second largest p_weight
      "s3_merchant_std":   [float]  per merchant, std(gamma) with ddof = 1
      "s3_gamma_by_group": {tzid: [float]}  6 largest tz groups by S3 rows, <= 5,000 gammas each
                                            (every k-th row in key order)
      "s4_max_p":          [float]  per merchant-day, max p_group
      "s4_entropy":        [float]  per merchant-day, -sum p ln p (p > 0)
      "s4_groups_per_day": {"1": share, "2": share, "3+": share}  merchant-days by tz-group count
    }

A seed without `plot_data` (or a key missing from it) is simply left out of the plots concerned;
a plot no seed has data for is not written, and the report says so.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .formatting import (  # noqa: F401 (fmt is re-exported for callers of the report)
    BAND_MARKS,
    OK_MARKS,
    OPS,
    band_mark,
    cell,
    exact,
    flatten,
    fmt,
    near_threshold,
    short,
    table,
    union_keys,
)
from .plots import PLOTS, write_plots
from .record import write_json

VERDICT_MEANING = {
    "PASS_BPLUS": "every realism gate reached B+ on every seed, cross-seed stability and S3 drift hold, "
                  "and the roster covers the full day grid.",
    "PASS_B": "every hard gate holds at B on every seed; the gates below B+ are listed under Reasons.",
    "FAIL_REALISM": "a structural check, an anti-artifact veto gate, a realism gate at B or the cross-seed CV gate "
                    "failed (see Reasons).",
    "INVALID_FOR_GRADING": "a precondition failed, so the run cannot be graded; the scores are reported anyway.",
}
REASON_LABELS = {
    "preconditions_failed": "Preconditions failed",
    "structural_failed": "Structural checks failed",
    "veto_failed": "Anti-artifact veto gates failed",
    "realism_failed": "Realism gates failed at B",
    "below_bplus": "Gates at B (below B+)",
    "T-X-01": "Cross-seed CV gate T-X-01",
    "s3_drift_ok": "S3 controlled drift holds",
}


# --------------------------------------------------------------------------------------------
# entry point


def write_pack(pack: Path, record: dict, outcome) -> None:
    """Write the report, plots, flags, cards and runtime table into `pack` (which already exists)."""
    pack = Path(pack)
    seeds = [str(s) for s in record["seeds"]]
    per_seed = record["per_seed"]
    for s in seeds:
        write_json(pack / f"world_card_{s}.json", per_seed[s].get("world_card"))
        write_json(pack / f"roster_card_{s}.json", per_seed[s].get("roster_card"))
    (pack / "flags.txt").write_text(_flags_text(record), encoding="utf-8")
    _write_runtime_csv(pack / "runtime.csv", record)
    written = write_plots(pack / "plots", seeds, _plot_data(outcome, seeds), _veto_thresholds(record), record)
    (pack / "certification_report.md").write_text(render_markdown(record, written), encoding="utf-8")


def _veto_thresholds(record: dict) -> dict:
    """gate -> {"B": x, "B+": y} of the veto gates (their one condition each), from the record."""
    out = {}
    for d in record["per_seed"].values():
        for g, r in d["gates"].items():
            if r.get("family") == "veto" and r.get("thresholds"):
                out[g] = {"B": r["thresholds"][0].get("B"), "B+": r["thresholds"][0].get("B+")}
    return out


def _plot_data(outcome, seeds: list[str]) -> dict[str, dict]:
    """seed (as in the record, a string) -> plot_data; lanes key scores by int seed."""
    scores = getattr(outcome, "scores", None) or {}
    out = {}
    for s in seeds:
        score = scores.get(int(s), scores.get(s)) if s.lstrip("-").isdigit() else scores.get(s)
        out[s] = getattr(score, "plot_data", None) or {}
    return out


def _flags_text(record: dict) -> str:
    lines = []
    for s in record["seeds"]:
        flag = record["per_seed"][str(s)].get("s8_flag_sha256")
        lines.append(f"seed={s} s8_flag_sha256={flag or 'none'}")
    return "\n".join(lines) + "\n"


def _runtime_by_seed(record: dict) -> dict[str, dict]:
    by_seed = record.get("runtime", {}).get("per_seed_stage_seconds")
    if by_seed is None:
        by_seed = {s: d.get("runtime_seconds", {}) for s, d in record["per_seed"].items()}
    return {str(s): by_seed.get(str(s)) or {} for s in record["seeds"]}


def _write_runtime_csv(path: Path, record: dict) -> None:
    by_seed = _runtime_by_seed(record)
    states = union_keys(by_seed.values())
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["state", *by_seed])
        for state in states:
            # The raw value (no rounding), so the CSV is as exact as the record.
            w.writerow([state, *("" if by_seed[s].get(state) is None else by_seed[s][state] for s in by_seed)])


def _seed_header(seeds: list[str]) -> list[str]:
    return [f"seed {s}" for s in seeds]


# --------------------------------------------------------------------------------------------
# report sections (each returns Markdown lines)


def render_markdown(record: dict, plots: list[str] | None = None) -> str:
    """The readable report; `plots` are the file names under plots/ to embed."""
    seeds = [str(s) for s in record["seeds"]]
    sections = [
        _head(record, seeds),
        _reasons(record),
        _gate_table(record, seeds),
        _veto(record, seeds),
        _floor(record, seeds),
        _tradeoff(record, seeds),
        _what_if(record, seeds),
        _structural(record, seeds),
        _preconditions(record),
        _cohorts(record, seeds),
        _cross_seed(record),
        _comparisons(record),
        _cards(record, seeds),
        _runtime(record, seeds),
        _provenance(record),
        _plots_section(plots or []),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


def _head(record: dict, seeds: list[str]) -> list[str]:
    label = " (provisional: only the certify lane certifies)" if record.get("provisional") else ""
    verdict = record["verdict"]
    lines = [f"# Verdict: {verdict}{label}", "",
             f"Segment 2B certification report, `{record.get('lane')}` lane, seeds {', '.join(seeds)}.", ""]
    if verdict in VERDICT_MEANING:
        lines += [f"**{verdict}**: {VERDICT_MEANING[verdict]}", ""]
    facts = [("parameter_hash", record.get("parameter_hash")), ("manifest_fingerprint", record.get("manifest_fingerprint")),
             ("evidence pack", record.get("evidence_pack"))]
    lines += [f"- {k}: `{v}`" for k, v in facts if v]
    if "full_grid" in record:
        lines.append(f"- roster horizon covers the full S3 day grid ({fmt(record.get('grid_days'))} days): "
                     f"{fmt(record['full_grid'])}")
    return lines + [""]


def _reasons(record: dict) -> list[str]:
    lines = ["## Reasons", ""]
    for key, value in (record.get("reasons") or {}).items():
        label = REASON_LABELS.get(key, key)
        if key == "T-X-01":
            text = band_mark(value)
        elif isinstance(value, list):
            text = ", ".join(value) if value else "none"
        else:
            text = fmt(value)
        lines.append(f"- {label}: {text}")
    return lines + [""]


def _thresholds_text(conditions: list[dict]) -> str:
    parts = []
    for c in conditions:
        op = OPS.get(c["op"], c["op"])
        if c.get("B") == c.get("B+"):
            parts.append(f"`{c['metric']}` {op} {exact(c['B'])} (B and B+)")
        elif c.get("B") is None:  # a condition only the target band asks for
            parts.append(f"`{c['metric']}` {op} {exact(c.get('B+'))} (B+ only)")
        else:
            parts.append(f"`{c['metric']}` {op} {exact(c.get('B'))} (B), {exact(c.get('B+'))} (B+)")
    return "<br>".join(parts)


def _gate_cell(result: dict | None) -> str:
    if result is None:
        return "n/a"
    limits = {c["metric"]: [c.get("B"), c.get("B+")] for c in result.get("thresholds", [])}
    values = result.get("values", {})
    shown = [near_threshold(v, limits.get(m, [])) for m, v in values.items()]
    if len(values) == 1:
        text = f"{band_mark(result['band'])} {shown[0]}"
    else:
        text = band_mark(result["band"]) + "".join(f"<br>{m} = {v}" for m, v in zip(values, shown))
    if result.get("attribution"):
        text += f"<br>*{result['attribution']}*"
    return text


def _gate_table(record: dict, seeds: list[str]) -> list[str]:
    per_seed = record["per_seed"]
    gates = union_keys(per_seed[s]["gates"] for s in seeds)
    rows = []
    for g in gates:
        # Thresholds come from the policy, identical for every seed: take the first seed that has the gate.
        conditions = next(per_seed[s]["gates"][g]["thresholds"] for s in seeds if g in per_seed[s]["gates"])
        rows.append([g, _thresholds_text(conditions), *(_gate_cell(per_seed[s]["gates"].get(g)) for s in seeds)])
    return (["## Realism gates per seed", "",
             "Cells: band reached and value; below B+, the attribution in italics. "
             "✅ B+ target met, ☑️ B hard gate met, ❌ FAIL.", ""]
            + table(["gate", "thresholds", *_seed_header(seeds)], rows))


FIX_SENTENCE = {
    "structural: upstream topology": (
        "even the topology floor (every multi-group day uniform over its groups) reaches only {floor_band} "
        "({floor}), because {single} of merchant-days have a single tz group: the fix belongs upstream "
        "(1B site placement / 2A time zones, see the what-if), not to 2B."),
    "upstream of S4: S1/S3 shares": (
        "S4 publishes {band} ({value}) and its data reference, the mix S1 x S3 imply, reaches {data_band} "
        "({data}) while the floor would allow {floor_band} ({floor}): the fix belongs to S1 (how site weight "
        "concentrates in one tz group) or S3, not to S4 (S4 could only close it by bending the data)."),
    "S4": ("S4 publishes {band} ({value}) where its data reference reaches {data_band} ({data}){veto}: "
           "the fix belongs to S4."),
    "S1": "the fix belongs to S1 (site weights).",
    "S3": "the fix belongs to S3 (day effects).",
}


def _fix_sentence(gate: str, seed: str, r: dict, per_seed: dict) -> str:
    att = r.get("attribution") or ""
    metric = next(iter(r.get("values") or {}), None)
    shares = per_seed.get("group_shares") or {}
    veto_failed = [g for g, x in per_seed["gates"].items() if x.get("family") == "veto" and x["band"] == "FAIL"]
    text = FIX_SENTENCE.get(att, "the fix belongs to {att}.").format(
        att=att, band=r["band"], value=fmt((r.get("values") or {}).get(metric)),
        floor_band=r.get("floor_band") or "n/a", floor=fmt((r.get("floor_values") or {}).get(metric)),
        data_band=r.get("data_band") or "n/a", data=fmt((r.get("data_values") or {}).get(metric)),
        single=fmt(shares.get("1")), veto=(", and the veto gate(s) " + ", ".join(veto_failed) + " fail") if veto_failed else "")
    return f"- **{gate}, seed {seed}** ({r['band']}): {text}"


def _floor(record: dict, seeds: list[str]) -> list[str]:
    per_seed = record["per_seed"]
    lines = ["## Attribution: three references per S4 gate", "",
             "- *floor*: every merchant-day with two or more tz groups uniform over them (single-group days keep "
             "max p = 1): no S4 can beat it;",
             "- *data*: the raw mix S1 x S3 imply, recomputed by the harness (what an S4 that changes nothing "
             "publishes);",
             "- *published*: the S4 dataset.", "",
             "A shortfall is `structural: upstream topology` when the floor reaches no better band than the "
             "published value; `upstream of S4: S1/S3 shares` when the floor does better, the data reference does "
             "not, and S4 passes the veto gates; `S4` only where S4 publishes a worse band than its data reference "
             "or fails a veto gate.", ""]
    rows = []
    for g in union_keys(per_seed[s]["gates"] for s in seeds):
        for s in seeds:
            r = per_seed[s]["gates"].get(g)
            if not r or not r.get("floor_values"):
                continue
            for metric, floor in r["floor_values"].items():
                rows.append([g, s, metric, f"{band_mark(r.get('floor_band'))} {fmt(floor)}",
                             f"{band_mark(r.get('data_band'))} {fmt((r.get('data_values') or {}).get(metric))}",
                             f"{band_mark(r['band'])} {fmt(r['values'].get(metric))}", r.get("attribution") or "none (B+)"])
    if rows:
        lines += table(["gate", "seed", "metric", "floor", "data", "published", "attribution"], rows)
    else:
        lines += ["No gate of this record carries floor values.", ""]
    sentences = [_fix_sentence(g, s, r, per_seed[s]) for s in seeds for g, r in per_seed[s]["gates"].items()
                 if r["band"] != "B+" and r.get("attribution")]
    if sentences:
        lines += ["Where each fix belongs:", "", *sentences, ""]
    shares = {s: per_seed[s].get("group_shares") or {} for s in seeds}
    buckets = union_keys(shares.values())
    if buckets:
        lines += ["Shares of merchant-days by number of tz groups (a single-group day has max p_group = 1):", ""]
        lines += table(["seed", *(f"{b} group(s)" for b in buckets)],
                        [[s, *(fmt(shares[s].get(b)) for b in buckets)] for s in seeds])
    return lines


def _veto(record: dict, seeds: list[str]) -> list[str]:
    per_seed = record["per_seed"]
    gates = [g for g in union_keys(per_seed[s]["gates"] for s in seeds)
             if any((per_seed[s]["gates"].get(g) or {}).get("family") == "veto" for s in seeds)]
    if not gates:
        return []
    lines = ["## Anti-artifact veto gates (S4 against the data)", "",
             "Recomputed from the raw mix S1 x S3 imply, never from S4's own columns. A FAIL here fails the verdict "
             "like a structural check: a band reached by bending the data is not realism.", ""]
    rationale = (record.get("policy_documents") or {}).get("certification_gates_v1", {}).get("rationale", {})
    for g in gates:
        first = next(per_seed[s]["gates"][g] for s in seeds if g in per_seed[s]["gates"])
        lines.append(f"- **{g}** ({_thresholds_text(first['thresholds'])})" + (f": {rationale[g]}" if g in rationale else ""))
    lines.append("")
    lines += table(["gate", *_seed_header(seeds)], [[g, *(_gate_cell(per_seed[s]["gates"].get(g)) for s in seeds)]
                                                     for g in gates])
    bands = {s: per_seed[s].get("veto_slope_bands") or [] for s in seeds}
    labels = union_keys([{b["band"]: 1 for b in v} for v in bands.values()])
    if labels:
        lines += ["T-S4-V1 per band of dominance (median slope, merchants; a band with too few merchants is not graded):", ""]
        rows = []
        for lab in labels:
            row = [lab]
            for s in seeds:
                b = next((x for x in bands[s] if x["band"] == lab), None)
                row.append("n/a" if b is None or b["median_slope"] is None else
                           f"{fmt(b['median_slope'])} ({b['merchants']}{'' if b['graded'] else ', not graded'})")
            rows.append(row)
        lines += table(["dominance band", *_seed_header(seeds)], rows)
    return lines


def _worst(bands: list[str]) -> str:
    order = ("FAIL", "B", "B+")
    return min(bands, key=order.index) if bands else "n/a"


def _tradeoff(record: dict, seeds: list[str]) -> list[str]:
    per_seed = record["per_seed"]
    points = {s: per_seed[s].get("tradeoff") or [] for s in seeds}
    if not any(points.values()):
        return []
    labels = union_keys([{p["label"]: 1 for p in v} for v in points.values()])
    gates = union_keys([p["gates"] for v in points.values() for p in v])
    lines = ["## Trade-off: S4 settings against the gates, on the same draws", "",
             "Each row applies one regulariser setting (S4's own `regularise`) to the seed's raw mix S1 x S3 and grades "
             "the result with the same recipes as the published run: what `seg2b sweep` over the regulariser reports "
             "for these gates. Cells: the worst band over the seeds, then the value range.", ""]
    rows, honest = [], {}
    for lab in labels:
        entries = [next((p for p in points[s] if p["label"] == lab), None) for s in seeds]
        entries = [e for e in entries if e]
        veto_fail = any(x["band"] == "FAIL" for e in entries for g, x in e["gates"].items() if "-V" in g)
        row = [lab + (" (veto FAIL)" if veto_fail else ""), fmt(entries[0]["strength"]) if entries else "n/a"]
        for g in gates:
            xs = [e["gates"][g] for e in entries if g in e["gates"]]
            vals = [next(iter(x["values"].values())) for x in xs if x["values"]]  # the gate's first metric
            vals = [v for v in vals if isinstance(v, (int, float))]
            band = _worst([x["band"] for x in xs])
            rng = (fmt(min(vals)) if min(vals) == max(vals) else f"{fmt(min(vals))}..{fmt(max(vals))}") if vals else ""
            row.append(f"{band_mark(band)} {rng}")
            if not veto_fail and "-V" not in g:
                best = honest.get(g)
                if best is None or ("FAIL", "B", "B+").index(band) > ("FAIL", "B", "B+").index(best[0]):
                    honest[g] = (band, lab)
        rows.append(row)
    lines += table(["setting", "strength", *gates], rows)
    if honest:
        lines += ["Best band any setting without a veto failure reaches, per gate: "
                  + "; ".join(f"{g} {b} ({lab})" for g, (b, lab) in honest.items()) + ".", ""]
    return lines


def _what_if(record: dict, seeds: list[str]) -> list[str]:
    rows_in = record.get("what_if")
    if not rows_in:
        return []
    gates = union_keys([w["gates"] for r in rows_in for w in r["seeds"].values()])
    lines = ["## Upstream what-if: other world topologies (never the verdict of record)", "",
             "Each row rebuilds every seed's world with another share of merchants whose sites span two or more tz "
             "groups (the same draws: only the moved merchants differ), runs S1 and S3 over it and grades the S4 gates "
             "at the data reference (S4 changing nothing: reachable without distortion) and at the topology floor. "
             "Cells: data band / floor band (worst over seeds) and the data value range. Reopening 1B/2A is the "
             "user's decision; this is its evidence.", ""]
    rows = []
    for r in rows_in:
        ws = list(r["seeds"].values())
        mt = [w["multi_tz_share"] for w in ws if w.get("multi_tz_share") is not None]
        single = [w["group_shares"].get("1") for w in ws if w.get("group_shares")]
        cells = []
        for g in gates:
            xs = [w["gates"][g] for w in ws if g in w["gates"]]
            vals = [x["data"] for x in xs if isinstance(x.get("data"), (int, float))]
            rng = (fmt(min(vals)) if min(vals) == max(vals) else f"{fmt(min(vals))}..{fmt(max(vals))}") if vals else ""
            cells.append(f"{band_mark(_worst([x['data_band'] for x in xs]))} / {_worst([x['floor_band'] for x in xs])} {rng}")
        calib = [w.get("calibration_pass") for w in ws]
        rows.append([r["world"], fmt(sum(mt) / len(mt)) if mt else "n/a", fmt(sum(single) / len(single)) if single else "n/a",
                     *cells, "yes" if all(calib) else "no"])
    lines += table(["world", "multi-tz merchants", "1-group merchant-days", *gates, "world card calibrated"], rows)
    return lines


def _structural(record: dict, seeds: list[str]) -> list[str]:
    per_seed = record["per_seed"]
    checks = sorted(union_keys(per_seed[s].get("structural") for s in seeds))
    rows = []
    for c in checks:
        for s in seeds:
            res = (per_seed[s].get("structural") or {}).get(c)
            rows.append([c, s, OK_MARKS[None if res is None else bool(res.get("ok"))], (res or {}).get("detail", "")])
    body = table(["check", "seed", "result", "detail"], rows) if rows else ["No structural checks recorded.", ""]
    return ["## Structural checks (T-STR)", "", *body]


def _preconditions(record: dict) -> list[str]:
    pre = record.get("preconditions") or {}
    rows = [[k, OK_MARKS[bool(v.get("ok"))], v.get("detail", "")] for k, v in sorted(pre.items())]
    body = table(["precondition", "result", "detail"], rows) if rows else ["No preconditions recorded.", ""]
    return ["## Preconditions (PRE)", "", *body]


def _cohort_value(v) -> str:
    # Cohort tables may carry the band a cohort would reach; mark it like the gate table does.
    return BAND_MARKS[v] if isinstance(v, str) and v in BAND_MARKS else fmt(v)


def _cohorts(record: dict, seeds: list[str]) -> list[str]:
    lines = ["## Cohorts (diagnostic)", "",
             "The verdict of record is the population one; cohorts show where realism is and is not capped.", ""]
    any_table = False
    for s in seeds:
        for name, rows in (record["per_seed"][s].get("cohorts") or {}).items():
            any_table = True
            lines += [f"### Seed {s}: {name}", ""]
            if not rows:
                lines += ["(empty)", ""]
                continue
            columns = union_keys(rows)
            lines += table(columns, [[_cohort_value(r.get(c)) for c in columns] for r in rows])
    if not any_table:
        lines += ["No cohort tables recorded.", ""]
    return lines


def _cross_seed(record: dict) -> list[str]:
    x = record.get("cross_seed") or {}
    lines = ["## Cross-seed stability", ""]
    cvs = x.get("cv") or {}
    if cvs:
        lines += table(["gate", "CV across seeds (std ddof=1 / mean)"], [[g, fmt(v)] for g, v in cvs.items()])
    known = [("T-X-01", "T-X-01 (worst CV)", band_mark), ("worst_cv", "worst CV", fmt),
             ("T-X-02", "T-X-02 (no seed-specific collapse)", fmt), ("s3_drift_cv", "S3 drift CV of D", fmt),
             ("s3_drift_ok", "S3 drift ok", fmt)]
    for key, label, render in known:
        if key in x:
            lines.append(f"- {label}: {render(x[key])}")
    # Anything else the record adds (e.g. the CV limits) is shown as is rather than dropped.
    done = {"cv"} | {k for k, _, _ in known}
    lines += [f"- {k}: {fmt(v)}" for k, v in x.items() if k not in done]
    if not x:
        lines.append("No cross-seed table recorded.")
    return lines + [""]


def _comparisons(record: dict) -> list[str]:
    from .compare import render_markdown as render_comparison

    comps = record.get("comparisons")
    if not comps:
        return []
    lines = ["## Against the last good candidate and the baseline", "",
             "Same draws (common random numbers): a delta is the effect of the policy differences listed, "
             "not fresh noise. Only gates whose value or band moved are shown.", ""]
    for cmp in comps.values():
        if "missing" in cmp:
            lines += [f"- {cmp['missing']}", ""]
        else:
            lines += render_comparison(cmp, changed_only=True, heading="###")
    return lines


def _card_table(cards: dict[str, dict], seeds: list[str], skip: tuple = ()) -> list[str]:
    flat = {s: flatten(cards[s], skip=skip) for s in seeds}
    keys = union_keys(flat.values())
    return table(["fact", *_seed_header(seeds)], [[k, *(flat[s].get(k, "n/a") for s in seeds)] for k in keys])


def _calibration(cards: dict[str, dict], seeds: list[str]) -> list[str]:
    rows_by_seed = {s: {r["metric"]: r for r in (cards[s] or {}).get("calibration", [])} for s in seeds}
    metrics = union_keys(rows_by_seed.values())
    if not metrics:
        return []

    def target_cell(r):
        if r is None:
            return "n/a"
        mark = "n/a (reference scale only)" if not r.get("applies", True) else OK_MARKS[r.get("pass")]
        return f"{mark} {fmt(r.get('measured'))} in [{fmt(r.get('accept_lo'))}, {fmt(r.get('accept_hi'))}]"

    rows = [[m, *(target_cell(rows_by_seed[s].get(m)) for s in seeds)] for m in metrics]
    return ["World calibration targets (measured value and accepted interval):", "",
            *table(["target", *_seed_header(seeds)], rows)]


def _cards(record: dict, seeds: list[str]) -> list[str]:
    per_seed = record["per_seed"]
    world = {s: per_seed[s].get("world_card") or {} for s in seeds}
    roster = {s: per_seed[s].get("roster_card") or {} for s in seeds}
    links = ", ".join(f"[world_card_{s}.json](world_card_{s}.json), [roster_card_{s}.json](roster_card_{s}.json)"
                      for s in seeds)
    lines = ["## World and roster cards", "", f"Full cards: {links}.", "", "### World card", ""]
    lines += _calibration(world, seeds)
    lines += _card_table(world, seeds, skip=("calibration",))
    lines += ["### Roster card", ""]
    lines += _card_table(roster, seeds)
    return lines


def _runtime(record: dict, seeds: list[str]) -> list[str]:
    by_seed = _runtime_by_seed(record)
    states = union_keys(by_seed.values())
    lines = ["## Runtime (seconds)", ""]
    if states:
        lines += table(["state", *_seed_header(seeds)], [[st, *(fmt(by_seed[s].get(st)) for s in seeds)] for st in states])
    rt = record.get("runtime") or {}
    lines += [f"- {k}: {fmt(v)}" for k, v in rt.items() if k != "per_seed_stage_seconds"]
    return lines + ["", "Per state and seed also in [runtime.csv](runtime.csv); S8 flags in [flags.txt](flags.txt).", ""]


def _provenance(record: dict) -> list[str]:
    lines = ["## Versions and policy fingerprints", ""]
    versions = record.get("versions") or {}
    if versions:
        lines += table(["library", "version"], [[k, fmt(v)] for k, v in versions.items()])
    fps = record.get("policy_fingerprints") or {}
    if fps:
        lines += table(["policy", "sha256"], [[k, f"`{v}`"] for k, v in fps.items()])
    return lines


def _plots_section(plots: list[str]) -> list[str]:
    lines = ["## Plots", ""]
    for name in plots:
        lines += [f"### {PLOTS.get(name, name)}", "", f"![{PLOTS.get(name, name)}](plots/{name})", ""]
    missing = [PLOTS[n] for n in PLOTS if n not in plots]
    if missing:
        lines += [f"No plot data for: {'; '.join(missing)}.", ""]
    return lines
