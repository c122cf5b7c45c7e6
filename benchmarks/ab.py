"""The A/B runtime gate: the base commit (A) and the candidate (B), same machine, same job, interleaved.

    python -m benchmarks.ab                                   # base from benchmarks/ab_base.json, candidate = this working tree
    python -m benchmarks.ab --base HEAD~3 --candidate REV_OR_DIR
    python -m benchmarks.ab --rounds 12 --max-rounds 24 --stages S4,S5 --kernels none
    python -m benchmarks.ab --base HEAD --inject S4:1.3        # self-test: the candidate's S4 made 1.3x slower

The base is checked out into a temporary git worktree (removed afterwards); a candidate given as
a revision too, a folder (default: this working tree) is copied next to it. Each tree gets its
own runs root, prepared by one untimed run; then every round runs one forced run per tree
(`python -m engine.cli run --seed 42 --force --run-report F` through benchmarks/ab_runner.py, a
fresh process each), A B in even rounds and B A in odd ones: stage wall seconds from the run
report, stage CPU seconds from the runner, then the engine kernels in the same process when both
trees have them. The rule (benchmarks/ab_rule.py) judges each benchmark on its paired ratios;
while a benchmark is suspect, rounds are added up to --max-rounds before deciding.

Exit status: 0 pass (or skipped: no base in this clone), 1 a benchmark breached, 2 the gate could
not run (a run failed, bad arguments).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ab_rule as R  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNNER = HERE / "ab_runner.py"
DEFAULT_BASE_FILE = HERE / "ab_base.json"
SEED = 42
TOTAL = "world..S8"  # the sum of all stages of a run, gated like one more benchmark
# Wall time swings with other processes' load, and its bursts last longer than a round (measured:
# benchmarks/README.md), so a benchmark gated on wall time must be slower by more to fail.
WALL_THRESHOLD = 1.25


class GateError(Exception):
    """The gate could not measure (exit 2), as opposed to a measured breach (exit 1)."""


class BaseUnavailable(GateError):
    """The base does not run here (e.g. an old commit against newer libraries): nothing to compare with."""


def git(repo: Path, *args: str, check: bool = True) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise GateError(f"git {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.strip() if p.returncode == 0 else ""


def resolve_commit(repo: Path, rev: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                             capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


class Tree:
    """One side of the comparison: a source tree, its runs root, its runner command."""

    def __init__(self, label: str, path: Path, describe: str, work: Path, inject: list[str], runner: Path = RUNNER):
        self.label, self.path, self.describe = label, Path(path).resolve(), describe
        self.runner = runner
        self.runs_root = work / f"runs-{label}"
        self.report = work / f"report-{label}.json"
        self.out = work / f"runner-{label}.json"
        self.inject = inject
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.path), *filter(None, [env.get("PYTHONPATH")])])
        # Bytecode cached in the gate's own folder (never in the trees): the untimed first run
        # compiles, timed runs do not, so lazy imports inside a stage cost the same on both sides.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        self.env = env

    def run(self, cli: list[str], kernels: str | None, timeout: float) -> dict:
        """One fresh process: the CLI run, then the kernels (None: all, "": none); the runner's JSON."""
        cmd = [sys.executable, str(self.runner)]
        for item in self.inject:
            cmd += ["--inject", item]
        cmd += ["--out", str(self.out)]
        if kernels is not None:
            cmd += ["--kernel-names", kernels]
        cmd += ["--", *cli]
        self.out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise GateError(f"{self.label}: run timed out after {timeout:.0f} s") from exc
        if p.returncode != 0:
            tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
            raise GateError(f"{self.label} ({self.describe}): run failed with exit {p.returncode}\n{tail}")
        info = json.loads(self.out.read_text())
        info["process_seconds"] = time.perf_counter() - t0
        if Path(info["engine"]) != self.path / "engine" or info.get("foreign_modules"):
            raise GateError(f"{self.label}: imported the engine from {info['engine']}, not only from {self.path}: "
                            + "; ".join(info.get("foreign_modules") or []))
        return info


