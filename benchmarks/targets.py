"""The engine's absolute figures against the plan: lane ceilings and targets (benchmarks/targets.json).

    python -m benchmarks.targets evidence/benchmarks.json [--scaling evidence/scaling.json] [--strict-targets]

Absolute seconds depend on the machine, so nothing here is a regression gate (that is the A/B
gate, benchmarks/ab.py, which compares base and candidate on one machine). Two kinds of figures:

* Plan ceilings in seconds (lanes: fast 20 min, witness 40 min, certify 90 min): two orders of
  magnitude above any measured lane, so a breach means something broke, on any machine: exit 1.
* Targets (issue 16: fast lane <= 5 s, ..., 100k merchants <= 300 s and 4 GiB): reported as met or
  missed; a miss fails only with --strict-targets. Scale and memory targets read the scaling
  study (--scaling, default evidence/scaling.json when it exists). perf_table.py prints them in
  docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TARGETS = HERE / "targets.json"
DEFAULT_SCALING = HERE.parent / "evidence" / "scaling.json"
GIB = 1 << 30


def load_json(path) -> dict:
    return json.loads(Path(path).read_text())


def benchmarks_by_name(bench_json: dict) -> dict[str, dict]:
    return {b["name"]: b for b in bench_json.get("benchmarks", [])}


def stat(entry: dict, which: str = "min") -> float:
    return float(entry["stats"][which])


def bench_json_from_seconds(seconds: dict[str, float], extra_info: dict[str, dict] | None = None) -> dict:
    """A minimal pytest-benchmark JSON (only what this module reads) from {name: seconds}."""
    extra_info = extra_info or {}
    return {"benchmarks": [{"name": n, "stats": {s: float(v) for s in ("min", "median", "mean", "max")},
                            "extra_info": dict(extra_info.get(n, {}))} for n, v in seconds.items()]}


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
    if metric == "max_stage_exponent":
        fits = [f.get("exponent") for f in ((scaling or {}).get("fit", {}).get("stages") or {}).values()]
        fits = [float(e) for e in fits if e is not None]
        return max(fits) if fits else None
    if metric.startswith("world_s8_seconds_at_"):
        p = scaling_point(scaling, int(metric.rsplit("_", 1)[1]))
        if p is None or not p.get("stages"):
            return None
        if not p.get("completed"):
            return float("inf")
        return float(sum(s["seconds"] for s in p["stages"].values()))
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


@dataclass
class Report:
    ceiling_rows: list[dict] = field(default_factory=list)
    target_rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def evaluate(bench_json: dict, targets: dict, *, scaling: dict | None = None, strict_targets: bool = False) -> Report:
    which = targets.get("statistic", "min")
    benches = benchmarks_by_name(bench_json)
    rep = Report()
    failed = bench_json.get("seg2b", {}).get("failed", {})
    for name, ceiling in sorted(targets.get("ceilings_seconds", {}).items()):
        if name.startswith("_"):
            continue
        s = _seconds(benches, name, which)
        row = {"name": name, "ceiling": ceiling, "seconds": s,
               "status": ("FAILED" if name in failed else "not measured") if s is None
               else ("ok" if s <= ceiling else "BREACH")}
        if row["status"] == "BREACH":
            rep.failures.append(f"{name}: {s:.1f} s above the plan's ceiling {ceiling} s")
        rep.ceiling_rows.append(row)
    for t in targets.get("targets", []):
        v = metric_value(t["metric"], benches, scaling, which)
        status = "not measured" if v is None else ("met" if target_met(v, t) else "MISSED")
        rep.target_rows.append({**t, "measured": v, "status": status})
        if status == "MISSED" and strict_targets:
            rep.failures.append(f"target {t['id']}: measured {v:.4g}, wanted {target_text(t)} {t.get('unit', '')}")
    return rep


def _f(x, fmt):
    """format(x, fmt), or a dash padded to the format's width when x is missing."""
    width = int(fmt.split(".")[0]) if fmt[0].isdigit() else 0
    return "-".rjust(width) if x is None else format(x, fmt)


def format_report(rep: Report) -> str:
    w = max([len(r["name"]) for r in rep.ceiling_rows] + [len(r["id"]) for r in rep.target_rows] + [12])
    lines = [f"{'plan ceiling':<{w}}  {'seconds':>10}  {'ceiling':>10}  status"]
    for r in rep.ceiling_rows:
        lines.append(f"{r['name']:<{w}}  {_f(r['seconds'], '10.2f')}  {r['ceiling']:>10}  {r['status']}")
    lines.append("")
    lines.append(f"{'target':<{w}}  {'measured':>12}  {'wanted':>22}  status")
    for r in rep.target_rows:
        lines.append(f"{r['id']:<{w}}  {_f(r['measured'], '12.4g')}  {target_text(r) + ' ' + r.get('unit', ''):>22}  "
                     f"{r['status']}")
    lines.append("")
    lines.append("PASS: every plan ceiling holds" if rep.ok else "FAIL:\n" + "\n".join(f"  - {f}" for f in rep.failures))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__.split("\n\n")[0])
    ap.add_argument("bench_json", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--targets", type=Path, default=DEFAULT_TARGETS)
    ap.add_argument("--scaling", type=Path, default=None,
                    help=f"scaling study JSON for the scale/memory targets (default {DEFAULT_SCALING} if present)")
    ap.add_argument("--strict-targets", action="store_true", help="a missed target fails too")
    args = ap.parse_args(argv)
    scaling_path = args.scaling or (DEFAULT_SCALING if DEFAULT_SCALING.exists() else None)
    scaling = load_json(scaling_path) if scaling_path and Path(scaling_path).exists() else None
    rep = evaluate(load_json(args.bench_json), load_json(args.targets), scaling=scaling,
                   strict_targets=args.strict_targets)
    print(format_report(rep))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
