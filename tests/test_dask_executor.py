"""The Dask executor (engine/executors.py) on a 2-worker LocalCluster (processes, one thread each),
over a 150-merchant world: the same bytes as the local executor at two shard sizes, the same
bytes when a worker is killed mid-stage, a shard that kills every worker fails the stage in one
line with nothing published and a rerun resumes there, and a worker whose engine or libraries
differ is refused before any work."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="the Dask executor needs dask.distributed (pip install 'seg2b[dask]')")

import cloudpickle  # noqa: E402 - after the skip: a dependency of distributed
import dask  # noqa: E402
import dask_faults  # noqa: E402 - tests/dask_faults.py, importable as the tests' own folder is on sys.path

from engine import executors  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.executors import DaskExecutor  # noqa: E402
from engine.identity import file_sha256  # noqa: E402
from engine.pipeline import STAGES, Pipeline, dataset_path, receipt_path  # noqa: E402
from engine.policies import DEFAULT_POLICY_DIR  # noqa: E402

SEED = 42
MERCHANTS = 150


def digests(root: Path) -> dict[str, str]:
    """Every published file of a runs root (receipts and run reports hold timings, not data)."""
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and "receipts" not in p.parts and "run_report" not in p.parts}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The 150-merchant world's policies and its local one-shard run: the reference bytes."""
    tmp = tmp_path_factory.mktemp("dask")
    pol = tmp / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, pol)
    data = json.loads((pol / "world_policy_v1.json").read_text())
    data["n_merchants"] = MERCHANTS
    (pol / "world_policy_v1.json").write_text(json.dumps(data, indent=1))
    Pipeline(SEED, tmp / "local", pol).run()
    return tmp, pol, digests(tmp / "local")


@pytest.fixture(scope="module")
def executor():
    """One executor with its own 2-worker LocalCluster for the module. allowed-failures 1: a task
    survives one dead worker, and a shard that kills two fails the stage (quickly)."""
    before = dict(os.environ)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        ex = DaskExecutor(workers=2)
        ex.client()
    cloudpickle.register_pickle_by_value(dask_faults)
    try:
        yield ex, before
    finally:
        cloudpickle.unregister_pickle_by_value(dask_faults)
        ex.close()


def sharded_stages(result) -> dict[str, dict]:
    return {r.name: r.report["executor"] for r in result.stages if "executor" in r.report}


