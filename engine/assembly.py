"""A big output assembled from shard spills: what the Dask executor (engine/executors.py) does
with the shard results that come back from its workers.

A shard task spills its streamed outputs (engine/shards.py, spills); the driver adopts the spills
in shard order (`SpilledTable`), checking the seams as `shards.TableWriter` does, and each complete
row group becomes an encoding task (`encode_rows`) whose Parquet piece holds the pages TableWriter
would write for the same rows; the pieces are joined into one file (engine/parquet_join.py). The
roster, in time order, is first merged back a bucket of days at a time (`sort_bucket`). Small
inputs are cut per shard once (`split_small`).

Constants and spill helpers are read from engine.shards at call time (`shards.ROW_GROUP`), so a
test that shrinks the row group there shrinks it here too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from . import contracts, shards
from .errors import EngineError
from .parquet_join import join_files
from .publish import PARTITION_META, Staged, temp_path


def encode_rows(dataset_id: str, partition: str, slices: list[tuple[Path, int, int]], out: Path) -> int:
    """Rows gathered from spills (path, first row, rows) as one Parquet piece of whole row groups:
    the pages TableWriter writes for the same rows at a row-group boundary. Returns the rows."""
    schema = contracts.get(dataset_id).schema.with_metadata({PARTITION_META: partition.encode()})
    tables = [shards.read_spill_rows(path, start, n) for path, start, n in slices]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    tmp = shards._scratch_tmp(Path(out))
    try:
        writer = shards.parquet_writer(tmp, schema, dataset_id)
        try:
            if table.num_rows == 0:
                writer.write_table(schema.empty_table())  # as TableWriter.close writes an empty table
            for a in range(0, table.num_rows, shards.ROW_GROUP):
                shards.write_row_group(writer, table.slice(a, shards.ROW_GROUP), schema)
        finally:
            writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return table.num_rows


class SpilledTable:
    """A merchant-major output assembled from spills that arrive in order (shards, or sorted
    buckets of the roster): the seams are checked as TableWriter checks them, and every complete
    row group becomes an encoding job (dataset id, partition, slices, piece path) as soon as its
    rows are known. `close` joins the encoded pieces into one staged file."""

    def __init__(self, dataset_id: str, partition: str, scratch: Path, tag: str = ""):
        self.dataset_id, self.partition, self.scratch = dataset_id, partition, Path(scratch)
        self.keys = list(contracts.get(dataset_id).order)
        self.tag = tag or dataset_id
        self._last: pl.DataFrame | None = None
        self._open: list[tuple[Path, int, int]] = []  # spill slices not yet in a job
        self._open_rows = 0
        self.rows = 0
        self.pieces: list[Path] = []

    def adopt(self, path: Path, rows: int, first: pl.DataFrame | None, last: pl.DataFrame | None) -> list[tuple]:
        if rows and self._last is not None and self.keys:
            contracts.check_key_order(self.dataset_id, pl.concat([self._last, first]))
        if rows and self.keys:
            self._last = last
        self.rows += rows
        jobs = []
        start = 0
        while rows:
            take = min(rows, shards.ROW_GROUP - self._open_rows)
            self._open.append((Path(path), start, take))
            self._open_rows += take
            start += take
            rows -= take
            if self._open_rows == shards.ROW_GROUP:
                jobs.append(self._job())
        return jobs

    def rest(self) -> list[tuple]:
        """The last, partial row group (or the empty table when no shard had rows)."""
        return [self._job()] if self._open or not self.pieces else []

    def _job(self) -> tuple:
        out = self.scratch / f"{self.tag}-rg-{len(self.pieces):06d}.parquet"
        job = (self.dataset_id, self.partition, self._open, out)
        self.pieces.append(out)
        self._open, self._open_rows = [], 0
        return job

    def close(self, workspace: Path, target: Path) -> Staged:
        tmp = temp_path(Path(target), workspace)
        try:
            sha = join_files(self.pieces, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Staged(tmp, sha, self.rows)


def spill_shard_output(dataset_id: str, df: pl.DataFrame, path: Path) -> dict:
    """One shard's rows of a streamed output checked and spilled as its writer would take them:
    key order inside the shard, the contract's schema; what the driver needs to adopt it."""
    contracts.check_key_order(dataset_id, df)
    keys = list(contracts.get(dataset_id).order)
    if contracts.get(dataset_id).order[:1] != ("merchant_id",):
        batches, day_rows = shards.spill_by_day(path, dataset_id, df)
        return {"path": path, "rows": df.height, "batches": batches, "day_rows": day_rows}
    shards.spill_table(path, contracts.conform(dataset_id, df))
    return {"path": path, "rows": df.height,
            "first": df.head(1).select(keys) if df.height else None, "last": df.tail(1).select(keys) if df.height else None}


