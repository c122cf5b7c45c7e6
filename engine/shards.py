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
  order, is split once per run into Arrow IPC pieces that every consumer (S5, S6, S7) reads.
* spills - scratch Arrow IPC files written by temp + rename under deterministic names and never
  deleted by their readers, so a retried shard task rewrites the same bytes and a missing spill
  is an error, never an empty shard (engine/executors.py).
* `TableWriter` / `TimeOrderWriter` - a big output written as its shards arrive, in row groups of
  exactly ROW_GROUP rows whatever the shard sizes, so the file bytes do not depend on the plan.
  The roster is spilled per shard and day, then merged back into global time order a few days at
  a time.

Shard outputs are checked for contract order inside each shard and across shard boundaries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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
from .events import merge_traces  # noqa: F401 (the states take it from here until they import engine.events)
from .identity import file_sha256
from .publish import PARTITION_META, Staged, temp_path

ROW_GROUP = 1 << 20  # rows per Parquet row group, as parquet_bytes writes them
MERGE_ROWS = 1 << 21  # rows per bucket of days when the roster is merged back into time order
DEFAULT_SHARD_MERCHANTS = 2048
SPILL_BATCH = 1 << 16  # rows per Arrow batch of a spill: a slice of a spill decodes at most one batch more at each end
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

    def digest(self) -> str:
        return hashlib.sha256(self.lows.astype("<u8").tobytes()).hexdigest()

    def restrict(self, value, k: int):
        """The rows of shard k of a table keyed by merchant_id; any other value unchanged."""
        if len(self) == 1 or not isinstance(value, pl.DataFrame) or "merchant_id" not in value.columns:
            return value
        lo, hi = self.bounds(k)
        return value.filter(pl.col("merchant_id").cast(pl.UInt64).is_between(lo, hi))


# ---------------------------------------------------------------------------------------------
# reading


