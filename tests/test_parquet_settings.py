"""Per-dataset Parquet settings: one law in the contract table, chosen by the committed study."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from benchmarks import parquet_settings as study
from engine import contracts, datasets
from engine.contracts import DEFAULT_PARQUET, ParquetSettings
from engine.shards import TableWriter

EVIDENCE = Path(__file__).resolve().parent.parent / "evidence" / "parquet_settings.json"


def _row(compression, level, dictionary, cost, size):
    return {"compression": compression, "compression_level": level, "use_dictionary": dictionary,
            "cost_seconds": cost, "bytes": size}


def test_contract_table_holds_what_the_committed_study_chose():
    chosen = json.loads(EVIDENCE.read_text())["datasets"]
    for ds in contracts.DATASETS.values():
        if ds.kind != "parquet":
            continue
        expected = ParquetSettings(**chosen[ds.id]["chosen"]) if ds.id in chosen else DEFAULT_PARQUET
        assert ds.parquet == expected, ds.id


def test_the_cheapest_setting_within_the_size_slack_wins():
    rows = [_row("zstd", 3, True, 1.0, 100), _row("lz4", None, False, 0.5, 150), _row("snappy", None, False, 0.1, 400)]
    assert study.choose(rows)["compression"] == "lz4"  # snappy is cheaper but 4x the size


def test_a_gain_within_the_noise_keeps_the_default():
    rows = [_row("zstd", 3, True, 1.0, 100), _row("lz4", None, False, 0.9, 110)]
    assert study.choose(rows)["compression"] == "zstd"


def _parquet_ids(pred) -> list[str]:
    return [d.id for d in contracts.DATASETS.values() if d.kind == "parquet" and pred(d)]


@pytest.mark.parametrize("dataset_id", _parquet_ids(lambda d: d.parquet != DEFAULT_PARQUET))
def test_a_published_file_is_encoded_with_its_dataset_settings(fast_lane, dataset_id):
    path = fast_lane.results[42].path(dataset_id)
    settings = contracts.get(dataset_id).parquet
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(0).column(0)
    assert chunk.compression.lower().startswith(settings.compression)
    assert chunk.has_dictionary_page == settings.use_dictionary


@pytest.mark.parametrize("dataset_id", _parquet_ids(lambda d: d.parquet != DEFAULT_PARQUET))
def test_whole_and_streamed_writers_give_the_published_bytes(fast_lane, tmp_path, dataset_id):
    """publish.parquet_bytes (a whole table) and shards.TableWriter (rows streamed in pieces) take
    the settings from the same place, so both reproduce the published file."""
    result = fast_lane.results[42]
    published = result.path(dataset_id).read_bytes()
    frame = pl.read_parquet(result.path(dataset_id))
    stamp = contracts.get(dataset_id).stamp(42)
    assert datasets.encode(dataset_id, frame, stamp) == published
    writer = TableWriter(dataset_id, tmp_path / "streamed.parquet", stamp)
    step = max(1, frame.height // 3 + 1)
    for start in range(0, frame.height, step):
        writer.append(frame.slice(start, step))
    assert writer.close().path.read_bytes() == published
