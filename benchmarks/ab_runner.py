"""One timed run of the A/B runtime gate, in a fresh process, on whichever engine is importable.

    python -m benchmarks.ab_runner [--inject NAME:FACTOR]... [--out FILE] [-- CLI ARGS]
    python path/to/benchmarks/ab_runner.py ...        # what benchmarks/ab.py does for both trees

With CLI ARGS, calls `engine.cli.main(CLI ARGS)` (e.g. `run --seed 42 --runs-root R --force
--quiet --run-report F`): the run report gives every stage's wall seconds. With --out FILE, first
times the engine kernels of benchmarks/workloads.py and writes to FILE the engine's location,
per kernel {"wall": s, "cpu": s} or {"skipped": why}, and per stage the CPU seconds of the
stage's call (`stage_cpu`).

ab.py runs this file by path with the tree under test first on PYTHONPATH, so `engine` is that
tree's while this file (and workloads.py, loaded by path) is the gate's own: the base commit need
not have either. Hence no `benchmarks.` imports here.

Stage CPU seconds come from wrapping `engine.pipeline.Pipeline.run_stage` from the outside (CPU
time of the whole process, all threads, over the stage's call). A tree without that method still
runs; its `stage_cpu` is empty and the gate falls back to the run report's wall seconds.

--inject NAME:FACTOR slows one stage (a run-report stage name) or one kernel by FACTOR, from the
outside, to test the gate: after the stage's (or kernel's) call, the process burns CPU until its
CPU time has grown by (FACTOR - 1) x what the call used, and the stage record's wall seconds grow
by the wall time that took. Burning, not sleeping: a slower stage burns CPU and competes for the
machine like one, and both the CPU and the wall measure of the stage come out FACTOR x larger
(the wall one exactly when the stage runs on one core, as the engine's stages mostly do).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNEL_REPS = 3  # per process; the round's sample is the fastest of these (CPU and wall each)


def burn_cpu(cpu_seconds: float) -> float:
    """Spin until this process has used `cpu_seconds` more CPU; returns the wall seconds it took."""
    t0, end = time.perf_counter(), time.process_time() + max(0.0, cpu_seconds)
    while time.process_time() < end:
        pass
    return time.perf_counter() - t0


def parse_injections(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, factor = item.rpartition(":")
        if not name or not factor:
            raise SystemExit(f"--inject wants NAME:FACTOR, got {item!r}")
        out[name] = float(factor)
        if out[name] < 1.0:
            raise SystemExit(f"--inject {item}: FACTOR must be >= 1 (a slowdown)")
    return out


STAGE_CPU: dict[str, float] = {}


def wrap_stages(factors: dict[str, float]) -> bool:
    """Record each stage's CPU seconds and apply the stage injections; False when the engine has
    no Pipeline.run_stage to wrap (then no CPU times, and no stage injection is possible)."""
    try:
        from engine import pipeline

        original = pipeline.Pipeline.run_stage
    except (ImportError, AttributeError):
        return False

    def run_stage(self, stage):
        c0 = time.process_time()
        rec = original(self, stage)
        name = getattr(stage, "name", str(stage))
        factor = factors.get(name)
        if factor and getattr(rec, "status", "ran") == "ran":
            rec.seconds += burn_cpu((factor - 1.0) * (time.process_time() - c0))
        STAGE_CPU[name] = time.process_time() - c0
        return rec

    pipeline.Pipeline.run_stage = run_stage
    return True


def _workloads():
    spec = importlib.util.spec_from_file_location("seg2b_ab_workloads", HERE / "workloads.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def time_kernels(factors: dict[str, float], names: list[str] | None) -> dict[str, dict]:
    """{kernel: {"wall": s, "cpu": s} | {"skipped": why}} for the engine on sys.path.

    A kernel that the engine lacks, or whose call fails (a refactored signature), is skipped with
    the reason: the gate compares what both trees can run."""
    W = _workloads()
    out = {}
    for name, (factory, _what) in W.KERNELS.items():
        short = name.removeprefix("test_")
        if names is not None and short not in names:
            continue
        try:
            fn = factory()
            fn()  # warm-up: lazy imports, page faults of the inputs
        except Exception as exc:  # noqa: BLE001 (any failure means "not comparable", not "slower")
            out[short] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        factor = factors.get(short, 1.0)
        wall, cpu = float("inf"), float("inf")
        for _ in range(KERNEL_REPS):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if factor > 1.0:
                burn_cpu((factor - 1.0) * (time.process_time() - c0))
            wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
        out[short] = {"wall": wall, "cpu": cpu}
    return out


def isolate_from_editable_installs() -> None:
    """Drop the import hooks of editable installs (setuptools' `__editable__` finders). They map
    `engine.*` to the installed checkout, so a module that the tree under test lacks would be
    imported from that other checkout, silently mixing two trees in one run."""
    sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]


def foreign_modules(package: str = "engine") -> list[str]:
    """Modules of `package` loaded from outside its folder (should be none)."""
    root = Path(sys.modules[package].__file__).resolve().parent
    out = []
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if (name == package or name.startswith(package + ".")) and f and root not in Path(f).resolve().parents:
            out.append(f"{name} from {f}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli_args = None
    if "--" in argv:
        i = argv.index("--")
        argv, cli_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab_runner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--inject", action="append", default=[], metavar="NAME:FACTOR",
                    help="slow a stage (world, roster, S0..S8) or a kernel (philox_2m, ...) by FACTOR")
    ap.add_argument("--out", type=Path, default=None, help="write the engine's location, stage CPU and kernel times here")
    ap.add_argument("--kernel-names", default=None, help="comma-separated subset of the kernels (default all)")
    args = ap.parse_args(argv)
    factors = parse_injections(args.inject)
    isolate_from_editable_installs()
    rc, hooked, kernels = 0, False, None
    if args.out is not None:
        # Kernels first, in a clean process: timed after a pipeline run they came out 1.35-1.8x
        # slower on a tree whose run leaves more behind (CI, e9198d0 against 5b77cb4) while the
        # same kernels timed alone measured equal, i.e. the run's leftovers were being measured.
        names = None if args.kernel_names is None else [n for n in args.kernel_names.split(",") if n]
        kernels = time_kernels(factors, names)
    if cli_args:
        hooked = wrap_stages(factors)
        stage_injections = [n for n in factors if not n.startswith(("philox", "alias"))]
        if stage_injections and not hooked:
            raise SystemExit(f"--inject {', '.join(stage_injections)}: this engine has no Pipeline.run_stage to wrap")
        from engine import cli

        rc = int(cli.main(cli_args) or 0)
    if args.out is not None and rc == 0:
        import engine

        args.out.write_text(json.dumps({
            "engine": str(Path(engine.__file__).resolve().parent),
            "foreign_modules": foreign_modules(),
            "stage_cpu": STAGE_CPU if hooked else None,
            "kernels": kernels,
        }, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
