"""The contract table: exact schemas, key order, partition checks on read."""

import polars as pl
import pytest

from engine import contracts, datasets
from engine.errors import EngineError


def merchants(**over):
    cols = {
        "merchant_id": pl.Series([1, 2], dtype=pl.UInt64),
        "home_country_iso": ["FR", "DE"],
        "mcc": pl.Series([5411, 5812], dtype=pl.Int32),
        "merchant_class": ["grocery", "restaurants"],
        "channel": ["card_present", "omni"],
        "is_virtual": [False, False],
    }
    cols.update(over)
    return pl.DataFrame({k: v for k, v in cols.items() if v is not None})


def test_conform_accepts_exact_frame():
    assert contracts.conform("merchants", merchants()).num_rows == 2


def test_missing_column_named():
    with pytest.raises(EngineError, match="is_virtual.*missing"):
        contracts.conform("merchants", merchants(is_virtual=None))


def test_extra_column_named():
    with pytest.raises(EngineError, match="colour.*not in the contract"):
        contracts.conform("merchants", merchants(colour=["red", "blue"]))


def test_wrong_type_named():
    with pytest.raises(EngineError, match="mcc.*type"):
        contracts.conform("merchants", merchants(mcc=["a", "b"]))


def test_duplicate_key_named():
    df = merchants(merchant_id=pl.Series([1, 1], dtype=pl.UInt64))
    with pytest.raises(EngineError, match="duplicate primary key"):
        contracts.check_key_order("merchants", df)


def test_unsorted_rows_named():
    df = merchants(merchant_id=pl.Series([2, 1], dtype=pl.UInt64))
    with pytest.raises(EngineError, match="not sorted"):
        contracts.check_key_order("merchants", df)


def test_partition_mismatch_on_read(tmp_path):
    data = datasets.encode("merchants", merchants(), "seed=42/manifest_fingerprint=aa")
    path = tmp_path / "m.parquet"
    path.write_bytes(data)
    with pytest.raises(EngineError, match="partition"):
        datasets.decode("merchants", path, "seed=7/manifest_fingerprint=aa")


def test_round_trip(tmp_path):
    data = datasets.encode("merchants", merchants(), "p")
    path = tmp_path / "m.parquet"
    path.write_bytes(data)
    assert datasets.decode("merchants", path, "p").equals(merchants())


def test_encoding_is_deterministic():
    assert datasets.encode("merchants", merchants(), "p") == datasets.encode("merchants", merchants(), "p")


def test_wrong_type_on_disk_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = contracts.conform("merchants", merchants())
    bad = t.set_column(2, pa.field("mcc", pa.string(), nullable=False), pa.array(["x", "y"]))
    pq.write_table(bad, tmp_path / "m.parquet")
    with pytest.raises(EngineError, match="mcc"):
        datasets.decode("merchants", tmp_path / "m.parquet", "p")
