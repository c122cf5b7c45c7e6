"""The CI runtime gate: compare a pytest-benchmark JSON with benchmarks/budgets.json.

    python -m benchmarks.check_budgets evidence/benchmarks.json            # gate (exit 1 on a breach)
    python -m benchmarks.check_budgets evidence/benchmarks.json --calibrate  # (re)write the budgets

Three kinds of limits live in budgets.json:

* Per-benchmark budgets, machine independent. Every benchmark's time (statistic `min` over its
  rounds) is divided by a calibration time measured in the same session:
    - kernels (single-threaded numpy) by `test_calibration_numpy_sort` (np.sort of 2M float64);
    - everything else (stages, reruns, lanes: numpy + polars) by the sum of that sort and
      `test_calibration_polars_groupby` (group-by of 1M rows).
  The budget ratio is the ratio measured on the reference machine x `headroom` (1.25): a slower
  (or faster) machine scales benchmark and calibration alike and passes, a real regression of
  25 % or more fails. `--calibrate` recomputes the ratios from a benchmark JSON (with --also, the
  largest ratio over several sessions). Benchmarks of a few milliseconds are dominated by timer
  and file-system jitter, so a breach also needs the time to exceed the budget by more than
  `noise_floor_seconds` (a 2x regression of a 6 ms stage still fails).
* Hard ceilings of the plan, in seconds (lanes: fast 20 min, witness 40 min, certify 90 min):
  a breach always fails.
* Targets of this engine (fast lane <= 10 s, ..., 100k merchants <= 8 GiB): reported as met or
  missed; a miss fails only with --strict-targets. Scale and memory targets read the scaling
  study (--scaling, default evidence/scaling.json when it exists).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BUDGETS = HERE / "budgets.json"
DEFAULT_SCALING = HERE.parent / "evidence" / "scaling.json"
GIB = 1 << 30


# ---------------------------------------------------------------------------------------------
# reading


def load_json(path) -> dict:
    return json.loads(Path(path).read_text())


def benchmarks_by_name(bench_json: dict) -> dict[str, dict]:
    return {b["name"]: b for b in bench_json.get("benchmarks", [])}


def stat(entry: dict, which: str = "min") -> float:
    return float(entry["stats"][which])


def calibration_seconds(benches: dict[str, dict], budgets: dict) -> dict[str, float]:
    """{"numpy": s, "polars": s, "mixed": numpy + polars} for whichever calibrations are present."""
    cal, which = budgets["calibration"], budgets.get("statistic", "min")
    out = {}
    for kind in ("numpy", "polars"):
        if cal[kind] in benches:
            out[kind] = stat(benches[cal[kind]], which)
    if "numpy" in out and "polars" in out:
        out["mixed"] = out["numpy"] + out["polars"]
    return out


def bench_json_from_seconds(seconds: dict[str, float], extra_info: dict[str, dict] | None = None) -> dict:
    """A minimal pytest-benchmark JSON (only what this module reads) from {name: seconds}."""
    extra_info = extra_info or {}
    return {"benchmarks": [{"name": n, "stats": {s: float(v) for s in ("min", "median", "mean", "max")},
                            "extra_info": dict(extra_info.get(n, {}))} for n, v in seconds.items()]}


def calibration_kind(entry: dict) -> str:
    return "numpy" if entry.get("extra_info", {}).get("kind") == "kernel" else "mixed"


# ---------------------------------------------------------------------------------------------
# derived metrics (targets)


def _seconds(benches, name, which):
    return stat(benches[name], which) if name in benches else None


def routing_arrivals_per_second(benches: dict, which: str = "min") -> float | None:
    s5, s6 = _seconds(benches, "test_stage[S5]", which), _seconds(benches, "test_stage[S6]", which)
    arrivals = benches.get("test_stage[S5]", {}).get("extra_info", {}).get("arrivals")
    if s5 is None or s6 is None or not arrivals:
        return None
    return arrivals / (s5 + s6)


def scaling_point(scaling: dict | None, n_merchants: int) -> dict | None:
    for p in (scaling or {}).get("points", []):
        if int(p["n_merchants"]) == int(n_merchants):
            return p
    return None


def metric_value(metric: str, benches: dict, scaling: dict | None, which: str = "min"):
    """The measured value of a target's metric, or None when the input lacks it."""
    simple = {
        "lane_fast_seconds": "test_lane_fast",
        "lane_witness_seconds": "test_lane_witness",
        "lane_certify_seconds": "test_lane_certify",
        "progressive_s4_seconds": "test_progressive_s4_cascade",
    }
    if metric in simple:
        return _seconds(benches, simple[metric], which)
    if metric == "routing_arrivals_per_second":
        return routing_arrivals_per_second(benches, which)
    if metric == "scale_exponent_total":
        fit = (scaling or {}).get("fit", {}).get("total")
        return None if not fit or fit.get("exponent") is None else float(fit["exponent"])
    if metric.startswith("peak_rss_gib_at_"):
        p = scaling_point(scaling, int(metric.rsplit("_", 1)[1]))
        if p is None or p.get("peak_rss_bytes") is None:
            return None
        if not p.get("completed"):
            return float("inf")  # stopped by the memory watchdog or an error: not within any budget
        return p["peak_rss_bytes"] / GIB
    raise KeyError(f"unknown target metric {metric!r}")


