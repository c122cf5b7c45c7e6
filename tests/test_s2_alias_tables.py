"""S2 alias tables: blob layout, index fields, determinism, verified read-back, input errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine import alias
from engine.errors import EngineError
from engine.identity import canonical_json
from engine.policies import Policy
from engine.states import s2_alias_tables as s2
from tests.helpers import CREATED, context

CTX = context()
LAYOUT = {
    "policy_id": "alias_layout_policy_v1",
    "layout_version": "2B.alias.blob.v1",
    "endianness": "little",
    "alignment_bytes": 8,
    "quantised_bits": 24,
    "quantisation_epsilon": 1.2e-7,
}
INDEX_FIELDS = {
    "layout_version", "endianness", "alignment_bytes", "quantised_bits", "created_utc", "policy_id",
    "policy_digest", "blob_sha256", "blob_size_bytes", "merchants_count", "merchants",
}
ENTRY_FIELDS = {"merchant_id", "offset", "length", "sites", "quantised_bits", "checksum"}


def make_policy(**overrides) -> dict[str, Policy]:
    data = {**LAYOUT, **overrides}
    digest = hashlib.sha256(canonical_json(data)).hexdigest()
    return {"alias_layout_policy_v1": Policy("alias_layout_policy_v1", Path("alias_layout_policy_v1.json"), digest, data)}


def s1_frame(sizes, seed: int = 0, first_id: int = 1000) -> pl.DataFrame:
    """A synthetic S1 table in PK order: merchants with the given site counts, skewed weights."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(sizes, dtype=np.int64)
    mids = np.repeat(first_id + 17 * np.arange(sizes.size, dtype=np.uint64), sizes)
    iso = np.where(rng.random(mids.size) < 0.5, "DE", "FR")
    seg = np.repeat(np.arange(sizes.size), sizes)
    iso_key = pl.DataFrame({"m": mids, "iso": iso}).sort(["m", "iso"], maintain_order=True)
    order = iso_key.with_columns(pl.int_range(1, pl.len() + 1).over(["m", "iso"]).alias("o"))["o"].to_numpy()
    w = rng.lognormal(0.0, 2.0, mids.size)
    if sizes.size:
        w /= np.add.reduceat(w, np.r_[0, np.cumsum(sizes)[:-1]])[seg]
    n = mids.size
    return pl.DataFrame({
        "merchant_id": pl.Series(iso_key["m"].to_numpy(), dtype=pl.UInt64),
        "legal_country_iso": iso_key["iso"],
        "site_order": pl.Series(order, dtype=pl.Int32),
        "p_weight": w,
        "weight_source": ["profile_mixture_v2"] * n,
        "weight_profile": ["test"] * n,
        "mixture_component": ["heavy_tail"] * n,
        "alpha_used": np.ones(n),
        "quantised_bits": pl.Series(np.full(n, 24), dtype=pl.Int32),
        "floor_applied": [False] * n,
        "created_utc": [CREATED] * n,
    })


SIZES = [1, 2, 3, 7, 12, 40, 5, 260]


def run(df: pl.DataFrame, **policy) -> dict:
    return s2.run({"s1_site_weights": df}, make_policy(**policy), CTX)


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return s1_frame(SIZES)


@pytest.fixture(scope="module")
def out(frame) -> dict:
    return run(frame)


