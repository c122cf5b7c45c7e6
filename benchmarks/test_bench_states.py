"""One benchmark per stage (world, roster, S0..S8) on the default world, seed 42, plus reruns.

test_stage[X]
    `Pipeline(42, root, force=True).run(only=(X,))` on a runs root where the whole seed has run
    once already (session fixture `base_run`, untimed). The time is the stage as the pipeline
    runs it: input-key digests, sealed-digest re-checks, decoding inputs, the state itself,
    encoding, publishing (identical bytes) and the receipt. Pipeline construction (policy
    loading) is in the untimed setup.

test_progressive_s4_code_change
    An S4 code edit whose output bytes do not change (a refactor): `code_digest` is patched for
    S4 only (a new fake digest every round) and `Pipeline(42, root).run()` is timed. S4 reruns;
    every other stage, S5..S8 included, is skipped by its receipt because S4 republished
    identical bytes. The time includes the receipt checks (input digests) of all 11 stages.

test_progressive_s4_cascade
    An S4 code edit that changes S4's output: S4 and every stage that reads its output,
    directly or transitively (S5, S7, S8; derived from READS/WRITES), rerun, the others (world,
    roster, S0..S3, S6, which does not read S4) are skipped. Simulated by patching `code_digest`
    of exactly those stages (new fake digests every round), since a real changed output cannot be
    produced without editing the engine. This is the number the "progressive S4 rerun" target
    refers to.

test_policy_edit_reruns_consumers
    An edit of S4's policy (group_mix_regularizer_v1 soft_cap_blend.knee 0.6 -> 0.61) in a copy of
    the runs root. Draws never depend on policy bytes (common random numbers, docs/architecture.md) and a
    stage reruns only when its code, its policies or its inputs' bytes change (engine/receipts.py):
    S0 seals the policy set, S4 reads the edited policy, S7 and S8 audit it; with the soft cap off
    the knee moves no S4 byte, so S5 and S6 are reused and the world, roster, S1..S3 never rerun.
"""

from __future__ import annotations

import itertools
import shutil

import pytest

import engine.pipeline as P
from benchmarks.conftest import BENCH_SEED, STAGE_ROUNDS
from engine.pipeline import STAGE_NAMES, STAGES, Pipeline

_fresh = itertools.count(1)


def _record_info(benchmark, results, **info):
    last = results[-1]
    benchmark.extra_info.update(info)
    benchmark.extra_info["statuses"] = {r.name: r.status for r in last.stages}
    benchmark.extra_info["stage_seconds_last_round"] = {r.name: round(r.seconds, 4) for r in last.stages}
    benchmark.extra_info["rows"] = {k: v for r in last.stages for k, v in r.rows.items()}


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_stage(benchmark, base_run, stage):
    root, first = base_run
    results = []

    def setup():
        return (Pipeline(BENCH_SEED, root, force=True),), {}

    def target(pipe):
        results.append(pipe.run(only=(stage,)))

    benchmark.group = "stages"
    benchmark.pedantic(target, setup=setup, rounds=STAGE_ROUNDS, iterations=1, warmup_rounds=0)
    assert [r.name for r in results[-1].stages] == [stage]
    assert results[-1].stages[0].status == "ran"
    _record_info(benchmark, results, kind="stage", stage=stage, seed=BENCH_SEED,
                 arrivals=first.stages[STAGE_NAMES.index("roster")].rows.get("s5_arrival_roster"),
                 first_run_seconds=round(first.stages[STAGE_NAMES.index(stage)].seconds, 4))


def downstream_of(name: str) -> list[str]:
    """`name` and every stage that reads its outputs, directly or transitively, in stage order."""
    dirty, produced = [], set()
    for st in STAGES:
        if st.name == name or produced.intersection(st.reads):
            dirty.append(st.name)
            produced.update(st.writes)
    return dirty


@pytest.fixture(scope="module")
def rerun_root(base_run, tmp_path_factory):
    root, _ = base_run
    return shutil.copytree(root, tmp_path_factory.mktemp("bench_rerun") / "runs")


def _patched_rerun(benchmark, monkeypatch, root, stages):
    real = P.code_digest
    results = []

    def setup():
        fake = f"{next(_fresh):064x}"
        monkeypatch.setattr(P, "code_digest", lambda st: fake if st.name in stages else real(st))
        return (Pipeline(BENCH_SEED, root),), {}

    benchmark.group = "reruns"
    benchmark.pedantic(lambda pipe: results.append(pipe.run()), setup=setup, rounds=STAGE_ROUNDS,
                       iterations=1, warmup_rounds=0)
    return results


def test_progressive_s4_code_change(benchmark, rerun_root, monkeypatch):
    results = _patched_rerun(benchmark, monkeypatch, rerun_root, {"S4"})
    ran = [r.name for r in results[-1].stages if r.status == "ran"]
    assert ran == ["S4"], ran
    _record_info(benchmark, results, kind="rerun", scenario="S4 code digest changed, S4 output bytes identical",
                 reran=ran)


def test_progressive_s4_cascade(benchmark, rerun_root, monkeypatch):
    dirty = downstream_of("S4")
    results = _patched_rerun(benchmark, monkeypatch, rerun_root, set(dirty))
    ran = [r.name for r in results[-1].stages if r.status == "ran"]
    assert ran == dirty, (ran, dirty)
    _record_info(benchmark, results, kind="rerun", scenario="S4 output changed: S4 and its downstream readers rerun",
                 reran=ran)


def test_policy_edit_reruns_consumers(benchmark, base_run, tmp_path_factory):
    from tests.helpers import policy_variant

    root, _ = base_run
    policies = policy_variant(tmp_path_factory.mktemp("bench_policy"),
                              {"group_mix_regularizer_v1": lambda d: d["soft_cap_blend"].update(knee=0.61)})
    results = []

    def setup():
        copy = shutil.copytree(root, tmp_path_factory.mktemp("bench_policy_root") / "runs")
        return (Pipeline(BENCH_SEED, copy, policies),), {}

    benchmark.group = "reruns"
    benchmark.pedantic(lambda pipe: results.append(pipe.run()), setup=setup, rounds=STAGE_ROUNDS,
                       iterations=1, warmup_rounds=0)
    ran = [r.name for r in results[-1].stages if r.status == "ran"]
    assert ran == ["S0", "S4", "S7", "S8"], ran
    _record_info(benchmark, results, kind="rerun",
                 scenario="S4 policy edited (knee 0.6 -> 0.61): S0, S4, S7, S8 rerun; the rest is reused",
                 reran=ran)
