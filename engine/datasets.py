"""Encoding and decoding of datasets under the contract table (the only place bytes meet tables)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from . import contracts
from .errors import EngineError
from .identity import canonical_json, file_sha256, folder_digest
from .publish import parquet_bytes, read_parquet_table


def encode(dataset_id: str, value, partition: str, check_order: bool = True):
    """bytes (or {rel: bytes} for folders) of an output value under its contract."""
    ds = contracts.get(dataset_id)
    if ds.kind == "parquet":
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if not isinstance(value, pl.DataFrame):
            raise EngineError(dataset_id, "(value)", f"expected a polars DataFrame, got {type(value).__name__}")
        table = contracts.conform(dataset_id, value)
        if check_order:
            contracts.check_key_order(dataset_id, value)
        return parquet_bytes(table, partition, ds.parquet)
    if ds.kind == "json":
        return value if isinstance(value, bytes) else canonical_json(value)
    if ds.kind == "bin":
        if not isinstance(value, (bytes, bytearray)):
            raise EngineError(dataset_id, "(value)", "expected bytes")
        return bytes(value)
    if ds.kind == "folder":
        if not isinstance(value, dict):
            raise EngineError(dataset_id, "(value)", "expected {relative path: bytes}")
        return value
    raise EngineError(dataset_id, "(kind)", f"unknown kind {ds.kind}")


def decode(dataset_id: str, path: Path, partition: str):
    ds = contracts.get(dataset_id)
    path = Path(path)
    if not path.exists():
        raise EngineError(path, dataset_id, "dataset missing (partition not published)")
    if ds.kind == "parquet":
        check_footer(dataset_id, path, partition)
        return pl.read_parquet(path)
    if ds.kind == "json":
        try:
            return json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EngineError(path, "(document)", f"malformed JSON: {exc}") from None
    if ds.kind == "bin":
        return path.read_bytes()
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def check_footer(dataset_id: str, path: Path, partition: str | None) -> None:
    """Exact Arrow schema and partition stamp of a Parquet file, from its footer alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .publish import PARTITION_META

    ds = contracts.get(dataset_id)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EngineError(path, dataset_id, f"unreadable Parquet: {exc}") from None
    stamp = (schema.metadata or {}).get(PARTITION_META)
    if partition is not None and stamp is not None and stamp.decode() != partition:
        raise EngineError(path, "seg2b.partition", f"content is stamped {stamp.decode()!r}, not {partition!r}")
    if not schema.remove_metadata().equals(ds.schema):
        read_parquet_table(path, dataset_id, ds.schema, partition)  # raises, naming the column
        raise EngineError(path, "(schema)", "schema differs from the contract")


def check_table(dataset_id: str, path: Path, partition: str | None) -> None:
    """Schema (exact, from the file footer), partition stamp, key order and key uniqueness of a
    published table, reading only its key columns."""
    check_footer(dataset_id, path, partition)
    ds = contracts.get(dataset_id)
    keys = sorted(set(ds.order) | set(ds.primary_key), key=list(ds.schema.names).index)
    contracts.check_key_order(dataset_id, pl.read_parquet(path, columns=keys))


def digest(path: Path) -> str:
    path = Path(path)
    return folder_digest(path) if path.is_dir() else file_sha256(path)
