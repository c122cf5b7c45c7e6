"""The three lanes of the plan: fast (1 seed), witness (2), certify (4).

A lane runs the engine per seed (reusing receipts), replays each seed to prove determinism,
scores every gate, reduces to a verdict, writes the evidence pack, prints a one-screen summary,
keeps run retention, and optionally writes or checks the CI ratchet lock.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.pipeline import Pipeline, RunResult
from engine.policies import package_folder
from engine.replay import Replay, finish_replay, output_digests, output_paths, start_replay

from . import gates as G
from .compare import against_references
from .config import LaneConfig
from .record import (
    build_record,
    compare_with_lock,
    lock_from_record,
    record_json,
    with_evidence_seconds,
    with_pack,
    write_json,
)
from .retention import prune_packs, prune_runs, read_pointers, update_pointers
from .scoring import SeedScore, preconditions, replay_check, score_seed

SUITE_DIR = Path(__file__).resolve().parent / "suite"
DEFAULT_LOCK = package_folder("seg2b_evidence", "evidence") / "lock.json"


@dataclass
class LaneOutcome:
    record: dict
    results: dict[int, RunResult]
    scores: dict[int, SeedScore]


def score_lane(lane: str, runs_root: Path, policy_dir: Path | None = None, seeds: list[int] | None = None,
               progress=None, replay: bool = True, executor=None) -> LaneOutcome:
    config = LaneConfig.load(policy_dir)  # the lane's only read of its policy folder
    gp = config.gates_policy
    seeds = list(seeds) if seeds else list(gp["lanes"][lane])
    t0 = time.perf_counter()
    results, scores = _run_seeds(lane, seeds, Path(runs_root), config, progress, replay, executor)
    pre = preconditions(gp, lane, seeds, scores, results, config.engine_digests())
    for res in results.values():
        res.forget()
    gate_results = {s: G.evaluate_seed(gp, scores[s].metrics, scores[s].floor_metrics, s, scores[s].data_metrics)
                    for s in seeds}
    xseed = G.cross_seed(gp, {s: scores[s].metrics for s in seeds})
    xseed["T-X-02"] = "holds" if all(r.band != "FAIL" for res in gate_results.values() for r in res.values()) else "FAIL"
    what_if_rows = _what_if_rows(lane, seeds, config, results, scores)
    grid = config.grid_days()
    full_grid = all(scores[s].roster_facts["horizon_days"] >= grid for s in seeds)
    structural = {s: {k: v["ok"] for k, v in scores[s].structural.items()} for s in seeds}
    verdict = G.verdict({k: v["ok"] for k, v in pre.items()}, structural, gate_results, xseed, full_grid,
                        certifying=lane == gp["certifying_lane"])
    any_ctx = results[seeds[0]].ctx
    record = build_record(
        lane=lane, seeds=seeds, verdict=verdict, preconditions=pre, gates=gate_results, scores=scores, xseed=xseed,
        policy_fingerprints=config.engine_digests(),
        parameter_hash=any_ctx.parameter_hash, manifest_fingerprint=any_ctx.mf,
        wall_seconds=time.perf_counter() - t0,
        policy_documents=config.documents(), what_if=what_if_rows, full_grid=full_grid, grid_days=grid)
    return LaneOutcome(record, results, scores)


def _run_seeds(lane: str, seeds: list[int], runs_root: Path, config: LaneConfig, progress, replay: bool,
               executor) -> tuple[dict[int, RunResult], dict[int, SeedScore]]:
    """Every seed run (receipts skip or reuse stages) and scored, T-STR-05 included."""
    results, scores, replays = {}, {}, {}
    scratch = runs_root / "replay_scratch"
    tradeoff = lane in config.gates_policy.get("tradeoff", {}).get("lanes", ())
    for i, s in enumerate(seeds):
        if replay:
            # T-STR-05: an independent run of the same seed in a fresh folder, on the second core
            # while this process runs and scores the seed; one replay in flight at a time.
            if i:
                replays[seeds[i - 1]].wait()
            replays[s] = start_replay(s, scratch / f"seed={s}", config.policy_dir, executor=executor)
        results[s] = Pipeline(s, runs_root, config.policy_dir, progress=progress, executor=executor,
                              policies=config.engine).run()
        scores[s] = score_seed(results[s], config, tradeoff=tradeoff)
    for s in seeds:
        scores[s].structural["T-STR-05"] = _replay_check(results[s], replays.get(s))
    shutil.rmtree(scratch, ignore_errors=True)
    return results, scores


def _what_if_rows(lane: str, seeds: list[int], config: LaneConfig, results: dict[int, RunResult],
                  scores: dict[int, SeedScore]) -> list[dict] | None:
    """The upstream what-if of the lanes that carry it (certification/whatif.py), else None."""
    gp = config.gates_policy
    if lane not in gp.get("what_if", {}).get("lanes", ()):
        return None
    from .whatif import grade, multi_tz_share, what_if

    today = {str(s): grade(gp, scores[s].data_metrics, scores[s].floor_metrics, scores[s].group_shares,
                           multi_tz_share(scores[s].world_card), scores[s].world_card.get("calibration_pass"))
             for s in seeds}
    return what_if(seeds, config.engine, gp, {s: results[s].ctx for s in seeds}, today)


def _replay_check(result: RunResult, replay: Replay | None) -> dict:
    """T-STR-05 of a seed once its replay is back (None: the lane runs without replays)."""
    if replay is None:
        return {"ok": None, "detail": "not run: replay off (a sweep point)"}
    return replay_check(finish_replay(replay), output_digests(result.runs_root, result.ctx), output_paths(result.ctx))


def start_suite(record: dict, junit_path: Path) -> subprocess.Popen:
    """The parametrized gate suite over a record: one test per (seed, gate), junit as evidence.

    The record reaches the suite through a pipe, not a file: the suite then runs while the report
    and plots are drawn, and the record file is written once, when its wall time is final (the
    gates, the only thing the suite reads, are final already)."""
    data = record_json(record).encode()
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "pytest", str(SUITE_DIR), "-q", "-p", "no:cacheprovider", "--no-header",
           f"--seg2b-record-fd={read_end}", f"--junitxml={junit_path}", "-o", "junit_family=xunit2"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        suite = subprocess.Popen(cmd, cwd=SUITE_DIR.parent.parent, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, pass_fds=(read_end,))
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    # A record is larger than a pipe's buffer: fed from a thread, so drawing the pack is not held up.
    threading.Thread(target=_feed, args=(write_end, data), daemon=True).start()
    return suite


def _feed(fd: int, data: bytes) -> None:
    try:
        with open(fd, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass  # the suite stopped before reading: its exit status and junit.xml say so


def summary_lines(record: dict, pack: Path | None, wall: float) -> list[str]:
    lines = []
    label = " (provisional: only the certify lane certifies)" if record["provisional"] else ""
    lines.append(f"Segment 2B {record['lane']} lane, seeds {record['seeds']}: {record['verdict']}{label}")
    r = record["reasons"]
    if r["preconditions_failed"]:
        lines.append(f"  preconditions failed: {', '.join(r['preconditions_failed'])}")
    if r["structural_failed"]:
        lines.append(f"  structural failed: {', '.join(r['structural_failed'])}")
    for seed, d in record["per_seed"].items():
        bad = [(g, x) for g, x in d["gates"].items() if x["band"] != "B+"]
        marks = " ".join(f"{g}:{x['band']}" + (f"[{x['attribution']}]" if x.get("attribution") else "") for g, x in bad)
        n_bplus = sum(1 for x in d["gates"].values() if x["band"] == "B+")
        lines.append(f"  seed {seed}: {n_bplus}/{len(d['gates'])} gates at B+" + (f"; {marks}" if marks else ""))
    cv = record["cross_seed"]
    if cv.get("worst_cv") is not None:
        lines.append(f"  cross-seed T-X-01 {cv['T-X-01']} (worst CV {cv['worst_cv']:.3f}); S3 drift CV "
                     f"{cv['s3_drift_cv']:.3f}" if cv.get("s3_drift_cv") is not None else f"  cross-seed T-X-01 {cv['T-X-01']}")
    if pack:
        lines.append(f"  evidence: {pack}")
    lines.append(f"  wall time: {wall:.1f} s")
    return lines


def run_lane(lane: str, runs_root: Path = Path("runs"), policy_dir: Path | None = None,
             evidence_root: Path = Path("evidence"), lock: bool = False, ci: bool = False, quiet: bool = False,
             seeds: list[int] | None = None, lock_path: Path | None = None, strict: bool = False,
             summary_to: Path | None = None, executor=None) -> int:
    from engine.progress import StageProgress

    from .html import write_lane_html
    from .report import write_pack
    from .summary import append_summary, write_summary

    t0 = time.perf_counter()
    runs_root, evidence_root = Path(runs_root), Path(evidence_root)
    prune_runs(runs_root)
    outcome = score_lane(lane, runs_root, policy_dir, seeds, progress=StageProgress(quiet), executor=executor)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    pack = evidence_root / lane / f"{stamp}-{outcome.record['parameter_hash'][:8]}"
    pack.mkdir(parents=True, exist_ok=True)
    # The report names the pack and what moved against the references, so both join the record first.
    record = with_pack(outcome.record, pack, against_references(read_pointers(runs_root), outcome.record))
    suite = start_suite(record, pack / "junit.xml")  # runs while the report and plots are drawn
    write_pack(pack, record, outcome)
    suite_rc = suite.wait()
    record = with_evidence_seconds(record, time.perf_counter() - t0)
    write_json(pack / "certification_record.json", record)
    # The page and the CI summary are drawn from the written record, so they show its full runtime.
    write_lane_html(pack)
    summary = write_summary(pack, record)
    if summary_to:
        append_summary(summary_to, summary.read_text(encoding="utf-8"))
    update_pointers(runs_root, record)
    prune_packs(evidence_root / lane, keep=pack, last_good=record["verdict"] in (G.PASS_B, G.PASS_BPLUS),
                pointers=read_pointers(runs_root))
    # The verdict is the lane's result, not an error: exit 0 once it is written, unless --strict
    # asks for a non-zero exit on any verdict below PASS_B (CI uses --ci, the ratchet, instead).
    rc = 1 if strict and record["verdict"] not in (G.PASS_B, G.PASS_BPLUS) else 0
    lock_path = Path(lock_path or DEFAULT_LOCK)
    if lock:
        write_json(lock_path, lock_from_record(record))
    lines = summary_lines(record, pack, time.perf_counter() - t0)
    lines.append(f"  page: {pack / 'report.html'}")
    lines.append(f"  gate suite (junit.xml): {'all gates at B or better' if suite_rc == 0 else 'failures recorded'}")
    if ci:
        if not lock_path.exists():
            lines.append(f"  CI ratchet: no lock at {lock_path}")
            rc = 1
        else:
            import json

            problems = compare_with_lock(json.loads(lock_path.read_text()), record)
            lines.append("  CI ratchet: " + ("matches the lock" if not problems else "FAILED"))
            lines += [f"    - {p}" for p in problems]
            rc = 1 if problems else 0
    if lock:
        lines.append(f"  lock written: {lock_path}")
    print("\n".join(lines))
    return rc