def stage_seconds(report_path: Path) -> tuple[list[str], dict[str, float]]:
    """(stage order, {stage: seconds}) of a run report; only stages that ran count."""
    rep = json.loads(report_path.read_text())
    order = [s["stage"] for s in rep["stages"]]
    return order, {s["stage"]: float(s["seconds"]) for s in rep["stages"] if s.get("status") == "ran"}


def parse_list(text: str | None) -> list[str] | None:
    if text is None or text.strip().lower() == "all":
        return None
    return [] if text.strip().lower() == "none" else [x.strip() for x in text.split(",") if x.strip()]


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Gate:
    """Runs the rounds and turns them into the rule's paired samples.

    A round is {"order": "AB" | "BA", "A": run, "B": run}, a run {"wall": {name: s}, "cpu": {name: s},
    "stages": [stage order]}: stage wall seconds from the run report, stage CPU seconds from the
    runner's wrapper (absent when the tree has nothing to wrap), kernels both, and the total of the
    stages as TOTAL.

    Gated (metric "cpu", the default): every stage and kernel on CPU seconds, plus the run's total
    wall seconds. CPU time is what a code change moves; load from other processes moves it far
    less than wall time (measured: benchmarks/README.md), so the gate needs fewer rounds. The
    total on wall time keeps an eye on what CPU time cannot see (lost parallelism, waiting on
    I/O), against `wall_threshold`. A stage whose CPU time one tree cannot give is gated on wall
    time, with a note. Metric "wall": everything on wall time.
    """

    def __init__(self, base: Tree, cand: Tree, rule: R.Rule, stages: list[str] | None, kernels: list[str] | None,
                 timeout: float, log=print, metric: str = "cpu", wall_threshold: float = WALL_THRESHOLD):
        self.base, self.cand, self.rule, self.wall_threshold = base, cand, rule, wall_threshold
        self.stages, self.kernels = stages, kernels
        self.timeout, self.log, self.metric = timeout, log, metric
        self.rounds: list[dict] = []
        self.notes: dict[str, str] = {}
        self.until: str | None = None

    def _cli(self, tree: Tree, force: bool) -> list[str]:
        cli = ["run", "--seed", str(SEED), "--runs-root", str(tree.runs_root), "--quiet", "--run-report", str(tree.report)]
        if force:
            cli.append("--force")
        if self.until:
            cli += ["--until", self.until]
        return cli

    def prepare(self) -> None:
        """One untimed run per tree: builds its runs root (and its bytecode) so timed rounds are replays."""
        if self.stages:
            # Stage order from the candidate's engine; stop the runs after the last stage wanted.
            order = self._stage_order()
            unknown = [s for s in self.stages if s not in order]
            if unknown:
                raise GateError(f"--stages: unknown {', '.join(unknown)}; the candidate has {', '.join(order)}")
            self.until = max(self.stages, key=order.index)
        for tree in (self.base, self.cand):
            t0 = time.perf_counter()
            try:
                tree.run(self._cli(tree, force=False), kernels="", timeout=self.timeout)
            except GateError as exc:
                raise (BaseUnavailable(str(exc)) if tree is self.base else exc) from None
            self.log(f"  prepared {tree.label} ({tree.describe}) in {time.perf_counter() - t0:.1f} s")

    def _stage_order(self) -> list[str]:
        p = subprocess.run([sys.executable, "-c", "from engine.pipeline import STAGE_NAMES; print(' '.join(STAGE_NAMES))"],
                           cwd=self.cand.path, env=self.cand.env, capture_output=True, text=True)
        if p.returncode != 0:
            raise GateError(f"candidate: cannot read its stage names: {p.stderr.strip()[-300:]}")
        return p.stdout.split()

    def _measure(self, tree: Tree) -> dict:
        info = tree.run(self._cli(tree, force=True), kernels=None if self.kernels is None else ",".join(self.kernels),
                        timeout=self.timeout)
        order, wall = stage_seconds(tree.report)
        cpu = {s: float(c) for s, c in (info.get("stage_cpu") or {}).items() if s in wall}
        if self.stages is None:
            if all(s in wall for s in order):
                wall[TOTAL] = sum(wall[s] for s in order)
            if all(s in cpu for s in order):
                cpu[TOTAL] = sum(cpu[s] for s in order)
        else:
            wall = {s: v for s, v in wall.items() if s in self.stages}
            cpu = {s: v for s, v in cpu.items() if s in self.stages}
        for name, k in info["kernels"].items():
            if "skipped" in k:
                self.notes.setdefault(name, f"{tree.label}: {k['skipped']}")
            else:
                wall[name], cpu[name] = k["wall"], k["cpu"]
        return {"stages": order, "wall": wall, "cpu": cpu, "process_seconds": round(info["process_seconds"], 3)}

    def run_round(self) -> None:
        i = len(self.rounds)
        order = (self.base, self.cand) if i % 2 == 0 else (self.cand, self.base)
        t0 = time.perf_counter()
        got = {tree.label: self._measure(tree) for tree in order}
        self.rounds.append({"order": "".join(t.label for t in order), "loadavg": loadavg(), **got})
        a, b = got["A"]["wall"].get(TOTAL), got["B"]["wall"].get(TOTAL)
        tot = f"; world..S8 wall A {a:.2f} s, B {b:.2f} s" if a and b else ""
        self.log(f"  round {i + 1} ({self.rounds[-1]['order']}) {time.perf_counter() - t0:.1f} s{tot}")

    def gated(self) -> list[tuple[str, str, str]]:
        """(benchmark label, name, metric) of everything gated, in run order; notes for the rest."""
        if not self.rounds:
            return []
        first = self.rounds[0]
        names = list(first["A"]["wall"]) + [n for n in first["B"]["wall"] if n not in first["A"]["wall"]]

        def everywhere(name, metric):
            return all(name in r[t][metric] for r in self.rounds for t in ("A", "B"))

        out = []
        for name in names:
            if not everywhere(name, "wall"):
                if name not in self.notes:
                    side = "base" if all(name not in r["A"]["wall"] for r in self.rounds) else \
                        "candidate" if all(name not in r["B"]["wall"] for r in self.rounds) else "some rounds"
                    self.notes[name] = f"absent from the {side}: not compared"
                continue
            if name == TOTAL or self.metric == "wall":
                out.append((f"{name} wall", name, "wall"))
            elif everywhere(name, "cpu"):
                out.append((f"{name} cpu", name, "cpu"))
            else:
                out.append((f"{name} wall", name, "wall"))
                self.notes.setdefault(f"{name} cpu", "no CPU time from one tree (nothing to wrap): gated on wall time")
        return out

    def samples(self) -> dict[str, list[tuple[float, float]]]:
        """Paired samples {benchmark: [(A, B) per round]} of everything gated."""
        return {label: [(r["A"][m][name], r["B"][m][name]) for r in self.rounds] for label, name, m in self.gated()}

    def evaluate(self) -> R.Report:
        thresholds = {label: self.wall_threshold for label, _, m in self.gated() if m == "wall"}
        return R.evaluate(self.samples(), self.rule, notes=self.notes, thresholds=thresholds)

    def run(self) -> R.Report:
        self.prepare()
        while True:
            rep = self.evaluate()
            more = R.rounds_wanted(rep)
            if not more:
                return rep
            if self.rounds:
                self.log(f"  look after {rep.n} rounds: {more} more for "
                         + ", ".join(f"{x.name} ({x.status} {x.ratio:.2f}x)" for x in rep.pending))
            for _ in range(more):
                self.run_round()