def test_dask_gives_the_local_bytes_at_two_shard_sizes(world, executor, tmp_path):
    tmp, pol, reference = world
    ex, before = executor
    for per_shard in (40, 64):
        result = Pipeline(SEED, tmp_path / f"dask-{per_shard}", pol, shard_merchants=per_shard, executor=ex).run()
        assert digests(tmp_path / f"dask-{per_shard}") == reference
        stages = sharded_stages(result)
        assert set(stages) == {"roster", "S3", "S4", "S5", "S6", "S7"}
        assert all(s["executor"] == "dask" and s["shards"] == -(-MERCHANTS // per_shard) and s["retries"] == 0
                   for s in stages.values())
    # The LocalCluster's nannies write worker settings into this process's environment; the
    # executor puts it back, so a later subprocess (a lane's replay) inherits the lane's own.
    assert dict(os.environ) == before


def test_many_row_groups_spill_batches_and_merge_buckets(world, executor, tmp_path, monkeypatch):
    """Row groups of 5,000 rows (26 in the roster), spills in batches of 777, merge buckets of
    about 20,000 rows: row groups encoded as separate tasks and joined, row groups that straddle
    shards and buckets, splits and row-group indexes made by several tasks."""
    from engine import shards

    small = {"ROW_GROUP": 5000, "SPILL_BATCH": 777, "MERGE_ROWS": 20_000}
    for name, value in small.items():
        monkeypatch.setattr(shards, name, value)
    tmp, pol, _ = world
    ex, _ = executor
    Pipeline(SEED, tmp_path / "local", pol).run()
    ex.client().register_plugin(dask_faults.SetConstants("small-row-groups", small))
    try:
        result = Pipeline(SEED, tmp_path / "dask", pol, shard_merchants=64, executor=ex).run()
    finally:
        ex.client().unregister_worker_plugin("small-row-groups")
    assert digests(tmp_path / "dask") == digests(tmp_path / "local")
    assert sharded_stages(result)["roster"]["tasks"] > 26 + 3  # shards, merge buckets, row groups


def test_a_worker_killed_mid_stage_changes_no_byte(world, executor, tmp_path):
    tmp, pol, reference = world
    ex, before = executor
    plugin = dask_faults.KillWorker("kill-once", "S5", 1, once=str(tmp_path / "killed"))
    ex.client().register_plugin(plugin)
    try:
        result = Pipeline(SEED, tmp_path / "runs", pol, shard_merchants=40, executor=ex).run()
    finally:
        ex.client().unregister_worker_plugin("kill-once")
    assert (tmp_path / "killed").exists()  # a worker did die
    assert digests(tmp_path / "runs") == reference
    assert sharded_stages(result)["S5"]["retries"] >= 1
    assert dict(os.environ) == before  # the nanny's restart wrote into it again; put back


def test_a_shard_that_kills_every_worker_fails_cleanly_and_a_rerun_resumes(world, executor, tmp_path):
    tmp, pol, reference = world
    ex, _ = executor
    root = tmp_path / "runs"
    ex.client().register_plugin(dask_faults.KillWorker("poison", "S5", 2))
    try:
        with pytest.raises(EngineError) as err:
            Pipeline(SEED, root, pol, shard_merchants=40, executor=ex).run()
    finally:
        ex.client().unregister_worker_plugin("poison")
    message = str(err.value)
    assert "\n" not in message and message.startswith("S5 shard ")
    # Shard 2 is named: as the shard waited on, or, when a bystander queued on the dying worker
    # (shard 0, say) was failed with it and waited on first, among the shards failed with it.
    assert message.startswith("S5 shard 2 (merchant_id ") or re.search(r"shards failed with it: [0-9, ]*\b2\b", message)
    assert "killed 2 workers" in message and "nothing of the stage was published" in message
    probe = Pipeline(SEED, root, pol)
    s5 = next(s for s in STAGES if s.name == "S5")
    assert not any(dataset_path(d, root, probe.ctx).exists() for d in s5.writes)
    assert not receipt_path(root, probe.ctx, "S5").exists()
    assert not (root / "tmp").exists() or not any((root / "tmp").iterdir())  # the workspace and its scratch are gone
    rerun = Pipeline(SEED, root, pol, shard_merchants=40, executor=ex).run()
    status = {r.name: r.status for r in rerun.stages}
    assert [n for n, s in status.items() if s == "ran"] == ["S5", "S6", "S7", "S8"]
    assert digests(root) == reference


def test_a_worker_with_another_engine_or_library_is_refused_before_any_work(monkeypatch, tmp_path):
    real = executors.engine_fingerprint()
    monkeypatch.setattr(executors, "engine_fingerprint", lambda: {**real, "polars": "0.0.1"})
    with pytest.raises(EngineError) as err, DaskExecutor(workers=1):
        pass
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("dask worker tcp://") and ": polars: polars version " in message
    assert message.endswith("where the driver has 0.0.1")


def test_a_task_checks_the_engine_it_runs_against_the_drivers():
    other = {**executors.engine_fingerprint(), "engine": "0" * 64}
    with pytest.raises(EngineError, match="engine: engine code digest .* where the driver has 000000000000"):
        executors.run_checked(other, "day_buckets", {})


def test_a_replay_runs_on_the_same_cluster_with_the_local_bytes(world, executor, tmp_path):
    """The lane's replay (engine/replay.py) on the lane's executor: the child joins the cluster by
    its scheduler's address and publishes the local run's bytes."""
    from engine.pipeline import run_report_path
    from engine.replay import finish_replay, output_digests, start_replay

    tmp, pol, _ = world
    ex, _ = executor
    ctx = Pipeline(SEED, tmp / "local", pol).ctx  # the identity only: nothing runs
    replayed = finish_replay(start_replay(SEED, tmp_path / "scratch", pol, executor=ex))
    assert replayed.error is None and replayed.digests == output_digests(tmp / "local", ctx)
    report = json.loads(run_report_path(tmp_path / "scratch", ctx).read_text())
    assert {s["report"]["executor"]["executor"] for s in report["stages"] if "executor" in s["report"]} == {"dask"}


class _Future:
    def __init__(self, key: str, status: str, exc: Exception | None = None):
        self.key, self.status, self._exc = key, status, exc

    def result(self):
        if self._exc:
            raise self._exc
        return "done"


def test_a_killed_shard_names_the_shards_failed_with_it():
    """A worker's death counts against every task queued on it, so the shard the driver waits on
    first may be a bystander: the message names every shard of the stage the scheduler failed."""
    from distributed.scheduler import KilledWorker

    waited = _Future("seg2b-S5-shard-0", "error", KilledWorker("seg2b-S5-shard-0", "tcp://w", 1))
    siblings = {0: waited, 1: _Future("seg2b-S5-shard-1", "pending"), 2: _Future("seg2b-S5-shard-2", "error")}
    with pytest.raises(EngineError) as err:
        DaskExecutor.__new__(DaskExecutor)._result(waited, "S5 shard 0 (merchant_id 0..9)", {"waited": 0.0}, siblings)
    message = str(err.value)
    assert message.startswith("S5 shard 0 (merchant_id 0..9): dask worker: the task killed 2 workers in a row")
    assert "shards failed with it: 2 (Dask cannot tell which one killed)" in message and "\n" not in message
