"""A paper plan for a big world on a Dask cluster, computed from measured Dask runs.

    python -m benchmarks.dask_plan evidence/dask_scaling.json --merchants 1000000 --workers 16

Reads the Dask points of `benchmarks/dask_scaling.py` output (one world size or more, same shard
size) and extrapolates to --merchants on --workers one-thread workers, stating each assumption:

* work grows linearly with merchants (arrivals per merchant and days fixed by the policy); with two
  world sizes or more, every quantity q is fitted as q = a + b n by least squares (a: fixed costs
  such as imports and cluster start), with one it is taken proportional to n (an overestimate of
  the fixed part). The scaling study's largest stage exponent (evidence/scaling.json) is printed
  beside it: above 1, the plan is optimistic by about (M / n)^(exponent - 1);
* worker memory follows the shard, not the world: the measured worker peak at the same
  --shard-merchants is the plan's;
* the driver works serially (`driver_busy_seconds`: the sharded stages' time it was not waiting
  for workers, plus the unsharded stages world, S0, S1, S2, S8) while the workers share their CPU
  seconds; the wall time lies between max(driver, workers / W) (full overlap) and their sum;
* bytes through the shared filesystem: the scratch the stages wrote (spills, merge buckets,
  encoded pieces: each written once and read once) and the splits the consumers read.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
UNSHARDED = ("world", "S0", "S1", "S2", "S8")


def dask_points(paths: list[Path]) -> list[dict]:
    points = []
    for path in paths:
        for run in json.loads(path.read_text()).get("runs", []):
            for p in run.get("points", []):
                if "dask" in p.get("configs", {}):
                    points.append(p)
    if not points:
        raise SystemExit("no Dask points in " + ", ".join(map(str, paths)))
    return points


def quantities(p: dict) -> dict[str, float]:
    d = p["configs"]["dask"]
    stages = {s["stage"]: s for s in d["stages"]}
    ex = [s.get("executor", {}) for s in d["stages"]]
    return {
        "arrivals": float(p["arrivals"]),
        "driver_serial_seconds": (d["summary"]["driver_busy_seconds"]
                                  + sum(stages[s]["seconds"] for s in UNSHARDED if s in stages)),
        "worker_cpu_seconds": d["cpu_seconds"]["workers"],
        "driver_peak_bytes": float(d["driver_peak_rss_bytes"]),
        "scratch_bytes": float(sum(e.get("scratch_bytes", 0) for e in ex)),
        "split_bytes": float(sum(e.get("split_bytes", 0) for e in ex)),
    }


def extrapolate(ns: list[int], values: list[float], n: int) -> float:
    """a + b n by least squares over the measured sizes (proportional through 0 with one size)."""
    if len(set(ns)) < 2:
        return values[0] * n / ns[0]
    b, a = np.polyfit(np.asarray(ns, dtype=float), np.asarray(values, dtype=float), 1)
    return float(max(a + b * n, 0.0))


def largest_exponent() -> tuple[str, float] | None:
    path = HERE.parent / "evidence" / "scaling.json"
    if not path.exists():
        return None
    fits = json.loads(path.read_text()).get("fit", {}).get("stages", {})
    exps = {s: f["exponent"] for s, f in fits.items() if f.get("exponent") is not None}
    if not exps:
        return None
    stage = max(exps, key=lambda s: exps[s])
    return stage, float(exps[stage])


def plan(points: list[dict], merchants: int, workers: int) -> dict:
    # Worker memory and the shard count come from the largest measured world's shard size.
    largest = max(points, key=lambda p: p["n_merchants"])
    same_shard = [p for p in points if p["shard_merchants"] == largest["shard_merchants"]]
    ns = [p["n_merchants"] for p in points]
    q = [quantities(p) for p in points]
    est = {k: extrapolate(ns, [x[k] for x in q], merchants) for k in q[0]}
    worker_wall = est["worker_cpu_seconds"] / workers
    return {
        "merchants": merchants, "workers": workers, "shard_merchants": largest["shard_merchants"],
        "shards": math.ceil(merchants / largest["shard_merchants"]),
        "measured_at": sorted(set(ns)), **est,
        "worker_peak_bytes": max(max(p["configs"]["dask"]["worker_peak_rss_bytes"] or [0]) for p in same_shard),
        "wall_seconds_low": max(est["driver_serial_seconds"], worker_wall),
        "wall_seconds_high": est["driver_serial_seconds"] + worker_wall,
        "largest_stage_exponent": largest_exponent(),
    }


def markdown(r: dict) -> str:
    gib, hours = 1 << 30, 3600.0
    exp = r["largest_stage_exponent"]
    lines = [
        f"Plan for {r['merchants']:,} merchants on {r['workers']} one-thread workers "
        f"({r['shards']:,} shards of {r['shard_merchants']:,} merchants), extrapolated from Dask runs at "
        f"{', '.join(f'{n:,}' for n in r['measured_at'])} merchants (`python -m benchmarks.dask_plan`):",
        "",
        "| quantity | plan |",
        "|---|---:|",
        f"| arrivals | {r['arrivals']:,.0f} |",
        f"| memory per worker (measured at the same shard size) | {r['worker_peak_bytes'] / gib:.1f} GiB |",
        f"| driver memory | {r['driver_peak_bytes'] / gib:.1f} GiB |",
        f"| driver serial work | {r['driver_serial_seconds'] / hours:.2f} h |",
        f"| worker CPU, all workers | {r['worker_cpu_seconds'] / hours:.1f} h |",
        f"| wall time (full overlap .. none) | {r['wall_seconds_low'] / hours:.2f} .. {r['wall_seconds_high'] / hours:.2f} h |",
        f"| bytes through the shared filesystem: scratch written and read once | {r['scratch_bytes'] / gib:,.0f} GiB |",
        f"| bytes through the shared filesystem: splits read | {r['split_bytes'] / gib:,.0f} GiB |",
    ]
    if exp:
        lines += ["", "Linear in merchants; the scaling study's largest stage exponent (evidence/scaling.json) is "
                      f"{exp[1]:.2f} ({exp[0]}), "
                      f"so the plan is optimistic by up to {(r['merchants'] / r['measured_at'][-1]) ** max(exp[1] - 1, 0):.1f}x "
                      "for that stage."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", type=Path, nargs="+", help="dask_scaling.py output files")
    ap.add_argument("--merchants", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the plan here")
    args = ap.parse_args(argv)
    result = plan(dask_points(args.inputs), args.merchants, args.workers)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