def snapshot(src: Path, dst: Path) -> None:
    """Copy a working tree's source (tracked and untracked files that git does not ignore, so
    uncommitted changes too) next to the base's worktree: both trees then live in the same kind
    of fresh folder, and only their code differs."""
    listing = subprocess.run(["git", "-C", str(src), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True)
    if listing.returncode == 0:
        for rel in filter(None, listing.stdout.split("\0")):
            f = src / rel
            if f.is_file():
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst / rel)
    else:  # not a git checkout: everything but caches and run outputs
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".git", "__pycache__", "runs", ".nox", ".hypothesis"))


def _describe(repo: Path, commit: str) -> str:
    return f"{commit[:10]} {git(repo, 'log', '-1', '--format=%s', commit, check=False)[:60]}"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="The rule and its parameters: benchmarks/README.md and benchmarks/ab_rule.py.")
    ap.add_argument("--base", default=None, help="base revision (default: the commit in --base-file)")
    ap.add_argument("--base-file", type=Path, default=DEFAULT_BASE_FILE)
    ap.add_argument("--candidate", default=None, help="a source tree (folder) or a revision (default: this working tree)")
    ap.add_argument("--rounds", type=int, default=R.Rule.min_rounds, help="rounds before the first look")
    ap.add_argument("--max-rounds", type=int, default=None,
                    help=f"rounds before a breach can be declared (default {R.Rule.max_rounds}, at least --rounds)")
    ap.add_argument("--step", type=int, default=R.Rule.step, help="rounds added per look while a benchmark is suspect")
    ap.add_argument("--threshold", type=float, default=R.Rule.threshold, help="slowdown ratio that is a regression")
    ap.add_argument("--wall-threshold", type=float, default=WALL_THRESHOLD,
                    help="the threshold of benchmarks gated on wall time (the run total; all with --metric wall)")
    ap.add_argument("--alpha", type=float, default=R.Rule.alpha, help="one-sided error rate of the bound, per benchmark")
    ap.add_argument("--floor-ms", type=float, default=R.Rule.floor_seconds * 1e3,
                    help="a breach also needs this many extra milliseconds per run (lower bound)")
    ap.add_argument("--method", choices=("wilcoxon", "sign"), default=R.Rule.method)
    ap.add_argument("--metric", choices=("cpu", "wall"), default="cpu",
                    help="what stages and kernels are gated on (the run total is always gated on wall time)")
    ap.add_argument("--stages", default=None, help="comma-separated stages to gate, e.g. S4,S5 (default all; "
                    "the runs stop after the last one)")
    ap.add_argument("--kernels", default="all", help="all, none or a comma-separated list (philox_2m, ...)")
    ap.add_argument("--inject", action="append", default=[], metavar="NAME:FACTOR",
                    help="self-test: slow this stage or kernel of the candidate (see ab_runner.py)")
    ap.add_argument("--inject-base", action="append", default=[], metavar="NAME:FACTOR", help="the same for the base")
    ap.add_argument("--skip-missing-base", action="store_true",
                    help="exit 0 with a note when the base commit is not in this clone (a shallow or foreign clone) "
                    "or does not run here")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per run")
    ap.add_argument("--json", type=Path, default=None, help="write the verdicts and every raw sample here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary folder (runs roots, reports; the worktrees are removed)")
    return ap


