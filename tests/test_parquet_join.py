"""engine/parquet_join.py: row groups encoded apart and joined are the bytes one writer writes."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import parquet_join as PJ
from engine.errors import EngineError
from engine.identity import file_sha256, sha256_hex


def table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    t = pa.table({
        "merchant_id": np.arange(n, dtype=np.uint64), "utc_day": [f"2026-01-{1 + i % 28:02d}" for i in range(n)],
        "tz": pa.array(rng.choice(["Europe/Paris", "UTC", "Asia/Tokyo"], n)), "p": rng.random(n),
        "flag": np.arange(n) % 3 == 0, "order": rng.integers(0, 9, n).astype(np.int32),
    })
    return t.replace_schema_metadata({b"seg2b.partition": b"x/seed=1"})


def write(t: pa.Table, rows_per_group: int, path=None) -> bytes:
    sink = path or io.BytesIO()
    w = pq.ParquetWriter(sink, t.schema, compression="zstd", compression_level=3, write_statistics=False)
    if t.num_rows == 0:
        w.write_table(t)
    for a in range(0, t.num_rows, rows_per_group):
        w.write_table(t.slice(a, rows_per_group).combine_chunks(), row_group_size=rows_per_group)
    w.close()
    return None if path else sink.getvalue()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 4000), group=st.sampled_from([64, 500, 1024]), per_piece=st.integers(1, 4))
def test_joined_pieces_are_the_single_writer_bytes(tmp_path_factory, n, group, per_piece):
    tmp = tmp_path_factory.mktemp("join")
    t = table(n)
    whole = write(t, group)
    step = group * per_piece
    pieces = []
    for i, a in enumerate(range(0, max(n, 1), step)):
        p = tmp / f"piece-{i}.parquet"
        write(t.slice(a, step), group, p)
        pieces.append(p)
    sha = PJ.join_files(pieces, tmp / "joined.parquet")
    assert (tmp / "joined.parquet").read_bytes() == whole
    assert sha == sha256_hex(whole) == file_sha256(tmp / "joined.parquet")


def test_one_row_groups_and_long_lists(tmp_path):
    # 40 row groups: list headers past the short form (15 elements), multi-byte varints.
    t = table(40)
    pieces = []
    for i in range(40):
        pieces.append(tmp_path / f"p{i}.parquet")
        write(t.slice(i, 1), 1, pieces[-1])
    PJ.join_files(pieces, tmp_path / "joined.parquet")
    assert (tmp_path / "joined.parquet").read_bytes() == write(t, 1)


def test_footer_round_trip_is_exact():
    data = write(table(3000), 1000)
    footer = data[-8 - int.from_bytes(data[-8:-4], "little"):-8]
    assert PJ.encode_struct(PJ.decode_struct(footer)) == footer


def test_a_footer_the_codec_cannot_reproduce_is_refused():
    data = write(table(10), 10)
    footer = data[-8 - int.from_bytes(data[-8:-4], "little"):-8]
    # The same struct with a field id written in long form where the C++ writer writes a short
    # delta: decodes fine, but its bytes are not what this codec (or the writer) would emit.
    long_form = bytes([PJ.I32, 2]) + footer[1:]  # field 1 (version) as type byte + zigzag id
    assert PJ.decode_struct(long_form) == PJ.decode_struct(footer)
    with pytest.raises(EngineError, match="round trip"):
        PJ.join_footers([long_form], [len(data) - 12 - len(footer)])


def test_not_parquet_is_one_line(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(EngineError, match="not a Parquet file"):
        PJ.join_files([p], tmp_path / "out.parquet")