class ShardReader:
    """Shard k of a published big table, in its file order.

    `scratch` holds the run's splits of tables not in merchant order; with the table's `digest`
    the split's folder name is a function of the bytes and the plan, so the second consumer of
    the roster in a run (S6 after S5, S7 after S6) reads the first one's split instead of
    splitting again. Without a digest every reader splits for itself."""

    def __init__(self, dataset_id: str, path: Path, plan: ShardPlan, scratch: Path, digest: str | None = None):
        self.dataset_id, self.path, self.plan, self.scratch = dataset_id, Path(path), plan, Path(scratch)
        self.schema = contracts.get(dataset_id).schema
        self.merchant_major = contracts.get(dataset_id).order[:1] == ("merchant_id",)
        self._index: tuple[np.ndarray, np.ndarray] | None = None
        self._split: Split | None = None
        self._pf: pq.ParquetFile | None = None
        self._held: tuple[int, int, pl.DataFrame] | None = None  # (row group, last merchant read, its rows above)
        self.split_dir = split_folder(self.scratch, dataset_id, digest or uuid.uuid4().hex, plan)

    def read(self, k: int) -> pl.DataFrame:
        if len(self.plan) == 1:
            return pl.read_parquet(self.path)
        if self.merchant_major:
            return self._read_range(k)
        return self._read_spill(k)

    def prepare(self, map_pieces=None, pieces: int = 1) -> None:
        """Whatever reading a shard needs, done once before the shards are read (and shipped with
        the reader to other processes): the row-group index, or the split. `map_pieces(fn, jobs)`
        runs the split's pieces (default: here, one after the other)."""
        if len(self.plan) == 1:
            return
        if self.merchant_major:
            # The shard spills its producer kept in this run (executors: Dask), else the row groups.
            self._split = self._split or Split.load(self.split_dir)
            if self._split is None:
                self._row_group_index(map_pieces, pieces)
        else:
            self.split(map_pieces, pieces)

    def _row_group_index(self, map_pieces=None, pieces: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            groups = pq.ParquetFile(self.path).num_row_groups
            n = max(1, min(pieces, groups))
            bounds = np.linspace(0, groups, n + 1).round().astype(int).tolist()
            jobs = [(self.path, list(range(a, b))) for a, b in zip(bounds[:-1], bounds[1:])]
            found = list((map_pieces or _map_here)(row_group_bounds, jobs))
            self._index = (np.array([f for fs, _ in found for f in fs], dtype=np.uint64),
                           np.array([x for _, ls in found for x in ls], dtype=np.uint64))
        return self._index

    def _read_range(self, k: int) -> pl.DataFrame:
        if self._split is not None:
            return pl.from_arrow(self._split.read(k, self.schema))
        lo, hi = self.plan.bounds(k)
        first, last = self._row_group_index()
        groups = np.flatnonzero((last >= np.uint64(lo)) & (first <= np.uint64(hi))).tolist()
        if not groups:
            return pl.DataFrame(schema=pl.from_arrow(self.schema.empty_table()).schema)
        held, self._held = self._held, None
        parts = []
        for g in groups:
            if held is not None and held[0] == g and lo > held[1]:
                parts.append(held[2])
            else:
                if self._pf is None:
                    self._pf = pq.ParquetFile(self.path)
                parts.append(pl.from_arrow(self._pf.read_row_group(g)))
        if int(last[groups[-1]]) > hi:
            # A row group is much bigger than a shard's slice of it: the next shards start in the
            # same group, so its rows above this shard are kept rather than decoded again (once per
            # group instead of once per shard: the per-shard cost that grew S7 with the shard count).
            self._held = (groups[-1], hi, parts[-1].filter(pl.col("merchant_id") > hi))
        frame = pl.concat(parts) if len(parts) > 1 else parts[0]
        return frame.filter(pl.col("merchant_id").is_between(lo, hi))

    def forget(self) -> None:
        """Drop the rows kept for the next shard (and the open file)."""
        self._held = self._pf = None

    def __getstate__(self):
        # Shipped to other processes without an open file or held rows.
        return {**self.__dict__, "_pf": None, "_held": None}

    def split(self, map_pieces=None, pieces: int = 1) -> Split:
        """The table cut per shard: read from the run's scratch when a consumer before this one
        made it, else made now in `pieces` pieces of consecutive row groups."""
        if self._split is None:
            self._split = Split.load(self.split_dir)
        if self._split is None:
            groups = pq.ParquetFile(self.path).num_row_groups
            n = max(1, min(pieces, groups))
            bounds = np.linspace(0, groups, n + 1).round().astype(int).tolist()
            jobs = [(self.dataset_id, self.path, self.plan, list(range(a, b)), self.split_dir / f"piece-{i:05d}.arrow")
                    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
            self.split_dir.mkdir(parents=True, exist_ok=True)
            batches = list((map_pieces or _map_here)(split_piece, jobs))
            self._split = Split.write(self.split_dir, [j[-1].name for j in jobs], batches)
        return self._split

    def _read_spill(self, k: int) -> pl.DataFrame:
        return pl.from_arrow(self.split().read(k, self.schema))


def split_folder(scratch: Path, dataset_id: str, digest: str, plan: ShardPlan) -> Path:
    """Where the run keeps a table's split: named by the table's bytes and the plan."""
    return Path(scratch) / f"{dataset_id}-{digest[:16]}-{plan.digest()[:12]}"


def keep_as_split(spills: list[tuple[Path, list[int] | dict[str, int] | None]], folder: Path) -> None:
    """An output's shard spills (spill i holds shard i: batches in file order, or a time-ordered
    output's batch per day) moved in as the split of the file they were encoded into: its
    consumers later in the run read their shard from them instead of decoding row groups or
    splitting the published file again. `None` for a spill's batches means all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    names, owned = [], []
    for i, (path, batches) in enumerate(spills):
        if batches is None:
            batches = list(range(open_spill(path).num_record_batches))
        elif isinstance(batches, dict):
            batches = sorted(batches.values())
        names.append(f"piece-{i:05d}.arrow")
        os.replace(path, folder / names[-1])
        owned.append({i: batches} if batches else {})
    Split.write(folder, names, owned)


def drop_splits(folder: Path, keep: set[str]) -> None:
    """Remove the run's splits of tables no later stage reads (they hold a copy of the table)."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and entry.name.rsplit("-", 2)[0] not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def _map_here(fn, jobs):
    return [fn(*job) for job in jobs]


def row_group_bounds(path: Path, row_groups: list[int]) -> tuple[list[int], list[int]]:
    """First and last merchant_id of some row groups of a merchant-major table (an empty row
    group gets an empty range)."""
    pf = pq.ParquetFile(path)
    first, last = [], []
    for i in row_groups:
        col = pf.read_row_group(i, columns=["merchant_id"]).column(0)
        if len(col):
            first.append(col[0].as_py())
            last.append(col[-1].as_py())
        else:
            first.append(MAX_MERCHANT_ID)
            last.append(0)
    return first, last


def split_piece(dataset_id: str, path: Path, plan: ShardPlan, row_groups: list[int], out: Path) -> dict[int, list[int]]:
    """One pass over some row groups of a table not in merchant order: each batch's rows go to
    their shard's batches of one spill. Returns the batch numbers of each shard (file order)."""
    schema = contracts.get(dataset_id).schema
    owned: dict[int, list[int]] = {}

    def write(writer):
        n = 0
        pf = pq.ParquetFile(path)
        for g in row_groups:
            batch = pf.read_row_group(g)
            batch = pa.Table.from_arrays(batch.columns, schema=schema).combine_chunks()
            shard = plan.shard_of(batch.column("merchant_id").to_numpy())
            order = np.argsort(shard, kind="stable")
            shard = shard[order]
            grouped = batch.take(pa.array(order))
            starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]]) if shard.size else np.zeros(0, int)
            ends = np.r_[starts[1:], shard.size]
            for a, b in zip(starts.tolist(), ends.tolist()):
                writer.write_table(grouped.slice(a, b - a).combine_chunks(), max_chunksize=b - a)
                owned.setdefault(int(shard[a]), []).append(n)
                n += 1

    write_spill(out, schema, write)
    return owned


