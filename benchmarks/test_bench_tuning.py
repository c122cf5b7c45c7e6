"""The tuning loop's budgets (issue targets; benchmarks, never timed tests).

test_tuning_policy_edit[S4]
    `seg2b run` (`Pipeline(42, root, edited).run()`) on a root holding the parent run of seed 42
    (session fixture `base_run`), after an edit of `group_mix_regularizer_v1` to mode power with a
    tau of about 0.9 (a new value every round, so every round is a new manifest). Common random numbers: world,
    roster, S1, S2, S3 and S6 are reused from the parent (hard links, digests re-checked); S0, S4,
    S5, S7 and S8 rerun. Target: <= 2.5 s and <= 0.6x the first run (`first_run_seconds`, measured
    once in the setup of the session fixture).

test_tuning_policy_edit[S1]
    The same after an edit of `alias_layout_policy_v1` (the near-uniform component's concentration): world,
    roster, S3 and S6 are reused; S1, S2, S4, S5, S7, S8 and S0 rerun.

test_sweep_five_points_s4
    `seg2b sweep --lane fast --set group_mix_regularizer_v1:/mode=power --set
    group_mix_regularizer_v1:/power/tau=<5 values>` on a copy of the parent root: the baseline point (every stage
    skipped, scoring only) and five candidates (S4's consumers rerun, the rest reused, each scored). No replay (a
    sweep's default).
    Target: <= 25 s.
"""

from __future__ import annotations

import itertools
import json
import shutil

import pytest

from benchmarks.conftest import BENCH_SEED, STAGE_ROUNDS
from engine.pipeline import Pipeline
from engine.policies import DEFAULT_POLICY_DIR

_fresh = itertools.count(1)

EDITS = {
    "S4": ("group_mix_regularizer_v1", lambda d, k: d.update(mode="power", power={"tau": round(0.9 - k * 1e-4, 6)})),
    "S1": ("alias_layout_policy_v1",
           lambda d, k: d["profile_mixture_v2"]["concentration_alpha"].__setitem__("near_uniform", 25.0 + k)),
}


def _edited_policies(tmp, policy: str, fn, k: int):
    target = tmp / f"policies-{policy}-{k}"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    path = target / f"{policy}.json"
    data = json.loads(path.read_text())
    fn(data, k)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return target


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_tuning_policy_edit(benchmark, base_run, tmp_path, edit):
    root, first = base_run
    policy, fn = EDITS[edit]
    results = []

    def setup():
        return (Pipeline(BENCH_SEED, root, _edited_policies(tmp_path, policy, fn, next(_fresh))),), {}

    def run(pipe):
        results.append(pipe.run())

    benchmark.group = "tuning"
    benchmark.pedantic(run, setup=setup, rounds=STAGE_ROUNDS, iterations=1, warmup_rounds=0)
    last = results[-1]
    benchmark.extra_info.update(
        kind="tuning", edit=f"{policy} ({edit})", first_run_seconds=round(first.seconds, 4),
        statuses={r.name: r.status for r in last.stages},
        stage_seconds_last_round={r.name: round(r.seconds, 4) for r in last.stages})
    assert {r.name for r in last.stages if r.status == "reused"} >= ({"world", "roster", "S3", "S6"} |
                                                                     ({"S1", "S2"} if edit == "S4" else set()))


def test_sweep_five_points_s4(benchmark, base_run, tmp_path):
    from certification.sweep import run_sweep

    root, _ = base_run
    packs = []

    def setup():
        k = next(_fresh)
        work = tmp_path / f"sweep-{k}"
        shutil.copytree(root, work / "runs")
        values = ",".join(str(round(v - k * 1e-4, 6)) for v in (0.95, 0.9, 0.85, 0.8, 0.7))
        return (work, values), {}

    def run(work, values):
        packs.append(run_sweep("fast", ["group_mix_regularizer_v1:/mode=power", f"group_mix_regularizer_v1:/power/tau={values}"],
                               work / "runs", evidence_root=work / "evidence", quiet=True))

    benchmark.group = "tuning"
    benchmark.pedantic(run, setup=setup, rounds=1, iterations=1, warmup_rounds=0)
    rec = json.loads((packs[-1] / "sweep_record.json").read_text())
    benchmark.extra_info.update(kind="tuning", points=len(rec["points"]),
                                point_seconds={p["name"]: p["seconds"] for p in rec["points"]})
