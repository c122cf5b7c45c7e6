"""The three lanes end to end on the default world.

test_lane_fast
    `score_lane("fast", fresh_root, replay=True)` in an empty runs root: seed 42 world .. S8,
    a forced replay of every stage (determinism proof; however score_lane runs it, at the time
    of writing a subprocess on the second core overlapping the scoring), scoring of every
    gate, verdict and record. Not included: writing the evidence pack, the junit gate suite and retention (that is
    test_lane_fast_full).
test_lane_witness
    `score_lane("witness", ...)` in a copy of the fast lane's runs root: seed 42 is skipped by
    its receipts (its forced replay and its scoring are still timed), seed 7 runs from scratch,
    is replayed and scored; then the cross-seed gates.
test_lane_certify
    `score_lane("certify", ...)` in a copy of the fast lane's runs root: as witness, with seeds
    7, 101 and 202 from scratch. A cold certify lane costs one more seed-42 first run (see
    test_stage / the fast lane's per-stage seconds).
test_lane_fast_full
    `run_lane("fast", ...)` in an empty root, what `nox -s fast` runs minus nox: fast-lane scoring
    plus the evidence pack (report, plots), the junit gate suite in a subprocess and retention.
"""

from __future__ import annotations

import shutil

from benchmarks.conftest import LANE_ROUNDS


def _info(benchmark, outcome, **info):
    rec = outcome.record
    benchmark.extra_info.update(info)
    benchmark.extra_info["seeds"] = rec["seeds"]
    benchmark.extra_info["verdict"] = rec["verdict"]
    benchmark.extra_info["structural_failed"] = rec.get("reasons", {}).get("structural_failed")
    benchmark.extra_info["lane_wall_seconds"] = rec["runtime"]["lane_wall_seconds"]
    benchmark.extra_info["first_run_statuses"] = {
        str(s): {r.name: r.status for r in res.stages} for s, res in outcome.results.items()}
    benchmark.extra_info["per_seed_stage_seconds"] = rec["runtime"]["per_seed_stage_seconds"]


def test_lane_fast(benchmark, tmp_path_factory, lane_snapshots):
    from certification.lanes import score_lane

    outcomes = []

    def setup():
        return (tmp_path_factory.mktemp("lane_fast") / "runs",), {}

    def target(root):
        outcomes.append(score_lane("fast", root, replay=True))
        lane_snapshots.setdefault("seed42_root", root)

    benchmark.group = "lanes"
    benchmark.pedantic(target, setup=setup, rounds=LANE_ROUNDS, iterations=1, warmup_rounds=0)
    _info(benchmark, outcomes[-1], kind="lane", lane="fast",
          includes="fresh root: seed 42 world..S8 + forced replay (subprocess) + scoring (no evidence pack)")


def _seed42_root(lane_snapshots, tmp_path_factory):
    if "seed42_root" not in lane_snapshots:  # the fast-lane benchmark did not run in this session
        from certification.lanes import score_lane

        root = tmp_path_factory.mktemp("lane_seed42") / "runs"
        score_lane("fast", root, replay=True)
        lane_snapshots["seed42_root"] = root
    return lane_snapshots["seed42_root"]


def _reusing_lane(benchmark, lane, lane_snapshots, tmp_path_factory):
    from certification.lanes import score_lane

    src = _seed42_root(lane_snapshots, tmp_path_factory)
    outcomes = []

    def setup():
        return (shutil.copytree(src, tmp_path_factory.mktemp(f"lane_{lane}") / "runs"),), {}

    benchmark.group = "lanes"
    benchmark.pedantic(lambda root: outcomes.append(score_lane(lane, root, replay=True)), setup=setup,
                       rounds=LANE_ROUNDS, iterations=1, warmup_rounds=0)
    out = outcomes[-1]
    assert all(st == "skipped" for st in (r.status for r in out.results[42].stages)), "seed 42 was not reused"
    return out


def test_lane_witness(benchmark, tmp_path_factory, lane_snapshots):
    out = _reusing_lane(benchmark, "witness", lane_snapshots, tmp_path_factory)
    _info(benchmark, out, kind="lane", lane="witness",
          includes="seed 42 reused via receipts (replay + scoring timed); seed 7 fresh run + replay + scoring; "
                   "cross-seed gates (no evidence pack)")


def test_lane_certify(benchmark, tmp_path_factory, lane_snapshots):
    out = _reusing_lane(benchmark, "certify", lane_snapshots, tmp_path_factory)
    _info(benchmark, out, kind="lane", lane="certify",
          includes="seed 42 reused via receipts (replay + scoring timed); seeds 7, 101, 202 fresh run + replay + "
                   "scoring; cross-seed gates (no evidence pack)")


def test_lane_fast_full(benchmark, tmp_path_factory):
    from certification.lanes import run_lane

    rcs = []

    def setup():
        base = tmp_path_factory.mktemp("lane_fast_full")
        return (base / "runs", base / "evidence"), {}

    def target(root, evidence):
        rcs.append(run_lane("fast", runs_root=root, evidence_root=evidence, quiet=True))

    benchmark.group = "lanes"
    benchmark.pedantic(target, setup=setup, rounds=LANE_ROUNDS, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(kind="lane", lane="fast", exit_code=rcs[-1],
                                includes="run_lane: fast-lane scoring + evidence pack + junit gate suite + retention")