@dataclass(frozen=True)
class Split:
    """The pieces of a split table and, per piece, the batch numbers of every shard."""

    folder: Path
    pieces: tuple[str, ...]
    batches: tuple[dict[int, list[int]], ...]

    INDEX = "index.json"

    @classmethod
    def write(cls, folder: Path, pieces: list[str], batches: list[dict[int, list[int]]]) -> Split:
        doc = {"pieces": pieces, "batches": [{str(k): v for k, v in sorted(b.items())} for b in batches]}
        replace_scratch(Path(folder) / cls.INDEX, json.dumps(doc, sort_keys=True).encode())
        return cls(Path(folder), tuple(pieces), tuple(dict(b) for b in batches))

    @classmethod
    def load(cls, folder: Path) -> Split | None:
        """The split a consumer before this one made (its index is written last), or None."""
        try:
            doc = json.loads((Path(folder) / cls.INDEX).read_bytes())
        except FileNotFoundError:
            return None
        return cls(Path(folder), tuple(doc["pieces"]),
                   tuple({int(k): v for k, v in b.items()} for b in doc["batches"]))

    def read(self, k: int, schema: pa.Schema) -> pa.Table:
        parts = []
        for name, owned in zip(self.pieces, self.batches):
            if k not in owned:
                continue
            reader = open_spill(self.folder / name)
            parts += [reader.get_batch(b) for b in owned[k]]
        return pa.Table.from_batches(parts, schema=schema) if parts else schema.empty_table()


# ---------------------------------------------------------------------------------------------
# spills: scratch files of one run, shared by the processes that compute its shards