def _candidate(args: argparse.Namespace, work: Path, checkout) -> tuple[Path, str]:
    """The candidate's tree and its description: a snapshot of a folder (this working tree by
    default) next to the base's worktree, or a worktree of a revision (`checkout`)."""
    if args.candidate is None or Path(args.candidate).is_dir():
        cand_path = Path(args.candidate or REPO).resolve()
        if not (cand_path / "engine").is_dir():
            raise GateError(f"candidate {cand_path} has no engine/ folder")
        head = git(cand_path, "rev-parse", "--short=10", "HEAD", check=False)
        dirty = git(cand_path, "status", "--porcelain", "--untracked-files=no", check=False)
        cand_desc = f"{cand_path} (HEAD {head or '?'}{', uncommitted changes' if dirty else ''})"
        snapshot(cand_path, work / "tree-B")
        return work / "tree-B", cand_desc
    cand_commit = resolve_commit(REPO, args.candidate)
    if cand_commit is None:
        raise GateError(f"candidate {args.candidate!r} is neither a folder nor a revision")
    return checkout(cand_commit, "B"), _describe(REPO, cand_commit)


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    try:
        rule = R.Rule(threshold=args.threshold, alpha=args.alpha, floor_seconds=args.floor_ms / 1e3,
                      min_rounds=args.rounds, max_rounds=max(args.rounds, args.max_rounds or R.Rule.max_rounds),
                      step=args.step, method=args.method)
    except ValueError as exc:
        ap.error(str(exc))
    if not 1.0 <= args.wall_threshold < rule.clear:
        ap.error("--wall-threshold must be in [1, --clear)")

    base_file = {}
    if args.base is None:
        if not args.base_file.exists():
            ap.error(f"no --base and no {args.base_file}")
        base_file = json.loads(args.base_file.read_text())
    base_rev = args.base or base_file["commit"]
    base_commit = resolve_commit(REPO, base_rev)
    if base_commit is None:
        print(f"A/B gate: base {base_rev} is not in this clone's history (shallow clone or another repository): "
              + ("gate skipped" if args.skip_missing_base else "nothing to compare with"))
        return 0 if args.skip_missing_base else 2

    t_start = time.perf_counter()
    # A cancelled CI job sends SIGTERM: leave through `finally`, so no worktree is left behind.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="seg2b-ab-"))
    worktrees: list[Path] = []
    try:
        def checkout(commit: str, label: str) -> Path:
            path = work / f"tree-{label}"
            git(REPO, "worktree", "add", "--detach", "--quiet", str(path), commit)
            worktrees.append(path)
            return path

        base_path = checkout(base_commit, "A")
        cand_path, cand_desc = _candidate(args, work, checkout)
        # The runner and its workloads are copied too: editing them while the gate runs changes nothing.
        (work / "gate").mkdir()
        for f in (RUNNER, HERE / "workloads.py"):
            shutil.copy2(f, work / "gate" / f.name)
        runner = work / "gate" / RUNNER.name
        base = Tree("A", base_path, _describe(REPO, base_commit), work, args.inject_base, runner)
        cand = Tree("B", cand_path, cand_desc, work, args.inject, runner)
        log(f"A/B gate: A = base {base.describe}" + (f" (injected {', '.join(base.inject)})" if base.inject else ""))
        log(f"          B = candidate {cand.describe}" + (f" (injected {', '.join(cand.inject)})" if cand.inject else ""))
        if base_file.get("why"):
            log(f"          base accepted because: {base_file['why']}")
        gate = Gate(base, cand, rule, parse_list(args.stages), parse_list(args.kernels), args.timeout, log, args.metric,
                    args.wall_threshold)
        load_start = loadavg()
        rep = gate.run()
        wall = time.perf_counter() - t_start
        print()
        print(R.format_report(rep))
        print(f"gate wall time {wall:.0f} s ({len(gate.rounds)} rounds; load average {load_start} -> {loadavg()})")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "datetime": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "base": {"commit": base_commit, "describe": base.describe, "inject": base.inject},
                "candidate": {"path": str(cand.path), "describe": cand.describe, "inject": cand.inject},
                "rule": asdict(rule), "wall_threshold": args.wall_threshold, "ok": rep.ok, "wall_seconds": round(wall, 1),
                "loadavg_start": load_start, "loadavg_end": loadavg(), "cpu_count": os.cpu_count(),
                "metric": args.metric, "rows": [asdict(r) for r in rep.rows], "rounds": gate.rounds,
            }, indent=1, default=str))
        return 0 if rep.ok else 1
    except BaseUnavailable as exc:
        print(f"A/B gate: the base does not run here: {exc}\n"
              + ("gate skipped" if args.skip_missing_base else "nothing to compare with"), file=sys.stderr)
        return 0 if args.skip_missing_base else 2
    except GateError as exc:
        print(f"A/B gate: could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        for path in worktrees:
            git(REPO, "worktree", "remove", "--force", str(path), check=False)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
