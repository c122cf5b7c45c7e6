"""Progress hooks (engine/progress.py): what a watcher of a run is told, and in which order."""

from __future__ import annotations

import pytest

from engine.pipeline import STAGES, Pipeline
from engine.progress import CallbackProgress, NoProgress, ProgressHooks, StageProgress, hooks_of
from tests.helpers import small_policies


class Recorder:
    def __init__(self):
        self.events: list[tuple] = []

    def stage_started(self, seed, stage):
        self.events.append(("start", seed, stage))

    def stage_finished(self, seed, stage, record):
        self.events.append(("finish", seed, stage, record.name, record.status))

    def shards_done(self, seed, stage, done, total):
        self.events.append(("shards", seed, stage, done, total))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress")
    hooks = Recorder()
    # Shards of 5 merchants: every sharded stage of the 24-merchant world runs several.
    result = Pipeline(3, tmp / "runs", small_policies(tmp), progress=hooks, shard_merchants=5).run()
    return hooks.events, result


def test_every_stage_starts_then_finishes_in_order(recorded):
    events, result = recorded
    ends = [e for e in events if e[0] != "shards"]
    names = [s.name for s in STAGES]
    assert ends == [ev for s in names for ev in (("start", 3, s), ("finish", 3, s, s, "ran"))]
    assert [r.name for r in result.stages] == names


def test_sharded_stages_report_each_shard_between_their_start_and_finish(recorded):
    events, _ = recorded
    for stage in STAGES:
        start = events.index(("start", 3, stage.name))
        finish = next(i for i, e in enumerate(events) if e[0] == "finish" and e[2] == stage.name)
        shards = [e for e in events[start:finish] if e[0] == "shards"]
        assert all(e[2] == stage.name for e in shards)
        if stage.sharded:
            total = shards[-1][4]
            assert total > 1 and [e[3] for e in shards] == list(range(1, total + 1))
        else:
            assert shards == []


def test_a_skipped_stage_is_reported_too(recorded, tmp_path):
    _, result = recorded
    hooks = Recorder()
    Pipeline(3, result.runs_root, result.policy_dir, progress=hooks, shard_merchants=5).run(until="S1")
    assert [e[4] for e in hooks.events if e[0] == "finish"] == ["skipped"] * 4
    assert not [e for e in hooks.events if e[0] == "shards"]  # a skipped stage computes no shard


def test_hooks_of_adapts_what_callers_pass():
    assert isinstance(hooks_of(None), NoProgress)
    rec = Recorder()
    assert hooks_of(rec) is rec and isinstance(rec, ProgressHooks)
    assert isinstance(hooks_of(StageProgress(quiet=True)), StageProgress)
    seen = []
    adapted = hooks_of(lambda seed, stage, what: seen.append((seed, stage, what)))
    assert isinstance(adapted, CallbackProgress)
    adapted.stage_started(1, "S1")
    adapted.stage_finished(1, "S1", "rec")
    adapted.shards_done(1, "S1", 1, 2)  # a plain callable has no `shards`: nothing to tell
    assert seen == [(1, "S1", "start"), (1, "S1", "rec")]
    with pytest.raises(TypeError):
        hooks_of(42)


def test_the_printer_writes_one_line_per_stage(capsys):
    from engine.pipeline import StageRecord

    printer = StageProgress()
    printer.live = False  # as under pytest: no terminal
    printer.stage_started(5, "S3")
    printer.shards_done(5, "S3", 1, 4)
    printer.stage_finished(5, "S3", StageRecord("S3", "ran", 1.5, {"s3_day_effects": 1200},
                                                report={"executor": {"executor": "local", "shards": 4}}))
    err = capsys.readouterr().err
    assert err.splitlines() == ["seed 5 S3      ran        1.500 s  s3_day_effects=1,200  [local: 4 shards]"]
    StageProgress(quiet=True).stage_finished(5, "S3", StageRecord("S3", "ran", 1.0))
    assert capsys.readouterr().err == ""
