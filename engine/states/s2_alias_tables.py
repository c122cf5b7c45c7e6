"""S2 alias tables: one Vose alias table per merchant over its S1 site weights, in one blob.

Per merchant (ascending merchant_id; sites in S1 primary-key order) the alias law of
`engine/alias.py` turns p_weight into a table of K (q, alias) pairs, encoded as one slice
(LE u32 header [K, 32, 0, 0] then the pairs, 16 + 8K bytes). Slices follow each other in
merchant order, each starting on a multiple of `alignment_bytes`; the 0x00 padding between
them belongs to no slice, and nothing follows the last slice.

The index names every slice (merchant_id, offset, length, sites, quantised_bits, SHA-256
checksum) and carries the layout facts, the policy identity and the digest of the whole blob.
Before anything is returned, every table is decoded again and each site's decoded probability
must match its p_weight within the policy's quantisation_epsilon.

`read_tables` is the verified way back from (index, blob) to arrays, for S5 and S7.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .. import alias
from ..contracts import check_key_order
from ..errors import EngineError
from ..identity import sha256_hex

READS = ("s1_site_weights",)
POLICIES = ("alias_layout_policy_v1",)
WRITES = ("s2_alias_index", "s2_alias_blob")

LAYOUT_VERSION = "2B.alias.blob.v1"
ENDIANNESS = "little"
SUM_TOLERANCE = 1e-9

_INDEX = "s2_alias_index"
_BLOB = "s2_alias_blob"
_S1 = "s1_site_weights"
_NEEDED = ("merchant_id", "legal_country_iso", "site_order", "p_weight", "quantised_bits")


def _layout(policy) -> dict:
    """The layout facts this code can honour, taken from the policy; anything else is refused."""
    where = getattr(policy, "path", None) or policy.name
    data = policy.data
    for key in ("layout_version", "endianness", "alignment_bytes", "quantised_bits", "quantisation_epsilon"):
        if key not in data:
            raise EngineError(where, key, "required alias layout key is missing")
    if data["layout_version"] != LAYOUT_VERSION:
        raise EngineError(where, "layout_version", f"only {LAYOUT_VERSION!r} is implemented (got {data['layout_version']!r})")
    if data["endianness"] != ENDIANNESS:
        raise EngineError(where, "endianness", f"only 'little' is implemented (got {data['endianness']!r})")
    align = data["alignment_bytes"]
    if isinstance(align, bool) or not isinstance(align, int) or align < 8 or align % 8:
        raise EngineError(where, "alignment_bytes", f"must be a positive multiple of 8 (got {align!r})")
    if data["quantised_bits"] != alias.GRID_BITS:
        raise EngineError(where, "quantised_bits",
                          f"the alias law uses a 2^{alias.GRID_BITS} grid (got {data['quantised_bits']!r})")
    eps = data["quantisation_epsilon"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise EngineError(where, "quantisation_epsilon", f"must be a number in (0, 1) (got {eps!r})")
    return {
        "policy_id": data.get("policy_id", policy.name),
        "alignment": int(align),
        "epsilon": float(eps),
    }


def check_policy(policies: dict) -> None:
    """The layout this code can honour, checked before a run writes anything (_layout is the rule)."""
    _layout(policies["alias_layout_policy_v1"])


def _site(df: pl.DataFrame, row: int) -> str:
    r = df.row(row, named=True)
    return f"merchant_id={r['merchant_id']} site=({r['legal_country_iso']}, {r['site_order']})"


def _segments(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(merchant_ids, offsets, weights) after the input checks S2 owes its error messages to."""
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise EngineError(_S1, ",".join(missing), "missing column(s)")
    for col in _NEEDED:
        if df[col].null_count():
            raise EngineError(_S1, col, f"{df[col].null_count()} null value(s); column is non-nullable")
    check_key_order(_S1, df)

    mid = df["merchant_id"].cast(pl.UInt64).to_numpy()
    w = df["p_weight"].cast(pl.Float64).to_numpy()
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EngineError(_S1, f"{_site(df, i)} p_weight", f"p_weight must be finite and >= 0 (got {w[i]!r})")
    qb = df["quantised_bits"].to_numpy()
    if np.any(qb != alias.GRID_BITS):
        i = int(np.flatnonzero(qb != alias.GRID_BITS)[0])
        raise EngineError(_S1, f"{_site(df, i)} quantised_bits", f"quantised_bits must be {alias.GRID_BITS} (got {qb[i]})")

    n = mid.size
    starts = np.flatnonzero(np.r_[True, mid[1:] != mid[:-1]]) if n else np.zeros(0, np.int64)
    offsets = np.r_[starts, n].astype(np.int64)
    if n:
        total = np.add.reduceat(w, starts)
        off_one = np.abs(total - 1.0) > SUM_TOLERANCE
        if off_one.any():
            s = int(np.flatnonzero(off_one)[0])
            raise EngineError(_S1, f"merchant_id={mid[starts[s]]} p_weight",
                              f"site weights must sum to 1 within {SUM_TOLERANCE} (sum {total[s]!r})")
    return mid[starts], offsets, w


