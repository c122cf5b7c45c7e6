"""The publish law: write-once outputs, atomic and idempotent.

Every output is written into a temporary sibling, fsynced and renamed into place. If the target
already exists, identical bytes are a no-op ("identical") and different bytes abort with
PublishConflict. A group of outputs (S2's index + blob, a bundle folder) is all or nothing: every
conflict is detected before anything is renamed, and a failure mid-way removes what the group
had already placed.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import EngineError, PublishConflict
from .identity import file_sha256, folder_files

WRITTEN, IDENTICAL = "written", "identical"
PARTITION_META = b"seg2b.partition"


def parquet_bytes(table: pa.Table, partition: str) -> bytes:
    """Deterministic Parquet bytes of a table, stamped with its partition label."""
    meta = dict(table.schema.metadata or {})
    meta[PARTITION_META] = partition.encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd", compression_level=3,
                   row_group_size=1 << 20, write_statistics=False)
    return buf.getvalue()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def temp_sibling(target: Path) -> Path:
    return target.with_name(f".tmp-{target.name}-{uuid.uuid4().hex[:12]}")


@dataclass(frozen=True)
class Staged:
    """A file already written (and fsynced) into a temporary sibling of its target, e.g. a table
    streamed shard by shard; publishing it is a rename, or a no-op if the target has its digest."""

    path: Path
    sha256: str
    rows: int = 0


def _existing_state(target: Path, data) -> str | None:
    """None if absent, IDENTICAL if present with the same content, else raise PublishConflict."""
    if not target.exists():
        return None
    if isinstance(data, Staged):
        if target.is_dir() or file_sha256(target) != data.sha256:
            raise PublishConflict(target, "(bytes)", "already published with different bytes; refusing to overwrite")
        return IDENTICAL
    if isinstance(data, dict):
        if not target.is_dir():
            raise PublishConflict(target, "(folder)", "a file exists where a folder is to be published")
        have = folder_files(target)
        if sorted(have, key=str.encode) != sorted(data, key=str.encode):
            raise PublishConflict(target, "(members)", "already published with a different member list; refusing to overwrite")
        for rel in have:
            if (target / rel).read_bytes() != data[rel]:
                raise PublishConflict(target / rel, "(bytes)", "already published with different bytes; refusing to overwrite")
        return IDENTICAL
    if target.read_bytes() != data:
        raise PublishConflict(target, "(bytes)", "already published with different bytes; refusing to overwrite")
    return IDENTICAL


def _stage(target: Path, data) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Staged):
        return Path(data.path)
    tmp = temp_sibling(target)
    if isinstance(data, dict):
        tmp.mkdir()
        for rel in sorted(data):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(dest, data[rel])
        _fsync_dir(tmp)
    else:
        _write_synced(tmp, data)
    return tmp


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def publish_group(items: list[tuple[Path, bytes | dict[str, bytes] | Staged]]) -> list[str]:
    """Publish files (bytes or Staged) and folders ({relative path: bytes}) all or nothing.

    Returns one status per item: "written" or "identical".
    """
    pre_staged = [Path(d.path) for _, d in items if isinstance(d, Staged)]
    try:
        states = [_existing_state(Path(t), d) for t, d in items]
    except BaseException:
        for tmp in pre_staged:
            _remove(tmp)
        raise
    for (_, d), st in zip(items, states):
        if isinstance(d, Staged) and st == IDENTICAL:
            _remove(Path(d.path))
    todo = [(Path(t), d) for (t, d), st in zip(items, states) if st is None]
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for target, data in todo:
            staged.append((_stage(target, data), target))
        for tmp, target in staged:
            if target.exists():  # appeared since the check: treat as a concurrent writer
                raise PublishConflict(target, "(target)", "appeared during publish")
            os.replace(tmp, target)
            placed.append(target)
            _fsync_dir(target.parent)
    except BaseException:
        for tmp, _ in staged:
            _remove(tmp)
        for target in placed:
            _remove(target)
        raise
    return [IDENTICAL if st == IDENTICAL else WRITTEN for st in states]


def publish(target: Path, data: bytes | dict[str, bytes]) -> str:
    return publish_group([(target, data)])[0]


def replace_file(target: Path, data: bytes) -> None:
    """Atomic overwrite, for mutable bookkeeping (receipts, pointers), never for datasets."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def remove_output(target: Path) -> None:
    """Withdraw a superseded output (the pipeline does this only when a receipt proves its inputs changed)."""
    if not Path(target).exists():
        return
    _remove(Path(target))


def read_parquet_table(path: Path, dataset_id: str, schema: pa.Schema, partition: str | None) -> pa.Table:
    """Read a published table, checking its exact schema and that it belongs to this partition
    (partition None: bytes taken verbatim from elsewhere, e.g. a user-supplied upstream)."""
    if not Path(path).exists():
        raise EngineError(path, dataset_id, "dataset missing (partition not published)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EngineError(path, dataset_id, f"unreadable Parquet: {exc}") from None
    got = (table.schema.metadata or {}).get(PARTITION_META)
    if partition is not None and got is not None and got.decode() != partition:
        raise EngineError(path, "seg2b.partition", f"content is stamped {got.decode()!r}, not {partition!r}")
    have = table.schema.remove_metadata()
    if not have.equals(schema):
        missing = [n for n in schema.names if n not in have.names]
        extra = [n for n in have.names if n not in schema.names]
        if missing or extra:
            raise EngineError(path, ",".join(missing + extra), f"columns differ from the contract (missing {missing}, extra {extra})")
        for f in schema:
            hf = have.field(f.name)
            if hf.type != f.type:
                raise EngineError(path, f.name, f"type {hf.type} where the contract says {f.type}")
        raise EngineError(path, "(schema)", "column order or nullability differs from the contract")
    return table
