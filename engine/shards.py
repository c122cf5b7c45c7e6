"""Merchant shards: how a big run stays inside a fixed memory budget.

Every draw of the roster and of S3..S6 is keyed by merchant_id, and every check of S7's per-merchant
part looks at one merchant at a time, so those stages can run over contiguous ranges of merchant
ids one range at a time (ARCHITECTURE.md: a state is a pure function over tables; here the
pipeline hands it one shard of the tables). Three pieces make that work without changing a byte
of any output:

* `ShardPlan`  - the ranges: every `per_shard` merchants (ascending id) start a shard; the first
  range starts at 0 and the last ends at 2^64 - 1, so every row of every table is in exactly one.
* `ShardReader` - one shard of a published big table. Tables in merchant order are read by row
  group (an index of each row group's first and last merchant_id); the roster, which is in time
  order, is split once into per-shard Arrow IPC spill files.
* `TableWriter` / `TimeOrderWriter` - a big output written as its shards arrive, in row groups of
  exactly ROW_GROUP rows whatever the shard sizes, so the file bytes do not depend on the plan.
  The roster is spilled per shard and day, then merged back into global time order a few days at
  a time.

Shard outputs are checked for contract order inside each shard and across shard boundaries.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from . import contracts
from .errors import EngineError
from .identity import file_sha256
from .publish import PARTITION_META, Staged, temp_path

ROW_GROUP = 1 << 20  # rows per Parquet row group, as parquet_bytes writes them
MERGE_ROWS = 1 << 21  # rows per bucket of days when the roster is merged back into time order
DEFAULT_SHARD_MERCHANTS = 2048
MAX_MERCHANT_ID = (1 << 64) - 1

# Tables that grow with arrivals or merchant-days: read and written one shard at a time.
SHARDED_TABLES = frozenset({
    "s5_arrival_roster", "s3_day_effects", "s4_group_weights",
    "rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_event_cdn_edge_pick",
    "s5_selection_log", "s6_edge_log",
})


@dataclass(frozen=True)
class ShardPlan:
    lows: np.ndarray  # first merchant_id of each shard (uint64, ascending, lows[0] == 0)

    @classmethod
    def of(cls, merchant_ids, per_shard: int) -> ShardPlan:
        if per_shard < 1:
            raise EngineError("--shard-merchants", str(per_shard), "a shard holds at least one merchant")
        mids = np.unique(np.asarray(merchant_ids, dtype=np.uint64))
        lows = mids[::per_shard].copy()
        if lows.size == 0:
            lows = np.zeros(1, dtype=np.uint64)
        lows[0] = 0
        return cls(lows)

    def __len__(self) -> int:
        return int(self.lows.size)

    def bounds(self, k: int) -> tuple[int, int]:
        """Inclusive merchant_id range of shard k."""
        hi = int(self.lows[k + 1]) - 1 if k + 1 < len(self) else MAX_MERCHANT_ID
        return int(self.lows[k]), hi

    def shard_of(self, merchant_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.lows, np.asarray(merchant_ids, dtype=np.uint64), side="right") - 1

    def restrict(self, value, k: int):
        """The rows of shard k of a table keyed by merchant_id; any other value unchanged."""
        if len(self) == 1 or not isinstance(value, pl.DataFrame) or "merchant_id" not in value.columns:
            return value
        lo, hi = self.bounds(k)
        return value.filter(pl.col("merchant_id").cast(pl.UInt64).is_between(lo, hi))


# ---------------------------------------------------------------------------------------------
# reading


class ShardReader:
    """Shard k of a published big table, in its file order."""

    def __init__(self, dataset_id: str, path: Path, plan: ShardPlan, scratch: Path):
        self.dataset_id, self.path, self.plan, self.scratch = dataset_id, Path(path), plan, Path(scratch)
        self.schema = contracts.get(dataset_id).schema
        self.merchant_major = contracts.get(dataset_id).order[:1] == ("merchant_id",)
        self._index: tuple[np.ndarray, np.ndarray] | None = None
        self._spills: list[Path] | None = None

    def read(self, k: int) -> pl.DataFrame:
        if len(self.plan) == 1:
            return pl.read_parquet(self.path)
        if self.merchant_major:
            return self._read_range(k)
        return self._read_spill(k)

    def _row_group_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            pf = pq.ParquetFile(self.path)
            first, last = [], []
            for i in range(pf.num_row_groups):
                col = pf.read_row_group(i, columns=["merchant_id"]).column(0)
                if len(col):
                    first.append(col[0].as_py())
                    last.append(col[-1].as_py())
                else:
                    first.append(MAX_MERCHANT_ID)
                    last.append(0)
            self._index = (np.array(first, dtype=np.uint64), np.array(last, dtype=np.uint64))
        return self._index

    def _read_range(self, k: int) -> pl.DataFrame:
        lo, hi = self.plan.bounds(k)
        first, last = self._row_group_index()
        groups = np.flatnonzero((last >= np.uint64(lo)) & (first <= np.uint64(hi))).tolist()
        if not groups:
            return pl.DataFrame(schema=pl.from_arrow(self.schema.empty_table()).schema)
        table = pq.ParquetFile(self.path).read_row_groups(groups)
        return pl.from_arrow(table).filter(pl.col("merchant_id").is_between(lo, hi))

    def _split(self) -> list[Path]:
        """One pass over a table not in merchant order: each batch's rows go to their shard's spill."""
        folder = self.scratch / f"{self.dataset_id}-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        paths = [folder / f"shard-{k:05d}.arrow" for k in range(len(self.plan))]
        writers: dict[int, ipc.RecordBatchFileWriter] = {}
        try:
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=ROW_GROUP):
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)
                shard = self.plan.shard_of(batch.column("merchant_id").to_numpy())
                order = np.argsort(shard, kind="stable")
                shard = shard[order]
                grouped = batch.take(pa.array(order))
                starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]]) if shard.size else np.zeros(0, int)
                ends = np.r_[starts[1:], shard.size]
                for a, b in zip(starts.tolist(), ends.tolist()):
                    k = int(shard[a])
                    if k not in writers:
                        writers[k] = ipc.new_file(paths[k], self.schema)
                    writers[k].write_batch(grouped.slice(a, b - a))
        finally:
            for w in writers.values():
                w.close()
        return paths

    def _read_spill(self, k: int) -> pl.DataFrame:
        if self._spills is None:
            self._spills = self._split()
        path = self._spills[k]
        if not path.exists():
            return pl.from_arrow(self.schema.empty_table())
        with ipc.open_file(path) as reader:
            table = reader.read_all()
        path.unlink()  # each shard is read once
        return pl.from_arrow(table)


# ---------------------------------------------------------------------------------------------
# writing


class TableWriter:
    """A contract table streamed into a temporary file (the run's workspace, else next to its target), in fixed row groups."""

    def __init__(self, dataset_id: str, target: Path, partition: str, workspace: Path | None = None):
        self.dataset_id = dataset_id
        self.target = Path(target)
        if workspace is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.target, workspace)
        ds = contracts.get(dataset_id)
        self.keys = list(ds.order)
        self.schema = ds.schema.with_metadata({PARTITION_META: partition.encode()})
        # The same settings as publish.parquet_bytes: one law for the bytes of a table.
        try:
            self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", compression_level=3,
                                            write_statistics=False)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._last: pl.DataFrame | None = None
        self.rows = 0

    def append(self, df: pl.DataFrame) -> None:
        contracts.check_key_order(self.dataset_id, df)
        if df.height and self._last is not None and self.keys:
            # Each shard is in order; the seam between two shards must be too.
            contracts.check_key_order(self.dataset_id, pl.concat([self._last, df.head(1).select(self.keys)]))
        table = contracts.conform(self.dataset_id, df)
        if df.height and self.keys:
            self._last = df.tail(1).select(self.keys)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while self._pending_rows >= ROW_GROUP or (final and self._pending_rows):
            table = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
            take = min(ROW_GROUP, table.num_rows)
            # One contiguous chunk per row group: page boundaries then depend on the rows alone.
            self._writer.write_table(table.slice(0, take).combine_chunks().replace_schema_metadata(self.schema.metadata),
                                     row_group_size=ROW_GROUP)
            rest = table.slice(take)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows -= take

    def close(self) -> Staged:
        """The finished file, staged for publishing; on any failure (a full disk at the last row
        group, say) the temporary file is removed before the error propagates."""
        try:
            if self.rows == 0:
                self._writer.write_table(self.schema.empty_table())
            self._flush(final=True)
            self._writer.close()
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            return Staged(self.tmp, file_sha256(self.tmp), self.rows)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already failing; the temp file goes either way
            pass
        self.tmp.unlink(missing_ok=True)