def run(inputs: dict, policies: dict, ctx) -> dict:
    """{"s2_alias_index": dict, "s2_alias_blob": bytes} for the S1 site weights in `inputs`."""
    policy = policies["alias_layout_policy_v1"]
    layout = _layout(policy)
    df = inputs[_S1]
    merchant_ids, offsets, w = _segments(df)

    q, a = alias.build_many(w, offsets)
    decoded = alias.decode_many(q, a, offsets)
    delta = np.abs(decoded - w)
    if delta.size and delta.max() > layout["epsilon"]:
        i = int(np.argmax(delta > layout["epsilon"]))
        raise EngineError(_S1, f"{_site(df, i)} p_weight",
                          f"alias decode parity: decoded probability {decoded[i]!r} differs from p_weight {w[i]!r} "
                          f"by {delta[i]:.3e} > quantisation_epsilon {layout['epsilon']}")

    blob, starts, lengths = alias.pack_many(q, a, offsets, layout["alignment"])
    view = memoryview(blob)
    sizes = np.diff(offsets)
    merchants = [
        {
            "merchant_id": int(m),
            "offset": int(o),
            "length": int(n),
            "sites": int(k),
            "quantised_bits": alias.GRID_BITS,
            "checksum": sha256_hex(view[o:o + n]),
        }
        for m, o, n, k in zip(merchant_ids.tolist(), starts.tolist(), lengths.tolist(), sizes.tolist())
    ]
    index = {
        "layout_version": LAYOUT_VERSION,
        "endianness": ENDIANNESS,
        "alignment_bytes": layout["alignment"],
        "quantised_bits": alias.GRID_BITS,
        "created_utc": ctx.created_utc,
        "policy_id": layout["policy_id"],
        "policy_digest": policy.sha256,
        "blob_sha256": sha256_hex(blob),
        "blob_size_bytes": len(blob),
        "merchants_count": len(merchants),
        "merchants": merchants,
    }
    return {"s2_alias_index": index, "s2_alias_blob": blob}


def _int_field(entry: dict, key: str, label: str) -> int:
    v = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise EngineError(_INDEX, f"{label} {key}", f"must be a non-negative integer (got {v!r})")
    return v


def _check_index(index: dict, blob: bytes) -> tuple[int, list]:
    """(alignment, merchant entries) of an index whose layout facts, blob size and digest and
    merchants_count check out."""
    if not isinstance(index, dict):
        raise EngineError(_INDEX, "(document)", "index must be a JSON object")
    if index.get("layout_version") != LAYOUT_VERSION:
        raise EngineError(_INDEX, "layout_version", f"expected {LAYOUT_VERSION!r} (got {index.get('layout_version')!r})")
    if index.get("endianness") != ENDIANNESS:
        raise EngineError(_INDEX, "endianness", f"expected 'little' (got {index.get('endianness')!r})")
    if index.get("quantised_bits") != alias.GRID_BITS:
        raise EngineError(_INDEX, "quantised_bits", f"expected {alias.GRID_BITS} (got {index.get('quantised_bits')!r})")
    align = _int_field(index, "alignment_bytes", "index")
    if align < 8 or align % 8:
        raise EngineError(_INDEX, "alignment_bytes", f"must be a positive multiple of 8 (got {align})")
    if index.get("blob_size_bytes") != len(blob):
        raise EngineError(_BLOB, "blob_size_bytes", f"blob is {len(blob)} bytes, index says {index.get('blob_size_bytes')!r}")
    digest = sha256_hex(blob)
    if index.get("blob_sha256") != digest:
        raise EngineError(_BLOB, "blob_sha256", f"blob digest {digest} does not match the index ({index.get('blob_sha256')!r})")
    entries = index.get("merchants")
    if not isinstance(entries, list):
        raise EngineError(_INDEX, "merchants", "must be a list")
    if index.get("merchants_count") != len(entries):
        raise EngineError(_INDEX, "merchants_count",
                          f"says {index.get('merchants_count')!r} but merchants[] holds {len(entries)}")
    return align, entries


