"""The contract table: dataset id -> path template, kind, exact Arrow schema, primary key.

Path tokens: {seed}, {mf}, {ph}, {run_id}. `S` partitions are seed + manifest_fingerprint,
`R` partitions are seed + parameter_hash + run_id (docs/states.md). Parquet tables carry a content
stamp in the Arrow schema metadata (`seg2b.partition`): the dataset id and the seed, so a file
moved to another dataset or seed is caught on read. The stamp names no manifest fingerprint,
parameter hash or run id on purpose: a stage whose inputs did not change reuses its outputs under
a new manifest byte for byte (docs/architecture.md, identity law); what binds a
file to its run is the receipt chain, S0's seal and the S8 bundle's digests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import pyarrow as pa

from .errors import EngineError

S = "seed={seed}/manifest_fingerprint={mf}"
R = "seed={seed}/parameter_hash={ph}/run_id={run_id}"

u64, i32, u32, f64, s, b = pa.uint64(), pa.int32(), pa.uint32(), pa.float64(), pa.string(), pa.bool_()


@dataclass(frozen=True)
class ParquetSettings:
    """How a Parquet dataset's pages are encoded: part of the bytes law, so every writer of the
    dataset (publish.parquet_bytes, shards.parquet_writer, hence parquet_join's pieces) takes them
    from here. Statistics are off: they would only repeat what the key-order checks prove."""

    compression: str = "zstd"
    compression_level: int | None = 3
    use_dictionary: bool = True

    def writer_options(self) -> dict[str, object]:
        return {"compression": self.compression, "compression_level": self.compression_level,
                "use_dictionary": self.use_dictionary, "write_statistics": False}


DEFAULT_PARQUET = ParquetSettings()


@dataclass(frozen=True)
class Dataset:
    id: str
    template: str  # relative to the run root; the file itself for file kinds
    kind: str  # parquet | json | bin | folder
    schema: pa.Schema | None = None
    primary_key: tuple[str, ...] = ()
    sort_key: tuple[str, ...] = ()  # row order when it is not the primary key
    parquet: ParquetSettings = DEFAULT_PARQUET

    @property
    def order(self) -> tuple[str, ...]:
        return self.sort_key or self.primary_key

    def path(self, run_root: Path, *, seed: int, mf: str = "", ph: str = "", run_id: str = "") -> Path:
        return Path(run_root) / self.template.format(seed=seed, mf=mf, ph=ph, run_id=run_id)

    def stamp(self, seed: int) -> str:
        """The content stamp a Parquet file of this dataset carries (see the module docstring)."""
        return f"{self.id}/seed={seed}"

    def partition_label(self, *, seed: int, mf: str = "", ph: str = "", run_id: str = "") -> str:
        """The partition part of the path (`seed=.../manifest_fingerprint=...` or the R form)."""
        folder = Path(self.template.format(seed=seed, mf=mf, ph=ph, run_id=run_id))
        folder = folder if self.kind == "folder" else folder.parent
        parts = folder.parts
        first = next((i for i, part in enumerate(parts) if part.startswith("seed=")), len(parts))
        return "/".join(parts[first:])


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=False) for n, t in fields])


SITE_KEY = (("merchant_id", u64), ("legal_country_iso", s), ("site_order", i32))
SITE_PK = ("merchant_id", "legal_country_iso", "site_order")
DAY_PK = ("merchant_id", "utc_day", "tz_group_id")
COUNTERS = (
    ("rng_counter_before_hi", u64), ("rng_counter_before_lo", u64),
    ("rng_counter_after_hi", u64), ("rng_counter_after_lo", u64),
    ("draws", u32), ("blocks", u32),
)
ENVELOPE = (("module", s), ("substream_label", s))

_DATASETS = [
    # upstream (written by engine/world/ or supplied by the user)
    Dataset("merchants", f"data/layer1/1A/merchants/{S}/part-00000.parquet", "parquet",
            _schema(("merchant_id", u64), ("home_country_iso", s), ("mcc", i32), ("merchant_class", s),
                    ("channel", s), ("is_virtual", b)), ("merchant_id",)),
    Dataset("site_locations", f"data/layer1/1B/site_locations/{S}/part-00000.parquet", "parquet",
            _schema(*SITE_KEY, ("lat_deg", f64), ("lon_deg", f64)), SITE_PK),
    Dataset("site_timezones", f"data/layer1/2A/site_timezones/{S}/part-00000.parquet", "parquet",
            _schema(*SITE_KEY, ("tzid", s), ("tzid_source", s)), SITE_PK),
    Dataset("validation_bundle_1B", f"data/layer1/1B/validation/{S}", "folder"),
    Dataset("world_card", f"reports/layer1/world/{S}/world_card.json", "json"),
    # roster (written before S0, sealed by it)
    Dataset("s5_arrival_roster", f"data/layer1/2B/s5_arrival_roster/{R}/part-00000.parquet", "parquet",
            _schema(("merchant_id", u64), ("utc_timestamp", s), ("utc_day", s), ("is_virtual", b),
                    ("merchant_class", s), ("channel", s)),
            ("utc_timestamp", "merchant_id")),
    Dataset("roster_card", f"reports/layer1/2B/roster_card/{R}/roster_card.json", "json"),
    # 2B states
    Dataset("s0_gate_receipt", f"data/layer1/2B/s0_gate_receipt/{S}/s0_gate_receipt_2B.json", "json"),
    Dataset("sealed_inputs", f"data/layer1/2B/sealed_inputs/{S}/sealed_inputs_2B.json", "json"),
    Dataset("s1_site_weights", f"data/layer1/2B/s1_site_weights/{S}/part-00000.parquet", "parquet",
            _schema(*SITE_KEY, ("p_weight", f64), ("weight_source", s), ("weight_profile", s),
                    ("mixture_component", s), ("alpha_used", f64), ("quantised_bits", i32),
                    ("floor_applied", b), ("created_utc", s)), SITE_PK),
    Dataset("s2_alias_index", f"data/layer1/2B/s2_alias_index/{S}/index.json", "json"),
    Dataset("s2_alias_blob", f"data/layer1/2B/s2_alias_blob/{S}/alias.bin", "bin"),
    Dataset("s3_day_effects", f"data/layer1/2B/s3_day_effects/{S}/part-00000.parquet", "parquet",
            _schema(("merchant_id", u64), ("utc_day", s), ("tz_group_id", s), ("gamma", f64), ("log_gamma", f64),
                    ("sigma_gamma", f64), ("weekly_amp", f64), ("sigma_source", s), ("rng_stream_id", s),
                    ("rng_counter_hi", u64), ("rng_counter_lo", u64), ("created_utc", s)), DAY_PK),
    Dataset("s4_group_weights", f"data/layer1/2B/s4_group_weights/{S}/part-00000.parquet", "parquet",
            _schema(("merchant_id", u64), ("utc_day", s), ("tz_group_id", s), ("p_group", f64), ("base_share", f64),
                    ("gamma", f64), ("mass_raw", f64), ("denom_raw", f64), ("regularizer_applied", b),
                    ("regularizer_delta_mass", f64), ("created_utc", s)), DAY_PK),
    Dataset("rng_event_alias_pick_group", f"logs/layer1/2B/rng/events/alias_pick_group/{R}/part-00000.parquet", "parquet",
            _schema(*ENVELOPE, ("merchant_id", u64), ("arrival_seq", u64), ("utc_day", s), ("tz_group_id", s),
                    ("p_group", f64), *COUNTERS), ("merchant_id", "arrival_seq")),
    Dataset("rng_event_alias_pick_site", f"logs/layer1/2B/rng/events/alias_pick_site/{R}/part-00000.parquet", "parquet",
            _schema(*ENVELOPE, ("merchant_id", u64), ("arrival_seq", u64), ("utc_day", s), ("tz_group_id", s),
                    ("site_id", u64), ("legal_country_iso", s), ("site_order", i32), *COUNTERS),
            ("merchant_id", "arrival_seq")),
    Dataset("rng_event_cdn_edge_pick", f"logs/layer1/2B/rng/events/cdn_edge_pick/{R}/part-00000.parquet", "parquet",
            _schema(*ENVELOPE, ("merchant_id", u64), ("virtual_seq", u64), ("utc_day", s), ("edge_id", s),
                    ("ip_country", s), ("edge_lat", f64), ("edge_lon", f64), *COUNTERS),
            ("merchant_id", "virtual_seq")),
    Dataset("rng_trace_s5", f"logs/layer1/2B/rng/trace/{R}/s5_trace.parquet", "parquet",
            _schema(*ENVELOPE, ("events", u64), ("draws", u64), ("blocks", u64),
                    ("first_counter_hi", u64), ("first_counter_lo", u64),
                    ("last_counter_hi", u64), ("last_counter_lo", u64)), ("module", "substream_label")),
    Dataset("rng_trace_s6", f"logs/layer1/2B/rng/trace/{R}/s6_trace.parquet", "parquet",
            _schema(*ENVELOPE, ("events", u64), ("draws", u64), ("blocks", u64),
                    ("first_counter_hi", u64), ("first_counter_lo", u64),
                    ("last_counter_hi", u64), ("last_counter_lo", u64)), ("module", "substream_label")),
    Dataset("s5_selection_log", f"data/layer1/2B/s5_selection_log/{R}/part-00000.parquet", "parquet",
            _schema(("merchant_id", u64), ("arrival_seq", u64), ("utc_timestamp", s), ("utc_day", s),
                    ("tz_group_id", s), ("site_id", u64), ("legal_country_iso", s), ("site_order", i32)),
            ("merchant_id", "arrival_seq")),
    Dataset("s6_edge_log", f"data/layer1/2B/s6_edge_log/{R}/part-00000.parquet", "parquet",
            _schema(("merchant_id", u64), ("virtual_seq", u64), ("utc_timestamp", s), ("edge_id", s),
                    ("ip_country", s), ("edge_lat", f64), ("edge_lon", f64)), ("merchant_id", "virtual_seq")),
    Dataset("s7_audit_report", f"data/layer1/2B/s7_audit_report/{S}/s7_audit_report.json", "json"),
    Dataset("validation_bundle_2B", f"data/layer1/2B/validation/{S}", "folder"),
]

# Chosen per dataset by benchmarks/parquet_settings.py (encode + 2 decodes, within 1.6x of the
# smallest size, at least 15% cheaper than the default); its output is the evidence,
# evidence/parquet_settings.json, and tests/test_parquet_settings.py keeps the two equal.
# The other Parquet datasets keep DEFAULT_PARQUET (the roster measured no better; tables under
# 50k rows cost less than the timer's noise).
_PARQUET = {
    "s3_day_effects": ParquetSettings("lz4", None, use_dictionary=False),
    "s4_group_weights": ParquetSettings("lz4", None, use_dictionary=False),
    "rng_event_alias_pick_group": ParquetSettings("zstd", 1, use_dictionary=True),
    "rng_event_alias_pick_site": ParquetSettings("zstd", 3, use_dictionary=False),
    "rng_event_cdn_edge_pick": ParquetSettings("lz4", None, use_dictionary=True),
}
_DATASETS = [replace(d, parquet=_PARQUET[d.id]) if d.id in _PARQUET else d for d in _DATASETS]

DATASETS: dict[str, Dataset] = {d.id: d for d in _DATASETS}


def get(dataset_id: str) -> Dataset:
    try:
        return DATASETS[dataset_id]
    except KeyError:
        raise EngineError("contracts", dataset_id, "unknown dataset id") from None


def table_schema(dataset_id: str) -> pa.Schema:
    """The exact Arrow schema of a table dataset; an EngineError for a dataset without one (json, bin, folder)."""
    schema = get(dataset_id).schema
    if schema is None:
        raise EngineError("contracts", dataset_id, "not a table: the contract holds no Arrow schema for it")
    return schema


def conform(dataset_id: str, df: pl.DataFrame) -> pa.Table:
    """The Arrow table of `df` under the dataset's exact schema, or an error naming the rule broken."""
    want = table_schema(dataset_id)
    names = list(df.columns)
    missing = [n for n in want.names if n not in names]
    extra = [n for n in names if n not in want.names]
    if missing:
        raise EngineError(dataset_id, ",".join(missing), "missing column(s)")
    if extra:
        raise EngineError(dataset_id, ",".join(extra), "column(s) not in the contract")
    table = df.select(want.names).to_arrow()
    cols = []
    for f in want:
        col = table.column(f.name)
        if col.null_count:
            raise EngineError(dataset_id, f.name, f"{col.null_count} null value(s); column is non-nullable")
        if col.type != f.type:
            if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type) or pa.types.is_string(col.type):
                if not pa.types.is_string(f.type):
                    raise EngineError(dataset_id, f.name, f"type {col.type} where contract says {f.type}")
            elif not _safe_numeric(col.type, f.type):
                raise EngineError(dataset_id, f.name, f"type {col.type} where contract says {f.type}")
            col = col.cast(f.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=want)


