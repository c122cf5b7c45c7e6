"""Concurrent runs on one runs root, as real processes: `python -m tests.concurrent_runs --help`.

The driver imports the engine and loads the reference data once, then forks the runs of each
trial at the same moment (separate processes: separate locks, file descriptors and PIDs, the same
file system races as two shells), so a trial costs a run, not an interpreter start. Nothing in the
parent touches polars before it forks. Prints one JSON object: per trial, each run's exit code and
stderr, and whether the root then verifies with every output identical to a sequential run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("data", "logs")


def _child(argv: list[str], err_path: Path, python: bool = False) -> None:
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    code = 70
    try:
        if python:  # ["-c", source]
            exec(compile(argv[1], "<concurrent>", "exec"), {"__name__": "__concurrent__"})
            code = 0
        else:
            from engine.cli import main

            code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - report, never return into the parent's loop
        import traceback

        traceback.print_exc()
        code = 71
    finally:
        sys.stderr.flush()
        os._exit(code)


def _fork_all(runs: list[list[str]], scratch: Path, python: bool = False) -> list[tuple[int, str]]:
    pids = []
    for i, argv in enumerate(runs):
        err = scratch / f"err-{i}.txt"
        pid = os.fork()
        if pid == 0:
            _child(argv, err, python)
        pids.append((pid, err))
    out = []
    for pid, err in pids:
        _, status = os.waitpid(pid, 0)
        out.append((os.waitstatus_to_exitcode(status), err.read_text()))
    return out


def _state(root: Path) -> dict[str, str]:
    from engine.identity import file_sha256

    return {p.relative_to(root).as_posix(): file_sha256(p)
            for part in PARTS if (root / part).exists() for p in sorted((root / part).rglob("*")) if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    stray = [p for p in root.rglob("*") if p.name.startswith(".tmp-")]
    ws = root / "tmp"
    stray += list(ws.iterdir()) if ws.is_dir() else []
    return sorted(p.relative_to(root).as_posix() for p in stray)


def _run_args(root: Path, policies: Path, seed: int, *extra: str) -> list[str]:
    return ["run", "--seed", str(seed), "--runs-root", str(root), "--policies", str(policies), "--quiet", *extra]


def _verified(root: Path, policies: Path, seed: int):
    from engine.bundle import verify_bundle
    from engine.errors import EngineError
    from engine.pipeline import Pipeline, dataset_path

    try:
        verify_bundle(dataset_path("validation_bundle_2B", root, Pipeline(seed, root, policies).ctx))
        return True
    except EngineError as exc:
        return str(exc)


def _pairs(mode: str, n: int, policies: Path, scratch: Path, expected: dict) -> dict:
    """Two runs forked at the same moment on one fresh root, n times."""
    seeds = (42, 43) if mode == "two-seeds" else (42, 42)
    want = {k: v for s in set(seeds) for k, v in expected[s].items()}
    trials = []
    for t in range(n):
        root = scratch / f"{mode}-{t}"
        runs = [_run_args(root, policies, s) for s in seeds]
        if mode == "force":
            runs[1].append("--force")
        results = _fork_all(runs, scratch)
        verified = [_verified(root, policies, s) for s in sorted(set(seeds))]
        trials.append({"exit": [c for c, _ in results], "stderr": [e for _, e in results if e],
                       "verify_errors": [v for v in verified if v is not True],
                       "identical": _state(root) == want, "leftovers": _leftovers(root)})
        shutil.rmtree(root)
    failures = [t for t in trials
                if t["exit"] != [0, 0] or t["stderr"] or t["verify_errors"] or not t["identical"] or t["leftovers"]]
    return {"trials": n, "runs": 2 * n, "failures": len(failures), "failed": failures[:3]}


def _receipts(root: Path) -> int:
    return sum(1 for _ in root.glob("reports/layer1/2B/receipts/seed=*/manifest_fingerprint=*/*.json"))


def _kills(n: int, policies: Path, scratch: Path, expected: dict) -> dict:
    """kill -9 at moments spread over every stage of a run, then a rerun: it must succeed, publish
    the same bytes as an undisturbed run, and leave no temporary file anywhere (the dead run's
    workspace is swept, and no temporary ever sat in a published folder).

    Trial t of n waits until 11 t / n stages have written their receipt (the moments follow the
    run's progress, however loaded the machine is), then a few milliseconds more, and kills."""
    trials = []
    for t in range(n):
        root = scratch / f"kill-{t}"
        argv = _run_args(root, policies, 42)
        stages_done, extra = (11 * t) // n, 0.004 * ((11 * t) % n)  # a few ms into the next stage
        pid = os.fork()
        if pid == 0:
            _child(argv, scratch / "err-killed.txt")
        t0, status = time.monotonic(), None
        while _receipts(root) < stages_done:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            time.sleep(0.001)
        if status is None:
            time.sleep(extra)
            os.kill(pid, signal.SIGKILL)  # a child that just exited is a zombie: the kill is a no-op
            _, status = os.waitpid(pid, 0)
        at = time.monotonic() - t0
        in_published = sorted(p.relative_to(root).as_posix() for p in root.rglob(".tmp-*")) if root.exists() else []
        (code, err), = _fork_all([argv], scratch)
        trials.append({"kill_at_s": round(at, 3), "after_stages": stages_done, "killed": os.WIFSIGNALED(status),
                       "temps_in_published_after_kill": in_published,
                       "rerun_exit": code, "stderr": err, "verified": _verified(root, policies, 42),
                       "identical": _state(root) == expected[42], "leftovers": _leftovers(root)})
        shutil.rmtree(root)
    failures = [t for t in trials if t["temps_in_published_after_kill"] or t["rerun_exit"] != 0 or t["stderr"]
                or t["verified"] is not True or not t["identical"] or t["leftovers"]]
    return {"trials": n, "killed_mid_run": sum(t["killed"] for t in trials), "failures": len(failures), "failed": failures[:3]}


def _overlays(n: int, policies: Path, scratch: Path, calls: int = 24) -> dict:
    """`seg2b certify --world-policy` places its overlay before the lane starts: many at once must
    all get the same folder (the old fixed `.tmp` name made them collide)."""
    wp = scratch / "my_world.json"
    wp.write_bytes((policies / "world_policy_v1.json").read_bytes())
    trials = []
    for t in range(n):
        root = scratch / f"overlay-{t}"
        code = ("from pathlib import Path; from engine.policies import overlay_dir; "
                f"overlay_dir(Path({str(policies)!r}), {{'world_policy_v1': Path({str(wp)!r})}}, Path({str(root)!r}))")
        results = _fork_all([["-c", code]] * calls, scratch, python=True)
        folders = sorted(p.name for p in (root / "policy_overlays").iterdir())
        trials.append({"exit": sorted({c for c, _ in results}), "stderr": [e for _, e in results if e][:2],
                       "folders": folders, "leftovers": _leftovers(root)})
        shutil.rmtree(root)
    failures = [t for t in trials if t["exit"] != [0] or t["stderr"] or len(t["folders"]) != 1 or t["leftovers"]]
    return {"trials": n, "calls": n * calls, "failures": len(failures), "failed": failures[:3]}


MODES = ("same-seed", "force", "two-seeds", "overlay", "kill")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=Path, required=True)
    ap.add_argument("--trials", default="same-seed=20,force=5,two-seeds=5,overlay=5,kill=14",
                    help="mode=count,... with modes same-seed (two runs of seed 42), force (a run and a --force "
                         "replay), two-seeds (42 and 43), overlay (24 simultaneous --world-policy overlays), kill "
                         "(SIGKILL at evenly spread moments of a run, then a rerun)")
    ap.add_argument("--scratch", type=Path, default=None)
    args = ap.parse_args(argv)
    counts = {m: int(c) for m, c in (item.split("=") for item in args.trials.split(",") if item)}
    unknown = set(counts) - set(MODES)
    if unknown:
        ap.error(f"unknown mode(s) {sorted(unknown)}")

    from engine import world

    world.reference()  # parsed once, inherited by every fork
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="seg2b-conc-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        # Reference: each seed alone, in a process of its own.
        expected = {}
        for seed in (42, 43):
            ref = scratch / f"ref-{seed}"
            (code, err), = _fork_all([_run_args(ref, args.policies, seed)], scratch)
            if code != 0:
                print(json.dumps({"error": f"reference run failed: {err}"}))
                return 1
            expected[seed] = _state(ref)
            shutil.rmtree(ref)
        report = {}
        for mode, n in counts.items():
            if mode == "overlay":
                report[mode] = _overlays(n, args.policies, scratch)
            elif mode == "kill":
                report[mode] = _kills(n, args.policies, scratch, expected)
            else:
                report[mode] = _pairs(mode, n, args.policies, scratch, expected)
        print(json.dumps(report))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