def _check_slices(entries: list, blob: bytes, align: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(merchant ids, slice byte offsets, sites per slice) of the index entries, each checked in
    index order: ascending ids, grid, length, alignment, no overlap, inside the blob, checksum."""
    view = memoryview(blob)
    n = len(entries)
    mids = np.zeros(n, dtype=np.uint64)
    starts = np.zeros(n, dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    prev_mid, prev_end = -1, 0
    for i, e in enumerate(entries):
        mid = _int_field(e, "merchant_id", f"merchants[{i}]")
        label = f"merchant_id={mid}"
        off = _int_field(e, "offset", label)
        length = _int_field(e, "length", label)
        k = _int_field(e, "sites", label)
        if mid <= prev_mid:
            raise EngineError(_INDEX, label, "merchant ids must be strictly ascending")
        if e.get("quantised_bits") != alias.GRID_BITS:
            raise EngineError(_INDEX, f"{label} quantised_bits", f"expected {alias.GRID_BITS} (got {e.get('quantised_bits')!r})")
        if k < 1 or length != alias.SLICE_HEADER_BYTES + 8 * k:
            raise EngineError(_INDEX, f"{label} length", f"slice of {k} sites must be {16 + 8 * k} bytes (got {length})")
        if off % align:
            raise EngineError(_INDEX, f"{label} offset", f"offset {off} is not {align}-byte aligned")
        if off < prev_end:
            raise EngineError(_INDEX, f"{label} offset", f"slice at {off} overlaps the previous slice ending at {prev_end}")
        if off + length > len(blob):
            raise EngineError(_INDEX, f"{label} offset", f"slice [{off}, {off + length}) runs past the blob end {len(blob)}")
        if sha256_hex(view[off:off + length]) != e.get("checksum"):
            raise EngineError(_BLOB, f"{label} checksum", "slice bytes do not match the slice checksum")
        mids[i], starts[i], sizes[i] = mid, off, k
        prev_mid, prev_end = mid, off + length
    return mids, starts, sizes


def read_tables(index: dict, blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(merchant_ids u64, q_flat u32, alias_flat u32, offsets i64) from a verified index and blob.

    Checks: layout facts, blob size and SHA-256, merchants_count, merchant ids strictly
    ascending, each slice aligned, inside the blob, after the previous one (no overlap), its
    checksum, its header [sites, 32, 0, 0] and entry ranges, and zero padding between slices.
    Every slice-level error names the merchant.
    """
    blob = bytes(blob)
    align, entries = _check_index(index, blob)
    mids, starts, sizes = _check_slices(entries, blob, align)
    n = len(entries)

    raw = np.frombuffer(blob, dtype=np.uint8)
    covered = np.zeros(raw.size + 1, dtype=np.int64)
    np.add.at(covered, starts, 1)
    np.add.at(covered, starts + alias.SLICE_HEADER_BYTES + 8 * sizes, -1)
    gap = np.cumsum(covered[:-1]) == 0
    if np.any(raw[gap] != 0):
        pos = int(np.flatnonzero(gap & (raw != 0))[0])
        raise EngineError(_BLOB, f"byte {pos}", "padding between slices must be 0x00")

    words = np.frombuffer(blob[: len(blob) - len(blob) % 4], dtype="<u4")
    w0 = starts // 4
    head_bad = (words[w0] != sizes) | (words[w0 + 1] != alias.PROB_BITS) | (words[w0 + 2] != 0) | (words[w0 + 3] != 0)
    if head_bad.any():
        i = int(np.flatnonzero(head_bad)[0])
        raise EngineError(_BLOB, f"merchant_id={mids[i]} header", f"slice header must be [{sizes[i]}, 32, 0, 0]")
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    seg = np.repeat(np.arange(n, dtype=np.int64), sizes)
    pos = w0[seg] + alias.SLICE_HEADER_WORDS + 2 * (np.arange(offsets[-1]) - offsets[seg])
    q = words[pos].astype(np.uint32)
    a = words[pos + 1].astype(np.uint32)
    bad = (q == 0) | (a >= sizes[seg])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        s = int(seg[i])
        raise EngineError(_BLOB, f"merchant_id={mids[s]} entry {i - offsets[s]}", "q must be >= 1 and alias < sites")
    return mids, q, a, offsets