def _safe_numeric(have: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_integer(have) and pa.types.is_integer(want):
        return True
    return bool(pa.types.is_floating(have) and pa.types.is_floating(want))


def check_key_order(dataset_id: str, df: pl.DataFrame) -> None:
    """Rows in key order, and a primary key without duplicates.

    One pass over neighbouring rows (no sort): row i+1 must not compare lexicographically below
    row i, and must differ from it somewhere in the primary key.
    """
    ds = get(dataset_id)
    key = list(ds.order)
    if not key or df.height < 2:
        return
    undecided = pl.lit(True)
    descending = pl.lit(False)
    for c in key:
        nxt, prev = pl.col(c).shift(-1), pl.col(c)
        descending = descending | (undecided & (nxt < prev))
        undecided = undecided & (nxt == prev)
    flags = df.select(descending.alias("desc"), undecided.alias("tie")).slice(0, df.height - 1)
    if flags["desc"].any():
        first = flags["desc"].arg_max()
        assert first is not None  # any() found a True, so there is a first one
        row = int(first) + 1
        raise EngineError(dataset_id, f"row {row}", f"rows not sorted by {tuple(key)}")
    if ds.primary_key:
        same_key = tuple(key) == tuple(ds.primary_key)
        dup_flags = flags["tie"] if same_key else df.select(list(ds.primary_key)).is_duplicated()
        if dup_flags.any():
            first = dup_flags.arg_max()
            assert first is not None  # any() found a True, so there is a first one
            row = int(first)
            raise EngineError(dataset_id, f"row {row}",
                              f"duplicate primary key {tuple(ds.primary_key)}: {df.row(row, named=True)}")


def check_schema(have: pa.Schema, dataset_id: str, where: str | Path) -> None:
    """An Arrow schema (metadata removed) equal to the contract's, or an EngineError naming the first
    difference: missing or extra columns, a column's type, or order/nullability."""
    where = str(where)  # the place an EngineError names (it prints a path as this text anyway)
    schema = table_schema(dataset_id)
    if have.equals(schema):
        return
    missing = [n for n in schema.names if n not in have.names]
    extra = [n for n in have.names if n not in schema.names]
    if missing or extra:
        raise EngineError(where, ",".join(missing + extra),
                          f"columns differ from the contract (missing {missing}, extra {extra})")
    for f in schema:
        if have.field(f.name).type != f.type:
            raise EngineError(where, f.name, f"type {have.field(f.name).type} where the contract says {f.type}")
    raise EngineError(where, "(schema)", "column order or nullability differs from the contract (all columns non-nullable)")