def _scratch_tmp(path: Path) -> Path:
    # Named by writer: a task retried while its first attempt still runs writes its own temporary.
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def replace_scratch(path: Path, data: bytes) -> None:
    tmp = _scratch_tmp(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_spill(path: Path, schema: pa.Schema, write) -> None:
    """An Arrow IPC file written by `write(writer)` into a temporary and renamed into place: a
    reader sees the whole file or none, and a rewrite of the same rows gives the same bytes. The
    folder is never created here (its owner made it, and removing it cancels late writers)."""
    tmp = _scratch_tmp(Path(path))
    try:
        with ipc.new_file(tmp, schema) as writer:
            write(writer)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def spill_table(path: Path, table: pa.Table) -> None:
    """A table in batches of SPILL_BATCH rows, so that a row range decodes only its batches."""
    write_spill(path, table.schema, lambda w: w.write_table(table.combine_chunks(), max_chunksize=SPILL_BATCH))


def open_spill(path: Path) -> ipc.RecordBatchFileReader:
    try:
        return ipc.open_file(pa.memory_map(str(path)))
    except FileNotFoundError:
        raise EngineError(path, "(spill)", "scratch spill missing: a shard's rows are never read as empty; "
                          "the run's workspace was removed while it ran") from None


def read_spill_rows(path: Path, start: int, length: int) -> pa.Table:
    """Rows [start, start + length) of a spill written by spill_table."""
    reader = open_spill(path)
    first, last = start // SPILL_BATCH, (start + length - 1) // SPILL_BATCH
    batches = [reader.get_batch(b) for b in range(first, last + 1)] if length else []
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return table.slice(start - first * SPILL_BATCH, length)


def spill_by_day(path: Path, dataset_id: str, df: pl.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """A shard of a time-ordered table with one Arrow batch per utc_day: (batch number of each
    day, rows of each day)."""
    table = contracts.conform(dataset_id, df)
    runs = df.select(pl.col("utc_day")).with_row_index("i").group_by("utc_day", maintain_order=True).agg(
        pl.col("i").first().alias("start"), pl.len().alias("n"))
    batches: dict[str, int] = {}
    rows: dict[str, int] = {}

    def write(writer):
        for b, (day, start, n) in enumerate(runs.iter_rows()):
            writer.write_table(table.slice(start, n).combine_chunks(), max_chunksize=n or 1)
            batches[day] = b
            rows[day] = n

    write_spill(path, table.schema, write)
    return batches, rows


# ---------------------------------------------------------------------------------------------
# writing


def parquet_writer(path: Path, schema: pa.Schema, dataset_id: str) -> pq.ParquetWriter:
    # The dataset's settings, as publish.parquet_bytes takes them: one law for the bytes of a table.
    return pq.ParquetWriter(path, schema, **contracts.get(dataset_id).parquet.writer_options())


def write_row_group(writer: pq.ParquetWriter, table: pa.Table, schema: pa.Schema) -> None:
    # One contiguous chunk per row group: page boundaries then depend on the rows alone.
    writer.write_table(table.combine_chunks().replace_schema_metadata(schema.metadata), row_group_size=ROW_GROUP)


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
        try:
            self._writer = parquet_writer(self.tmp, self.schema, dataset_id)
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
            write_row_group(self._writer, table.slice(0, take), self.schema)
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
        with contextlib.suppress(Exception):  # already failing; the temp file goes either way
            self._writer.close()
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
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.scratch / f"shard-{len(self._spills):05d}.arrow"
        batches, rows = spill_by_day(path, self.dataset_id, df)
        self.adopt(path, batches, rows)

    def adopt(self, path: Path, batches: dict[str, int], rows: dict[str, int]) -> None:
        """A shard spilled by spill_by_day (here or by a task elsewhere), the next in merchant order."""
        self._spills.append((Path(path), batches))
        for day, n in rows.items():
            self._day_rows[day] = self._day_rows.get(day, 0) + n

    def close(self, splits: Path | None = None, plan: ShardPlan | None = None) -> Staged:
        """The staged file; with `splits` (and the `plan` the shards came in) its spills become
        the run's split of it (keep_as_split)."""
        try:
            if self._held is not None:
                self.out.append(self._held)
            elif self._spills:
                self._merge()
            staged = self.out.close()
        except BaseException:
            self.out.abort()
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        try:
            if splits is not None and plan is not None and len(self._spills) == len(plan) > 1:
                keep_as_split(self._spills, split_folder(splits, self.dataset_id, staged.sha256, plan))
        except OSError:
            pass  # an optimisation: its consumers split the published file instead
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return staged

    def _merge(self) -> None:
        for bucket in day_buckets(self._day_rows):
            self.out.append(merge_bucket(self._spills, bucket, self.keys))

    def abort(self) -> None:
        self.out.abort()
        shutil.rmtree(self.scratch, ignore_errors=True)


def day_buckets(day_rows: dict[str, int]) -> list[list[str]]:
    """Consecutive days in buckets of about MERGE_ROWS rows: what one merge step holds in memory."""
    days = sorted(day_rows)
    out, bucket, rows = [], [], 0
    for i, day in enumerate(days):
        bucket.append(day)
        rows += day_rows[day]
        if rows >= MERGE_ROWS or i == len(days) - 1:
            out.append(bucket)
            bucket, rows = [], 0
    return out


def merge_bucket(spills: list[tuple[Path, dict[str, int]]], bucket: list[str], keys: list[str]) -> pl.DataFrame:
    """The rows of some days gathered from every shard's spill, in the table's time order."""
    readers = [(open_spill(path), batches) for path, batches in spills]
    parts = [r.get_batch(b[d]) for r, b in readers for d in bucket if d in b]
    return pl.from_arrow(pa.Table.from_batches(parts)).sort(keys)


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
