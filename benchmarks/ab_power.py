"""False alarms and power of the A/B gate's rule, from recorded self-comparisons (no timing here).

    python -m benchmarks.ab --base HEAD --rounds 24 --max-rounds 24 --json clean.json   # base == candidate code
    python -m benchmarks.ab_power clean.json [more.json ...] [--factor 1.3] [--trials 1000]

Each recorded round is one draw of the machine's noise: the paired times of every benchmark from
one A run and one B run of the same code. A simulated gate draws rounds from that pool (with
replacement, a whole round at once, so the stages of one run stay as correlated as they were)
and follows the gate's loop (ab.Gate, ab_rule): first look after min_rounds, more rounds while a
benchmark is suspect. Clean trials count how often an unchanged tree fails; injected trials
make one stage or kernel FACTOR x slower in every B run (its CPU and wall seconds, and the run's
totals by the same extra seconds) and count how often that benchmark, and only it, is named.
With --symmetrize each drawn round has A and B swapped with probability 1/2: the noise is then
exactly symmetric (the rule's null hypothesis), whatever bias the recorded sample had between
its two trees.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import ab_rule as R
from benchmarks.ab import TOTAL, WALL_THRESHOLD, Gate


def load_rounds(paths: list[Path]) -> list[dict]:
    pool = []
    for p in paths:
        d = json.loads(Path(p).read_text())
        if d["base"].get("inject") or d["candidate"].get("inject"):
            raise SystemExit(f"{p}: has injected delays; the noise pool needs self-comparisons")
        pool += d["rounds"]
    return pool


def noise_table(pool: list[dict]) -> str:
    """Per stage and kernel, the spread of one round's log(B/A) on wall and on CPU time (MAD
    scaled to a normal sigma), and how correlated the stages of one round are on each."""
    names = [n for n in pool[0]["A"]["wall"] if all(n in r[t]["wall"] and n in r[t]["cpu"] for r in pool for t in "AB")]
    lines = [f"{'benchmark':<22} {'median A s':>10} {'wall MAD':>8} {'CPU MAD':>8}"]
    logs = {}
    for n in names:
        row = []
        for metric in ("wall", "cpu"):
            d = np.log([r["B"][metric][n] / r["A"][metric][n] for r in pool])
            logs[(n, metric)] = d
            row.append(1.4826 * np.median(np.abs(d - np.median(d))))
        lines.append(f"{n:<22} {np.median([r['A']['wall'][n] for r in pool]):10.4f} {row[0]:8.3f} {row[1]:8.3f}")
    stages = [n for n in names if n in pool[0]["A"].get("stages", []) and np.median([r["A"]["cpu"][n] for r in pool]) > 0.05]
    stages += [n for n in names if n not in pool[0]["A"].get("stages", []) and n != TOTAL]
    for metric in ("wall", "cpu"):
        c = np.corrcoef(np.array([logs[(n, metric)] for n in stages]))
        lines.append(f"mean correlation of log(B/A) between two benchmarks of one round ({metric}, "
                     f"benchmarks above 50 ms): {c[np.triu_indices(len(stages), 1)].mean():.2f}")
    return "\n".join(lines)


def inject_round(rnd: dict, name: str, factor: float) -> dict:
    """The round with B's `name` (a stage or kernel) `factor` x slower, totals moved alike."""
    out = copy.deepcopy(rnd)
    b = out["B"]
    for metric in ("wall", "cpu"):
        if name in b[metric]:
            extra = b[metric][name] * (factor - 1.0)
            b[metric][name] += extra
            if TOTAL in b[metric] and name in b.get("stages", []):
                b[metric][TOTAL] += extra
    return out


def simulate(pool, rule: R.Rule, metric: str, rng: np.random.Generator, inject: str | None, factor: float,
             symmetrize: bool, wall_threshold: float = WALL_THRESHOLD) -> R.Report:
    gate = Gate(None, None, rule, None, None, 0.0, log=lambda m: None, metric=metric, wall_threshold=wall_threshold)
    while True:
        rep = gate.evaluate() if gate.rounds else R.Report(rule)
        more = R.rounds_wanted(rep)
        if not more:
            return rep
        for _ in range(more):
            r = pool[rng.integers(len(pool))]
            if symmetrize and rng.random() < 0.5:
                r = {**r, "A": r["B"], "B": r["A"]}
            gate.rounds.append(inject_round(r, inject, factor) if inject else r)