def _segments(df: pl.DataFrame):
    mid = df["merchant_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, mid[1:] != mid[:-1]])
    return mid[starts], np.r_[starts, mid.size]


# ---------------------------------------------------------------------------------------------
# module contract and index


def test_module_declares_its_contract():
    assert (s2.READS, s2.POLICIES, s2.WRITES) == (
        ("s1_site_weights",), ("alias_layout_policy_v1",), ("s2_alias_index", "s2_alias_blob"))


def test_outputs_are_index_dict_and_blob_bytes(out):
    assert set(out) == {"s2_alias_index", "s2_alias_blob"} and isinstance(out["s2_alias_blob"], bytes)


def test_index_has_exactly_the_spec_fields(out):
    idx = out["s2_alias_index"]
    assert set(idx) == INDEX_FIELDS and all(set(e) == ENTRY_FIELDS for e in idx["merchants"])


def test_index_layout_and_identity_values(out):
    idx = out["s2_alias_index"]
    policy = make_policy()["alias_layout_policy_v1"]
    got = {k: idx[k] for k in ("layout_version", "endianness", "alignment_bytes", "quantised_bits",
                               "created_utc", "policy_id", "policy_digest")}
    assert got == {"layout_version": "2B.alias.blob.v1", "endianness": "little", "alignment_bytes": 8,
                   "quantised_bits": 24, "created_utc": CREATED, "policy_id": "alias_layout_policy_v1",
                   "policy_digest": policy.sha256}


def test_blob_digest_and_size_in_index(out):
    idx, blob = out["s2_alias_index"], out["s2_alias_blob"]
    assert (idx["blob_sha256"], idx["blob_size_bytes"]) == (hashlib.sha256(blob).hexdigest(), len(blob))


def test_merchants_ascending_with_site_counts(out, frame):
    mids, off = _segments(frame)
    entries = out["s2_alias_index"]["merchants"]
    assert [(e["merchant_id"], e["sites"]) for e in entries] == list(zip(mids.tolist(), np.diff(off).tolist()))
    assert out["s2_alias_index"]["merchants_count"] == len(SIZES)


def test_index_serialises_as_canonical_json(out):
    assert canonical_json(out["s2_alias_index"]).endswith(b"\n")


# ---------------------------------------------------------------------------------------------
# blob layout


def test_slices_are_aligned_and_sized(out):
    entries = out["s2_alias_index"]["merchants"]
    assert all(e["offset"] % 8 == 0 and e["length"] == 16 + 8 * e["sites"] for e in entries)


def test_slices_are_packed_back_to_back_when_no_padding_is_needed(out):
    entries = out["s2_alias_index"]["merchants"]
    ends = [e["offset"] + e["length"] for e in entries]
    assert [e["offset"] for e in entries[1:]] == ends[:-1] and ends[-1] == len(out["s2_alias_blob"])


def test_wider_alignment_pads_with_zero_bytes_outside_lengths(frame):
    o = run(frame, alignment_bytes=64)
    entries, blob = o["s2_alias_index"]["merchants"], o["s2_alias_blob"]
    gaps = [blob[a["offset"] + a["length"]:b["offset"]] for a, b in zip(entries, entries[1:])]
    assert all(e["offset"] % 64 == 0 for e in entries) and all(g == bytes(len(g)) for g in gaps) and any(gaps)


def test_slice_checksums_match_slice_bytes(out):
    blob = out["s2_alias_blob"]
    entries = out["s2_alias_index"]["merchants"]
    assert all(hashlib.sha256(blob[e["offset"]:e["offset"] + e["length"]]).hexdigest() == e["checksum"] for e in entries)


def test_slices_equal_the_alias_law_per_merchant(out, frame):
    blob = out["s2_alias_blob"]
    _, off = _segments(frame)
    w = frame["p_weight"].to_numpy()
    entries = out["s2_alias_index"]["merchants"]
    assert all(blob[e["offset"]:e["offset"] + e["length"]] == alias.slice_bytes(*alias.build(w[off[i]:off[i + 1]]))
               for i, e in enumerate(entries))


def test_every_site_decodes_to_its_weight(out, frame):
    mids, q, a, off = s2.read_tables(out["s2_alias_index"], out["s2_alias_blob"])
    assert np.max(np.abs(alias.decode_many(q, a, off) - frame["p_weight"].to_numpy())) <= 1.2e-7


def test_rerun_gives_identical_bytes(frame, out):
    again = run(frame.clone())
    assert again["s2_alias_blob"] == out["s2_alias_blob"]
    assert canonical_json(again["s2_alias_index"]) == canonical_json(out["s2_alias_index"])


def test_empty_input_gives_empty_blob():
    o = run(s1_frame([]))
    assert o["s2_alias_blob"] == b"" and o["s2_alias_index"]["merchants"] == []


# ---------------------------------------------------------------------------------------------
# read_tables


def test_read_tables_round_trip(out, frame):
    mids, q, a, off = s2.read_tables(out["s2_alias_index"], out["s2_alias_blob"])
    want_q, want_a = alias.build_many(frame["p_weight"].to_numpy(), _segments(frame)[1])
    assert np.array_equal(q, want_q) and np.array_equal(a, want_a)
    assert np.array_equal(mids, _segments(frame)[0]) and np.array_equal(off, _segments(frame)[1])


def _entries(out) -> tuple[dict, list[dict]]:
    idx = dict(out["s2_alias_index"])
    idx["merchants"] = [dict(e) for e in idx["merchants"]]
    return idx, idx["merchants"]


def _flip(blob: bytes, pos: int) -> bytes:
    b = bytearray(blob)
    b[pos] ^= 0x01
    return bytes(b)


def test_read_tables_detects_flipped_blob_byte(out):
    bad = _flip(out["s2_alias_blob"], out["s2_alias_index"]["merchants"][3]["offset"] + 20)
    with pytest.raises(EngineError) as exc:
        s2.read_tables(out["s2_alias_index"], bad)
    assert exc.value.field == "blob_sha256"


def test_read_tables_names_the_merchant_whose_slice_changed(out):
    # A tamperer who also rewrites blob_sha256 is still caught by the slice checksum.
    idx, entries = _entries(out)
    bad = _flip(out["s2_alias_blob"], entries[3]["offset"] + 20)
    idx["blob_sha256"] = hashlib.sha256(bad).hexdigest()
    with pytest.raises(EngineError, match=f"merchant_id={entries[3]['merchant_id']}") as exc:
        s2.read_tables(idx, bad)
    assert "checksum" in exc.value.field


@pytest.mark.parametrize(
    "shift, rule",
    [(4, "aligned"), (-8, "overlaps"), (10**6, "past the blob end")],
    ids=["misaligned", "overlap", "out-of-bounds"],
)
def test_read_tables_rejects_bad_slice_offset(out, shift, rule):
    idx, entries = _entries(out)
    entries[4]["offset"] += shift
    with pytest.raises(EngineError, match=rule) as exc:
        s2.read_tables(idx, out["s2_alias_blob"])
    assert exc.value.field.startswith(f"merchant_id={entries[4]['merchant_id']}")


def test_read_tables_rejects_wrong_site_count(out):
    idx, entries = _entries(out)
    entries[2]["sites"] += 1
    with pytest.raises(EngineError, match="bytes"):
        s2.read_tables(idx, out["s2_alias_blob"])


def test_read_tables_rejects_merchant_count_mismatch(out):
    idx, _ = _entries(out)
    idx["merchants_count"] += 1
    with pytest.raises(EngineError) as exc:
        s2.read_tables(idx, out["s2_alias_blob"])
    assert exc.value.field == "merchants_count"


def test_read_tables_rejects_nonzero_padding(frame):
    o = run(frame, alignment_bytes=64)
    idx, entries = _entries(o)
    gap = entries[0]["offset"] + entries[0]["length"]
    bad = bytearray(o["s2_alias_blob"])
    bad[gap] = 0xFF
    idx["blob_sha256"] = hashlib.sha256(bytes(bad)).hexdigest()
    with pytest.raises(EngineError, match="padding"):
        s2.read_tables(idx, bytes(bad))


# ---------------------------------------------------------------------------------------------
# bad input


def _with_weight(df: pl.DataFrame, row: int, value: float) -> pl.DataFrame:
    w = df["p_weight"].to_numpy().copy()
    w[row] = value
    return df.with_columns(pl.Series("p_weight", w))


@pytest.mark.parametrize("value", [float("nan"), -0.25, float("inf")], ids=["nan", "negative", "inf"])
def test_bad_weight_is_rejected_naming_merchant_and_site(frame, value):
    row = int(np.r_[0, np.cumsum(SIZES)][3]) + 2
    r = frame.row(row, named=True)
    with pytest.raises(EngineError) as exc:
        run(_with_weight(frame, row, value))
    assert exc.value.where == "s1_site_weights"
    assert f"merchant_id={r['merchant_id']} site=({r['legal_country_iso']}, {r['site_order']})" in exc.value.field


def test_all_zero_merchant_is_rejected(frame):
    df = _with_weight(frame, 1, 0.0)
    df = _with_weight(df, 2, 0.0)
    with pytest.raises(EngineError, match="sum to 1") as exc:
        run(df)
    assert f"merchant_id={frame['merchant_id'][1]}" in exc.value.field


def test_weights_not_summing_to_one_are_rejected(frame):
    with pytest.raises(EngineError, match="sum to 1"):
        run(_with_weight(frame, 0, 0.5))


def test_rows_out_of_key_order_are_rejected(frame):
    with pytest.raises(EngineError, match="not sorted"):
        run(frame.reverse())


def test_missing_column_is_rejected(frame):
    with pytest.raises(EngineError, match="missing column") as exc:
        run(frame.drop("p_weight"))
    assert exc.value.field == "p_weight"


def test_decode_parity_failure_names_merchant_and_site(frame):
    with pytest.raises(EngineError, match="decode parity") as exc:
        run(frame, quantisation_epsilon=1e-15)
    assert "merchant_id=" in exc.value.field and "site=(" in exc.value.field


@pytest.mark.parametrize(
    "key, value",
    [("quantised_bits", 16), ("endianness", "big"), ("alignment_bytes", 12), ("layout_version", "v2")],
)
def test_unsupported_layout_policy_is_rejected(frame, key, value):
    with pytest.raises(EngineError) as exc:
        run(frame, **{key: value})
    assert exc.value.field == key


# ---------------------------------------------------------------------------------------------
# world-sized input


def test_world_sized_input_round_trips():
    rng = np.random.default_rng(5)
    sizes = np.minimum(np.ceil(rng.pareto(1.0, 1238) * 8).astype(int) + 1, 2600)
    df = s1_frame(sizes, seed=5)
    o = run(df)
    _, q, a, off = s2.read_tables(o["s2_alias_index"], o["s2_alias_blob"])
    assert np.max(np.abs(alias.decode_many(q, a, off) - df["p_weight"].to_numpy())) <= 1.2e-7