def sort_bucket(dataset_id: str, spills: list[tuple[Path, dict[str, int]]], bucket: list[str], path: Path) -> dict:
    """A merge step of a time-ordered output, as a task: the bucket's rows sorted and spilled."""
    keys = list(contracts.get(dataset_id).order)
    merged = shards.merge_bucket(spills, bucket, keys)
    contracts.check_key_order(dataset_id, merged)
    shards.spill_table(path, contracts.conform(dataset_id, merged))
    return {"path": path, "rows": merged.height, "first": merged.head(1).select(keys) if merged.height else None,
            "last": merged.tail(1).select(keys) if merged.height else None}


def split_small(inputs: dict, plan: shards.ShardPlan) -> tuple[dict, SmallPieces]:
    """Small inputs cut for every shard: (values every shard sees whole, the per-shard values,
    pieces[k]). The same rows, in the same order, as plan.restrict(value, k), without a scan per
    shard: a table in merchant order (every small table the engine writes) is sliced where each
    shard starts, with no copy; any other is partitioned once."""
    shared, cuts = {}, {}
    for d, v in inputs.items():
        if len(plan) == 1 or not isinstance(v, pl.DataFrame) or "merchant_id" not in v.columns:
            shared[d] = v
            continue
        mid = v["merchant_id"].cast(pl.UInt64)
        if mid.is_sorted():
            starts = np.searchsorted(mid.to_numpy(), plan.lows, side="left").tolist() + [v.height]
            cuts[d] = (v, starts)
        else:
            k = pl.Series("_shard", plan.shard_of(mid.to_numpy()), dtype=pl.Int64)
            groups = v.with_columns(k).partition_by("_shard", maintain_order=True, as_dict=True, include_key=False)
            cuts[d] = ({key[0]: g for key, g in groups.items()}, v.clear())
    return shared, SmallPieces(cuts)


class SmallPieces:
    def __init__(self, cuts: dict):
        self._cuts = cuts

    def __getitem__(self, k: int) -> dict:
        out = {}
        for d, (v, how) in self._cuts.items():
            if isinstance(v, pl.DataFrame):
                out[d] = v.slice(how[k], how[k + 1] - how[k])
            else:
                out[d] = v.get(k, how)
        return out


# ---------------------------------------------------------------------------------------------
# what every executor checks of the shard outputs it adopts


def check_streamed(stage: str, writes, names) -> None:
    for d in names:
        if d not in shards.SHARDED_TABLES or d not in writes:
            raise EngineError(stage, d, "a shard returned an output that is not a streamed table")


def check_same_outputs(stage: str, known: set[str] | None, names: set[str]) -> None:
    """Every shard returns the same streamed outputs as the first."""
    if known is None:
        return
    late = names - known
    if late:
        raise EngineError(stage, sorted(late)[0], "an output appeared in a later shard only")
    if names != known:
        raise EngineError(stage, ",".join(sorted(known ^ names)), "a shard left out an output")


def discard_staged(outputs: dict) -> None:
    for value in outputs.values():
        if isinstance(value, Staged):
            Path(value.path).unlink(missing_ok=True)