def study(pool, rule: R.Rule, metric: str, trials: int, factor: float, targets: list[str], symmetrize: bool,
          seed: int = 0, wall_threshold: float = WALL_THRESHOLD) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for target in [None, *targets]:
        fails, named_only, rounds, names = 0, 0, [], {}
        for _ in range(trials):
            rep = simulate(pool, rule, metric, rng, target, factor, symmetrize, wall_threshold)
            rounds.append(rep.n)
            br = [x.name.rsplit(" ", 1)[0] for x in rep.breaches]
            fails += bool(br)
            named_only += br == [target]
            for n in br:
                names[n] = names.get(n, 0) + 1
        out["clean" if target is None else target] = {
            "trials": trials, "fail_rate": fails / trials, "named_alone_rate": named_only / trials,
            "mean_rounds": float(np.mean(rounds)), "extended_rate": float(np.mean(np.array(rounds) > rule.min_rounds)),
            "breached": dict(sorted(names.items(), key=lambda kv: -kv[1])),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab_power", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="JSONs of `python -m benchmarks.ab --json` self-comparisons")
    ap.add_argument("--factor", type=float, default=1.3)
    ap.add_argument("--inject", default=None, help="comma-separated stages/kernels to slow (default: every one)")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--symmetrize", action="store_true")
    ap.add_argument("--metric", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    d = R.Rule()
    ap.add_argument("--threshold", type=float, default=d.threshold)
    ap.add_argument("--clear", type=float, default=d.clear)
    ap.add_argument("--wall-threshold", type=float, default=WALL_THRESHOLD)
    ap.add_argument("--alpha", type=float, default=d.alpha)
    ap.add_argument("--floor-ms", type=float, default=d.floor_seconds * 1e3)
    ap.add_argument("--rounds", type=int, default=d.min_rounds)
    ap.add_argument("--max-rounds", type=int, default=d.max_rounds)
    ap.add_argument("--step", type=int, default=d.step)
    ap.add_argument("--method", choices=("wilcoxon", "sign"), default=d.method)
    ap.add_argument("--noise", action="store_true", help="print the noise of the pool and stop")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rule = replace(d, threshold=args.threshold, clear=args.clear, alpha=args.alpha, floor_seconds=args.floor_ms / 1e3,
                   min_rounds=args.rounds, max_rounds=max(args.rounds, args.max_rounds), step=args.step,
                   method=args.method)
    pool = load_rounds(args.runs)
    if args.noise:
        loads = [x for p in args.runs for x in (json.loads(Path(p).read_text()).get("loadavg_start"),
                                                 json.loads(Path(p).read_text()).get("loadavg_end")) if x]
        print(f"{len(pool)} recorded rounds from {len(args.runs)} file(s); 1-min load average at their starts and "
              f"ends: {', '.join(f'{x[0]:g}' for x in loads)}")
        print(noise_table(pool))
        return 0
    targets = [n for n in pool[0]["A"]["wall"] if n != TOTAL] if args.inject is None else args.inject.split(",")
    res = study(pool, rule, args.metric, args.trials, args.factor, targets, args.symmetrize, args.seed,
                args.wall_threshold)
    print(f"{len(pool)} recorded rounds from {len(args.runs)} file(s); metric {args.metric}; {rule}; "
          f"wall threshold {args.wall_threshold:g}; "
          f"{args.trials} trials each; {'symmetrized' if args.symmetrize else 'as recorded'}")
    print(f"{'injected':<28} {'fails':>6} {'named alone':>11} {'mean rounds':>11} {'extended':>8}  breached")
    for k, v in res.items():
        print(f"{k + ('' if k == 'clean' else f' x{args.factor:g}'):<28} {v['fail_rate']:6.1%} "
              f"{v['named_alone_rate']:11.1%} {v['mean_rounds']:11.1f} {v['extended_rate']:8.0%}  "
              + ", ".join(f"{n} {c}" for n, c in list(v["breached"].items())[:4]))
    if args.json:
        args.json.write_text(json.dumps({"runs": [str(p) for p in args.runs], "metric": args.metric,
                                         "rule": rule.__dict__, "pool_rounds": len(pool), "factor": args.factor,
                                         "symmetrize": args.symmetrize, "results": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