def target_met(value: float, target: dict) -> bool:
    op = target["op"]
    if op == "<=":
        return value <= target["value"]
    if op == ">=":
        return value >= target["value"]
    if op == "between":
        return target["lo"] <= value <= target["hi"]
    raise KeyError(f"unknown target op {op!r}")


def target_text(target: dict) -> str:
    if target["op"] == "between":
        return f"{target['lo']} .. {target['hi']}"
    return f"{target['op']} {target['value']:g}"


# ---------------------------------------------------------------------------------------------
# the gate


@dataclass
class Report:
    budget_rows: list[dict] = field(default_factory=list)
    ceiling_rows: list[dict] = field(default_factory=list)
    target_rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def evaluate(bench_json: dict, budgets: dict, *, scaling: dict | None = None, allow_missing: bool = False,
             strict_targets: bool = False) -> Report:
    which = budgets.get("statistic", "min")
    benches = benchmarks_by_name(bench_json)
    rep = Report(calibration=calibration_seconds(benches, budgets))
    floor = float(budgets.get("noise_floor_seconds", 0.0))
    failed = bench_json.get("seg2b", {}).get("failed", {})
    for name, err in sorted(failed.items()):
        rep.failures.append(f"{name}: the benchmark itself failed ({err})")
    for name, b in sorted(budgets.get("benchmarks", {}).items()):
        kind = b["calibration"]
        row = {"name": name, "calibration": kind, "budget_ratio": b["budget_ratio"], "seconds": None, "ratio": None}
        if name in failed:
            row["status"] = "FAILED"
        elif name not in benches:
            row["status"] = "missing"
            if not allow_missing:
                rep.failures.append(f"{name}: budgeted benchmark missing from the JSON")
        elif kind not in rep.calibration:
            row["status"] = "no calibration"
            rep.failures.append(f"{name}: calibration '{kind}' was not measured in this session")
        else:
            row["seconds"] = stat(benches[name], which)
            row["ratio"] = row["seconds"] / rep.calibration[kind]
            allowed = b["budget_ratio"] * rep.calibration[kind] + floor
            row["status"] = "ok" if row["seconds"] <= allowed else "BREACH"
            if row["status"] == "BREACH":
                rep.failures.append(f"{name}: ratio {row['ratio']:.3f} > budget {b['budget_ratio']:.3f} "
                                    f"({row['ratio'] / b['budget_ratio'] - 1:+.0%})")
        rep.budget_rows.append(row)
    for name in sorted(set(benches) - set(budgets.get("benchmarks", {})) - set(budgets["calibration"].values())):
        rep.budget_rows.append({"name": name, "calibration": calibration_kind(benches[name]), "budget_ratio": None,
                                "seconds": stat(benches[name], which), "ratio": None, "status": "no budget"})
    for name, ceiling in sorted(budgets.get("ceilings_seconds", {}).items()):
        if name.startswith("_"):
            continue
        s = _seconds(benches, name, which)
        row = {"name": name, "ceiling": ceiling, "seconds": s,
               "status": ("FAILED" if name in failed else "not measured") if s is None
               else ("ok" if s <= ceiling else "BREACH")}
        if row["status"] == "BREACH":
            rep.failures.append(f"{name}: {s:.1f} s above the plan's ceiling {ceiling} s")
        rep.ceiling_rows.append(row)
    for t in budgets.get("targets", []):
        v = metric_value(t["metric"], benches, scaling, which)
        status = "not measured" if v is None else ("met" if target_met(v, t) else "MISSED")
        rep.target_rows.append({**t, "measured": v, "status": status})
        if status == "MISSED" and strict_targets:
            rep.failures.append(f"target {t['id']}: measured {v:.4g}, wanted {target_text(t)} {t.get('unit', '')}")
    return rep


