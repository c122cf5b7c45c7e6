"""Merchant shards (engine/shards.py): plans, streamed writers, shard readers, staged publish, and
the property that matters: outputs do not depend on how the merchants were sharded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import assembly, shards
from engine.errors import EngineError, PublishConflict
from engine.identity import file_sha256, sha256_hex
from engine.publish import IDENTICAL, WRITTEN, Staged, parquet_bytes, publish_group, temp_sibling
from engine.shards import (
    MAX_MERCHANT_ID,
    ShardPlan,
    ShardReader,
    TableWriter,
    merge_reports,
    merge_traces,
)

PARTITION = "seed=1/manifest_fingerprint=ab"


def s4_rows(n_merchants: int, days: int = 3) -> pl.DataFrame:
    """A small s4_group_weights table in contract order (merchant, day, group)."""
    mid = np.repeat(np.arange(1, n_merchants + 1, dtype=np.uint64) * 7, days * 2)
    day = np.tile(np.repeat([f"2026-01-0{d + 1}" for d in range(days)], 2), n_merchants)
    tz = np.tile(["Europe/Paris", "UTC"], n_merchants * days)
    n = mid.size
    x = np.linspace(0.1, 0.9, n)
    return pl.DataFrame({
        "merchant_id": mid, "utc_day": day, "tz_group_id": tz, "p_group": x, "base_share": x, "gamma": x + 1,
        "mass_raw": x, "denom_raw": x, "regularizer_applied": np.zeros(n, bool), "regularizer_delta_mass": x * 0,
        "created_utc": ["2026-01-01T00:00:00.000000Z"] * n,
    })


def roster_rows(n_merchants: int, per_merchant: int = 5, seed: int = 3) -> pl.DataFrame:
    """A small roster in contract order (utc_timestamp, merchant_id), spread over a few days."""
    rng = np.random.default_rng(seed)
    mid = np.repeat(np.arange(1, n_merchants + 1, dtype=np.uint64) * 11, per_merchant)
    day = rng.integers(1, 4, mid.size)
    sec = rng.integers(0, 86_400, mid.size)
    ts = [f"2026-01-0{d}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{i:06d}Z" for i, (d, s) in enumerate(zip(day, sec))]
    return pl.DataFrame({
        "merchant_id": mid, "utc_timestamp": ts, "utc_day": [t[:10] for t in ts], "is_virtual": np.zeros(mid.size, bool),
        "merchant_class": ["grocery"] * mid.size, "channel": ["card_present"] * mid.size,
    }).sort("utc_timestamp", "merchant_id")


def write(dataset_id: str, pieces: list[pl.DataFrame], target: Path, tmp: Path) -> Staged:
    w = shards.writer_for(dataset_id, target, PARTITION, tmp / "scratch")
    for p in pieces:
        w.append(p)
    return w.close()


def split_by_merchant(df: pl.DataFrame, cuts: list[int]) -> list[pl.DataFrame]:
    plan = ShardPlan(np.array([0, *cuts], dtype=np.uint64))
    return [plan.restrict(df, k) for k in range(len(plan))]


# -- plan --------------------------------------------------------------------------------------


def test_plan_ranges_cover_every_merchant_id_once():
    plan = ShardPlan.of(np.array([50, 10, 30, 20, 40], dtype=np.uint64), per_shard=2)
    assert [plan.bounds(k) for k in range(len(plan))] == [(0, 29), (30, 49), (50, MAX_MERCHANT_ID)]


def test_plan_shard_of_matches_bounds():
    plan = ShardPlan.of(np.arange(100, dtype=np.uint64) * 3, per_shard=7)
    ids = np.arange(0, 400, dtype=np.uint64)
    k = plan.shard_of(ids)
    lo = np.array([plan.bounds(i)[0] for i in k], dtype=np.uint64)
    hi = np.array([plan.bounds(i)[1] for i in k], dtype=np.uint64)
    assert bool(((lo <= ids) & (ids <= hi)).all())


def test_plan_refuses_empty_shards():
    with pytest.raises(EngineError, match="at least one merchant"):
        ShardPlan.of(np.arange(5, dtype=np.uint64), per_shard=0)


# -- writers -----------------------------------------------------------------------------------


@pytest.fixture
def small_row_groups(monkeypatch):
    monkeypatch.setattr(shards, "ROW_GROUP", 100)
    monkeypatch.setattr(shards, "MERGE_ROWS", 150)


def test_one_piece_writes_the_bytes_of_parquet_bytes(tmp_path):
    df = s4_rows(40)
    from engine.contracts import conform, get

    staged = write("s4_group_weights", [df], tmp_path / "out.parquet", tmp_path)
    settings = get("s4_group_weights").parquet
    assert staged.sha256 == sha256_hex(parquet_bytes(conform("s4_group_weights", df), PARTITION, settings))
    assert staged.rows == df.height


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 300), max_size=6, unique=True))
def test_writer_bytes_do_not_depend_on_the_pieces(tmp_path_factory, cuts):
    # ROW_GROUP is patched by hand here: hypothesis and function-scoped fixtures don't mix.
    old = shards.ROW_GROUP
    shards.ROW_GROUP = 100
    try:
        tmp = tmp_path_factory.mktemp("pieces")
        df = s4_rows(60)
        whole = write("s4_group_weights", [df], tmp / "a.parquet", tmp)
        parts = write("s4_group_weights", split_by_merchant(df, sorted(c * 7 for c in cuts)), tmp / "b.parquet", tmp)
        assert whole.sha256 == parts.sha256
    finally:
        shards.ROW_GROUP = old


def test_seam_out_of_order_names_the_dataset(tmp_path):
    df = s4_rows(10)
    a, b = split_by_merchant(df, [7 * 5])
    with pytest.raises(EngineError, match="s4_group_weights.*not sorted"):
        write("s4_group_weights", [b, a], tmp_path / "x.parquet", tmp_path)


def test_seam_duplicate_key_is_refused(tmp_path):
    df = s4_rows(4)
    with pytest.raises(EngineError, match="duplicate primary key"):
        write("s4_group_weights", [df.head(3), df.slice(2, 5)], tmp_path / "x.parquet", tmp_path)


def test_roster_shards_merge_back_into_time_order(tmp_path, small_row_groups):
    df = roster_rows(40)
    whole = write("s5_arrival_roster", [df], tmp_path / "a.parquet", tmp_path)
    parts = write("s5_arrival_roster", split_by_merchant(df, [11 * 9, 11 * 25]), tmp_path / "b.parquet", tmp_path)
    assert whole.sha256 == parts.sha256
    assert pl.read_parquet(parts.path).equals(df)
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())


def test_abort_leaves_no_temporary_file(tmp_path):
    w = TableWriter("s4_group_weights", tmp_path / "out.parquet", PARTITION)
    w.append(s4_rows(3))
    w.abort()
    assert list(tmp_path.iterdir()) == []


# -- readers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset_id,frame", [("s4_group_weights", s4_rows(50)), ("s5_arrival_roster", roster_rows(50))])
def test_reader_gives_each_shard_its_rows_in_file_order(tmp_path, small_row_groups, dataset_id, frame):
    staged = write(dataset_id, [frame], tmp_path / "t.parquet", tmp_path)
    plan = ShardPlan.of(frame["merchant_id"].unique().to_numpy(), per_shard=9)
    reader = ShardReader(dataset_id, staged.path, plan, tmp_path / "scratch")
    got = [reader.read(k) for k in range(len(plan))]
    assert all(g.equals(plan.restrict(frame, k)) for k, g in enumerate(got))
    assert sum(g.height for g in got) == frame.height
    # A worker may get its shards in any order: rows kept from one shard's row group for the
    # next are only used by a shard above it.
    for k in [3, 1, 2, 0, 5, 4, 4]:
        assert reader.read(k).equals(got[k])


# -- staged publish ----------------------------------------------------------------------------


def staged_file(target: Path, data: bytes) -> Staged:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    tmp.write_bytes(data)
    return Staged(tmp, file_sha256(tmp))


def test_staged_publish_writes_then_is_identical(tmp_path):
    target = tmp_path / "d" / "part.parquet"
    assert publish_group([(target, staged_file(target, b"abc"))]) == [WRITTEN]
    assert publish_group([(target, staged_file(target, b"abc"))]) == [IDENTICAL]
    assert sorted(p.name for p in target.parent.iterdir()) == ["part.parquet"]


def test_staged_publish_conflict_aborts_and_cleans_up(tmp_path):
    target = tmp_path / "d" / "part.parquet"
    publish_group([(target, staged_file(target, b"abc"))])
    with pytest.raises(PublishConflict):
        publish_group([(target, staged_file(target, b"abd"))])
    assert target.read_bytes() == b"abc"
    assert sorted(p.name for p in target.parent.iterdir()) == ["part.parquet"]


# -- merging what shards report -----------------------------------------------------------------


def trace(rows):
    from engine.states.s5_router import TRACE_SCHEMA

    return pl.DataFrame(rows, schema=TRACE_SCHEMA, orient="row")


def test_merge_traces_sums_totals_and_keeps_outer_counters():
    a = trace([("m", "g", 3, 3, 3, 5, 0, 5, 3)])
    empty = trace([("m", "g", 0, 0, 0, 0, 0, 0, 0)])
    b = trace([("m", "g", 2, 2, 2, 9, 0, 9, 2)])
    assert merge_traces([a, empty, b]).row(0) == ("m", "g", 5, 5, 5, 5, 0, 9, 2)


def test_merge_traces_keeps_an_all_zero_substream():
    empty = trace([("m", "g", 0, 0, 0, 0, 0, 0, 0)])
    assert merge_traces([empty, empty]).row(0) == ("m", "g", 0, 0, 0, 0, 0, 0, 0)


def test_merge_reports_sums_maxes_and_keeps():
    parts = [{"rows": 2, "mode": "x", "max_lambda": 0.2}, {"rows": 3, "mode": "x", "max_lambda": 0.1}]
    assert merge_reports(parts, same=("mode",), maxed=("max_lambda",)) == {"rows": 5, "mode": "x", "max_lambda": 0.2}


# -- the whole pipeline -------------------------------------------------------------------------


def dataset_digests(root: Path) -> dict[str, str]:
    """Every published file of a runs root (receipts and run reports hold timings, not data)."""
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and "receipts" not in p.parts and "run_report" not in p.parts}


def test_sharded_run_publishes_the_same_bytes(fast_lane, tmp_path, monkeypatch):
    """Seed 42 of the default world in shards of 150 merchants (9 shards) against the fast lane's
    one-shard run: every dataset, log, card, audit report and bundle is byte-identical. The roster
    is never split: its consumers read the spills it was merged from."""
    from engine.pipeline import Pipeline

    monkeypatch.setattr(shards, "split_piece", lambda *a: pytest.fail("the roster was split again"))
    result = Pipeline(42, tmp_path / "runs", shard_merchants=150).run()
    assert {r.name: r.status for r in result.stages} == {name: "ran" for name in [r.name for r in result.stages]}
    assert dataset_digests(tmp_path / "runs") == dataset_digests(fast_lane.results[42].runs_root)


# -- spills and their adoption (the path a Dask run takes, here without Dask) --------------------


@pytest.fixture
def tiny_batches(monkeypatch):
    monkeypatch.setattr(shards, "SPILL_BATCH", 37)


def _split_setup(tmp_path, frame):
    staged = write("s5_arrival_roster", [frame], tmp_path / "t.parquet", tmp_path)
    plan = ShardPlan.of(frame["merchant_id"].unique().to_numpy(), per_shard=9)
    return staged, plan


def test_split_is_made_once_per_table_and_plan_and_reads_never_delete(tmp_path, small_row_groups, monkeypatch):
    frame = roster_rows(50)
    staged, plan = _split_setup(tmp_path, frame)
    calls = []
    real = shards.split_piece
    monkeypatch.setattr(shards, "split_piece", lambda *a: calls.append(a) or real(*a))
    first = ShardReader("s5_arrival_roster", staged.path, plan, tmp_path / "splits", staged.sha256)
    got = [first.read(k) for k in range(len(plan))]
    again = ShardReader("s5_arrival_roster", staged.path, plan, tmp_path / "splits", staged.sha256)
    for k in range(len(plan)):
        assert again.read(k).equals(got[k]) and first.read(k).equals(got[k])
    assert len(calls) == 1
    assert all(g.equals(plan.restrict(frame, k)) for k, g in enumerate(got))


def test_split_in_pieces_gives_the_same_shards(tmp_path, small_row_groups):
    frame = roster_rows(50)
    staged, plan = _split_setup(tmp_path, frame)
    reader = ShardReader("s5_arrival_roster", staged.path, plan, tmp_path / "splits")
    reader.prepare(pieces=3)
    assert len(reader.split().pieces) == 3
    assert all(reader.read(k).equals(plan.restrict(frame, k)) for k in range(len(plan)))


def test_a_missing_spill_is_an_error_never_an_empty_shard(tmp_path, small_row_groups):
    frame = roster_rows(50)
    staged, plan = _split_setup(tmp_path, frame)
    reader = ShardReader("s5_arrival_roster", staged.path, plan, tmp_path / "splits", staged.sha256)
    reader.prepare()
    for piece in reader.split_dir.glob("piece-*.arrow"):
        piece.unlink()
    later = ShardReader("s5_arrival_roster", staged.path, plan, tmp_path / "splits", staged.sha256)
    with pytest.raises(EngineError, match="scratch spill missing"):
        later.read(0)


def test_a_retried_spill_rewrites_the_same_bytes_and_leaves_no_temporary(tmp_path):
    frame = s4_rows(30)
    path = tmp_path / "s4-00000.arrow"
    first = assembly.spill_shard_output("s4_group_weights", frame, path)
    before = path.read_bytes()
    again = assembly.spill_shard_output("s4_group_weights", frame, path)
    assert path.read_bytes() == before
    assert first["rows"] == again["rows"] == frame.height
    assert [p.name for p in tmp_path.iterdir()] == ["s4-00000.arrow"]


def _adopted(dataset_id, pieces, tmp_path, name):
    """A table through the Dask path: shard spills, (for the roster) sorted buckets, row groups
    encoded one by one, joined."""
    scratch = tmp_path / f"scratch-{name}"
    scratch.mkdir()
    table = assembly.SpilledTable(dataset_id, PARTITION, scratch)
    jobs = []
    metas = [assembly.spill_shard_output(dataset_id, p, scratch / f"shard-{k}.arrow") for k, p in enumerate(pieces)]
    if "batches" in metas[0]:
        rows = {}
        for m in metas:
            for day, n in m["day_rows"].items():
                rows[day] = rows.get(day, 0) + n
        spills = [(m["path"], m["batches"]) for m in metas]
        metas = [assembly.sort_bucket(dataset_id, spills, bucket, scratch / f"bucket-{b}.arrow")
                 for b, bucket in enumerate(shards.day_buckets(rows))]
    for m in metas:
        jobs += table.adopt(m["path"], m["rows"], m["first"], m["last"])
    jobs += table.rest()
    for job in jobs:
        assembly.encode_rows(*job)
    return table.close(tmp_path, tmp_path / f"{name}.parquet")


@pytest.mark.parametrize("dataset_id,frame,cuts", [
    ("s4_group_weights", s4_rows(60), [7 * 11, 7 * 12, 7 * 40]),  # shards of 10, 1, 28, 21 merchants
    ("s4_group_weights", s4_rows(60), []),
    ("s4_group_weights", s4_rows(5).clear(), [7 * 3]),
    ("s5_arrival_roster", roster_rows(40), [11 * 9, 11 * 25]),
    ("s5_arrival_roster", roster_rows(40), []),
])
def test_spills_adopted_and_joined_are_the_writer_bytes(tmp_path, small_row_groups, tiny_batches, dataset_id, frame, cuts):
    whole = write(dataset_id, [frame], tmp_path / "whole.parquet", tmp_path)
    joined = _adopted(dataset_id, split_by_merchant(frame, cuts), tmp_path, "joined")
    assert joined.sha256 == whole.sha256 == file_sha256(joined.path)
    assert joined.rows == frame.height


def test_a_seam_out_of_order_is_refused_when_adopting(tmp_path):
    df = s4_rows(10)
    a, b = split_by_merchant(df, [7 * 5])
    with pytest.raises(EngineError, match="s4_group_weights.*not sorted"):
        _adopted("s4_group_weights", [b, a], tmp_path, "x")


@pytest.mark.parametrize("shuffled", [False, True])
def test_split_small_is_restrict_without_a_scan_per_shard(shuffled):
    frame = s4_rows(40)
    if shuffled:  # not in merchant order: partitioned once instead of sliced
        frame = frame.sample(fraction=1.0, shuffle=True, seed=3)
    plan = ShardPlan(np.array([0, 7 * 5, 7 * 6, 7 * 100], dtype=np.uint64))  # the last shard is empty
    shared, pieces = assembly.split_small({"s4": frame, "blob": b"x", "other": pl.DataFrame({"a": [1]})}, plan)
    assert set(shared) == {"blob", "other"}
    assert all(pieces[k]["s4"].equals(plan.restrict(frame, k)) for k in range(len(plan)))


def test_the_rosters_own_spills_become_its_split(tmp_path, small_row_groups, monkeypatch):
    """A run that writes the roster in shards keeps its shard spills as the split its consumers
    read: they find it by the file's digest and never split the file."""
    frame = roster_rows(50)
    plan = ShardPlan.of(frame["merchant_id"].unique().to_numpy(), per_shard=9)
    w = shards.writer_for("s5_arrival_roster", tmp_path / "r.parquet", PARTITION, tmp_path / "scratch")
    for k in range(len(plan)):
        w.append(plan.restrict(frame, k))
    staged = w.close(tmp_path / "splits", plan)
    monkeypatch.setattr(shards, "split_piece", lambda *a: pytest.fail("split again"))
    reader = ShardReader("s5_arrival_roster", staged.path, plan, tmp_path / "splits", staged.sha256)
    assert all(reader.read(k).equals(plan.restrict(frame, k)) for k in range(len(plan)))
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())


def test_kept_shard_spills_are_read_as_the_split_and_dropped_when_unread(tmp_path, tiny_batches):
    frame = s4_rows(60)
    plan = ShardPlan(np.array([0, 7 * 11, 7 * 12, 7 * 40], dtype=np.uint64))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    spills = [(assembly.spill_shard_output("s4_group_weights", plan.restrict(frame, k), scratch / f"s4-{k}.arrow")["path"], None)
              for k in range(len(plan))]
    folder = shards.split_folder(tmp_path / "splits", "s4_group_weights", "ab" * 32, plan)
    shards.keep_as_split(spills, folder)
    reader = ShardReader("s4_group_weights", tmp_path / "not-read.parquet", plan, tmp_path / "splits", "ab" * 32)
    reader.prepare()  # finds the split: no row-group index of a file that is not even there
    assert all(reader.read(k).equals(plan.restrict(frame, k)) for k in range(len(plan)))
    shards.drop_splits(tmp_path / "splits", keep={"s5_arrival_roster"})
    assert not folder.exists()