class TimeOrderWriter:
    """The roster: shards arrive in merchant order, each in (utc_timestamp, merchant_id) order.

    A single shard is written as it is. With several, each is spilled with one Arrow batch per
    utc_day; at close, buckets of consecutive days (about MERGE_ROWS rows) are gathered from every
    spill, sorted, and streamed to the table writer, so memory holds one bucket, never the roster.
    """

    def __init__(self, dataset_id: str, target: Path, partition: str, scratch: Path, workspace: Path | None = None):
        self.dataset_id = dataset_id
        self.out = TableWriter(dataset_id, target, partition, workspace)
        self.scratch = Path(scratch) / f"{dataset_id}-merge-{uuid.uuid4().hex[:12]}"
        self.keys = list(contracts.get(dataset_id).order)
        self._held: pl.DataFrame | None = None
        self._spills: list[tuple[Path, dict[str, int]]] = []
        self._day_rows: dict[str, int] = {}

    def append(self, df: pl.DataFrame) -> None:
        contracts.check_key_order(self.dataset_id, df)
        if self._held is None and not self._spills:
            self._held = df
            return
        if self._held is not None:
            self._spill(self._held)
            self._held = None
        self._spill(df)

    def _spill(self, df: pl.DataFrame) -> None:
        table = contracts.conform(self.dataset_id, df)
        runs = df.select(pl.col("utc_day")).with_row_index("i").group_by("utc_day", maintain_order=True).agg(
            pl.col("i").first().alias("start"), pl.len().alias("n"))
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.scratch / f"shard-{len(self._spills):05d}.arrow"
        batches: dict[str, int] = {}
        with ipc.new_file(path, table.schema) as writer:
            for b, (day, start, n) in enumerate(runs.iter_rows()):
                writer.write_table(table.slice(start, n).combine_chunks(), max_chunksize=n or 1)
                batches[day] = b
                self._day_rows[day] = self._day_rows.get(day, 0) + n
        self._spills.append((path, batches))

    def close(self) -> Staged:
        try:
            if self._held is not None:
                self.out.append(self._held)
            elif self._spills:
                self._merge()
            return self.out.close()
        except BaseException:
            self.out.abort()
            raise
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _merge(self) -> None:
        days = sorted(self._day_rows)
        sources = [pa.memory_map(str(path)) for path, _ in self._spills]
        readers = [(ipc.open_file(src), batches) for src, (_, batches) in zip(sources, self._spills)]
        try:
            bucket: list[str] = []
            rows = 0
            for i, day in enumerate(days):
                bucket.append(day)
                rows += self._day_rows[day]
                if rows >= MERGE_ROWS or i == len(days) - 1:
                    parts = [r.get_batch(b[d]) for r, b in readers for d in bucket if d in b]
                    merged = pl.from_arrow(pa.Table.from_batches(parts)).sort(self.keys)
                    self.out.append(merged)
                    bucket, rows = [], 0
        finally:
            for src in sources:
                src.close()

    def abort(self) -> None:
        self.out.abort()
        shutil.rmtree(self.scratch, ignore_errors=True)