def calibrate(bench_json: dict, budgets: dict, headroom: float | None = None, source: str = "",
              others: list[dict] = ()) -> dict:
    """budgets with `benchmarks` recomputed: ratio x headroom for every benchmark of `bench_json`.

    With `others` (more sessions of the same code on the same machine), a benchmark's reference
    ratio is the largest of its ratios over all sessions: on a shared machine one session's load
    moves the multi-threaded calibration, and the worst session is the honest reference.
    `calibration_seconds` and `measured_seconds` are those of `bench_json`.
    """
    which = budgets.get("statistic", "min")
    headroom = float(headroom or budgets.get("headroom", 1.25))
    benches = benchmarks_by_name(bench_json)
    cal = calibration_seconds(benches, budgets)
    sessions = [(benches, cal)]
    for other in others:
        ob = benchmarks_by_name(other)
        sessions.append((ob, calibration_seconds(ob, budgets)))
    if any("mixed" not in c for _, c in sessions):
        raise SystemExit("calibrate: both calibration benchmarks must be in every JSON")
    out = {}
    for name, b in sorted(benches.items()):
        if name in budgets["calibration"].values():
            continue
        kind = calibration_kind(b)
        ratios = [stat(bs[name], which) / c[kind] for bs, c in sessions if name in bs]
        ratio = max(ratios)
        out[name] = {"calibration": kind, "measured_seconds": round(stat(b, which), 6),
                     "measured_ratio": round(ratio, 6), "budget_ratio": round(ratio * headroom, 6),
                     "session_ratios": [round(r, 6) for r in ratios]}
    mi = bench_json.get("machine_info", {})
    new = dict(budgets)
    new["headroom"] = headroom
    new["benchmarks"] = out
    new["calibrated"] = {
        "source": source,
        "sessions": len(sessions),
        "datetime": bench_json.get("datetime") or dt.datetime.now(dt.timezone.utc).isoformat(),
        "calibration_seconds": {k: round(v, 6) for k, v in cal.items()},
        "machine": {k: mi.get(k) for k in ("node", "processor", "cpu_count", "python_version", "numpy_version",
                                           "polars_version", "polars_threads", "loadavg_start", "loadavg_end")},
        "cpu": (mi.get("cpu") or {}).get("brand_raw"),
    }
    return new


# ---------------------------------------------------------------------------------------------
# printing


def _f(x, fmt):
    """format(x, fmt), or a dash padded to the format's width when x is missing."""
    width = int(fmt.split(".")[0]) if fmt[0].isdigit() else 0
    return "-".rjust(width) if x is None else format(x, fmt)


def format_report(rep: Report) -> str:
    lines = []
    cal = rep.calibration
    lines.append("calibration (s): " + ", ".join(f"{k} {v:.4f}" for k, v in cal.items()) if cal
                 else "calibration: none measured")
    w = max([len(r["name"]) for r in rep.budget_rows] + [9])
    lines.append("")
    lines.append(f"{'benchmark':<{w}}  {'cal':>6}  {'seconds':>10}  {'ratio':>10}  {'budget':>10}  {'use':>6}  status")
    for r in rep.budget_rows:
        use = None if r["ratio"] is None or r["budget_ratio"] is None else r["ratio"] / r["budget_ratio"]
        lines.append(f"{r['name']:<{w}}  {r['calibration']:>6}  {_f(r['seconds'], '10.4f')}  {_f(r['ratio'], '10.3f')}  "
                     f"{_f(r['budget_ratio'], '10.3f')}  {_f(use, '6.0%')}  {r['status']}")
    if rep.ceiling_rows:
        lines.append("")
        lines.append(f"{'plan ceiling':<{w}}  {'seconds':>10}  {'ceiling':>10}  status")
        for r in rep.ceiling_rows:
            lines.append(f"{r['name']:<{w}}  {_f(r['seconds'], '10.2f')}  {r['ceiling']:>10}  {r['status']}")
    if rep.target_rows:
        lines.append("")
        lines.append(f"{'target':<{w}}  {'measured':>12}  {'wanted':>22}  status")
        for r in rep.target_rows:
            lines.append(f"{r['id']:<{w}}  {_f(r['measured'], '12.4g')}  {target_text(r) + ' ' + r.get('unit', ''):>22}  "
                         f"{r['status']}")
    lines.append("")
    lines.append("PASS: every budget and ceiling holds" if rep.ok else
                 "FAIL:\n" + "\n".join(f"  - {f}" for f in rep.failures))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.check_budgets", description=__doc__.split("\n\n")[0])
    ap.add_argument("bench_json", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--budgets", type=Path, default=DEFAULT_BUDGETS)
    ap.add_argument("--scaling", type=Path, default=None,
                    help=f"scaling study JSON for the scale/memory targets (default {DEFAULT_SCALING} if present)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="a budgeted benchmark absent from the JSON is reported, not failed (partial runs)")
    ap.add_argument("--strict-targets", action="store_true", help="a missed target fails the gate too")
    ap.add_argument("--calibrate", action="store_true",
                    help="rewrite the per-benchmark budgets in --budgets from this JSON (ratio x headroom)")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="with --calibrate: more session JSONs; each budget uses the largest ratio over all")
    ap.add_argument("--headroom", type=float, default=None)
    args = ap.parse_args(argv)

    bench_json, budgets = load_json(args.bench_json), load_json(args.budgets)
    if args.calibrate:
        new = calibrate(bench_json, budgets, args.headroom, source=os.path.relpath(args.bench_json, HERE.parent),
                        others=[load_json(p) for p in args.also])
        args.budgets.write_text(json.dumps(new, indent=2) + "\n")
        print(f"wrote {len(new['benchmarks'])} budgets (headroom x{new['headroom']}) to {args.budgets}")
        budgets = new
    scaling_path = args.scaling or (DEFAULT_SCALING if DEFAULT_SCALING.exists() else None)
    scaling = load_json(scaling_path) if scaling_path and Path(scaling_path).exists() else None
    rep = evaluate(bench_json, budgets, scaling=scaling, allow_missing=args.allow_missing,
                   strict_targets=args.strict_targets)
    print(format_report(rep))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