def writer_for(dataset_id: str, target: Path, partition: str, scratch: Path, workspace: Path | None = None):
    """The streamed writer of a big table; its staged file goes to `workspace` (else next to `target`)."""
    if contracts.get(dataset_id).order[:1] == ("merchant_id",):
        return TableWriter(dataset_id, target, partition, workspace)
    return TimeOrderWriter(dataset_id, target, partition, scratch, workspace)


# ---------------------------------------------------------------------------------------------
# merging what shards report


def run_whole(run_shard, finish, inputs: dict, policies: dict, ctx) -> dict:
    """A sharded state over all its inputs at once: the one-shard case of the pipeline's loop."""
    out = dict(run_shard(inputs, policies, ctx))
    part = out.pop("_part")
    return out | finish(inputs, policies, ctx, [part])


def merge_reports(parts: list[dict], same: tuple[str, ...] = (), maxed: tuple[str, ...] = ()) -> dict:
    """One report from shard reports: numbers summed, `maxed` keys maximised, `same` keys kept."""
    if not parts:
        return {}
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts if key in p]
        if key in same:
            out[key] = values[0]
        elif key in maxed:
            out[key] = max(values)
        else:
            out[key] = sum(values)
    return out


def merge_traces(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """An RNG trace of several shards: totals summed per substream, the first counter of the first
    shard with events and the last counter of the last one (shards come in merchant order)."""
    if len(frames) == 1:
        return frames[0]
    both = pl.concat(frames).filter(pl.col("events") > 0)
    key = ["module", "substream_label"]
    merged = both.group_by(key, maintain_order=True).agg(
        pl.col("events", "draws", "blocks").sum(),
        pl.col("first_counter_hi", "first_counter_lo").first(),
        pl.col("last_counter_hi", "last_counter_lo").last(),
    )
    # Substreams that drew nothing anywhere keep their all-zero row, in the first shard's order.
    template = frames[0].select(key)
    return template.join(merged, on=key, how="left", maintain_order="left").with_columns(
        pl.col(c).fill_null(0) for c in frames[0].columns[2:]).select(frames[0].columns).cast(frames[0].schema)
