"""Checks of the S2 alias tables: the index, the blob and its slices, and decode parity with S1."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from ... import alias
from ...identity import sha256_hex
from .arrays import only_in, sorted_unique, unique_counts
from .audit import SITE_PK
from .registry import Blocked, Outcome, examples, global_check, preparation
from .sealed import SealedInputs

DECODE_TOL = 1.2e-7
LAYOUT_VERSION = "2B.alias.blob.v1"
MIN_ALIGNMENT = 8  # the layout asks for 8-byte alignment at least; the index declares the actual value
GRID_BITS = 24
Q_BITS = 32
HEADER_WORDS = 4  # a slice is [K, Q_BITS, 0, 0] then K (q, alias) pairs of u32


@dataclass(frozen=True)
class AliasIndex:
    entries: pl.DataFrame  # one row per merchant, in index order
    alignment: int
    merchant_id: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    n_sites: np.ndarray
    quantised_bits: np.ndarray


@dataclass(frozen=True)
class AliasSlices:
    blob: bytes
    words: np.ndarray  # the blob as little-endian u32
    in_bounds: np.ndarray  # per index entry: inside the blob and aligned
    shaped: np.ndarray  # per index entry: at least one site and the length that K sites need
    usable: np.ndarray  # both: safe to read


class AliasTables(SealedInputs):
    @preparation.named("index")
    def alias_index(self) -> AliasIndex:
        idx = self.inputs["s2_alias_index"]
        entries = idx.get("merchants")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise Blocked("s2_alias_index.merchants is not a list of objects")
        schema = {"merchant_id": pl.UInt64, "offset": pl.Int64, "length": pl.Int64, "sites": pl.Int64,
                  "quantised_bits": pl.Int64, "checksum": pl.String}
        df = pl.DataFrame(entries, schema=schema)
        nulls = [c for c in df.columns if df[c].null_count()]
        if nulls:
            raise Blocked(f"s2_alias_index.merchants entries lack or null field(s) {nulls}")
        align = idx.get("alignment_bytes")
        if isinstance(align, bool) or not isinstance(align, int) or align < MIN_ALIGNMENT or align % MIN_ALIGNMENT:
            raise Blocked(f"s2_alias_index.alignment_bytes {align!r} is not a positive multiple of {MIN_ALIGNMENT}")
        return AliasIndex(df, align, df["merchant_id"].to_numpy(), df["offset"].to_numpy(), df["length"].to_numpy(),
                          df["sites"].to_numpy(), df["quantised_bits"].to_numpy())

    @preparation.named("slices")
    def alias_slices(self) -> AliasSlices:
        ix = self.alias_index
        blob = bytes(self.inputs["s2_alias_blob"])
        off, length, k = ix.offset, ix.length, ix.n_sites
        in_bounds = (off >= 0) & (off + length <= len(blob)) & (off % ix.alignment == 0)
        shaped = (k >= 1) & (length == 16 + 8 * k)
        words = np.frombuffer(blob, dtype="<u4", count=len(blob) // 4)
        return AliasSlices(blob, words, in_bounds, shaped, in_bounds & shaped)

    def entries(self, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, alias, owning slice position) of every entry of the slices `use` selects, in slice order."""
        ix, words = self.alias_index, self.alias_slices.words
        k = ix.n_sites[use]
        first = ix.offset[use] // 4 + HEADER_WORDS
        owner = np.repeat(np.arange(len(k)), k)
        local = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
        pos = np.repeat(first, k) + 2 * local
        return words[pos], words[pos + 1], owner

    @global_check("S2.INDEX_HEADER", pass_detail=lambda f: f"{LAYOUT_VERSION}, {f['merchants']} merchants")
    def index_header(self) -> Outcome:
        """Index layout fields, counts, clock and policy digest; merchants strictly ascending."""
        idx = self.inputs["s2_alias_index"]
        ix = self.alias_index
        problems = []
        expect = {"layout_version": LAYOUT_VERSION, "endianness": "little", "quantised_bits": GRID_BITS,
                  "merchants_count": ix.entries.height, "blob_size_bytes": len(self.inputs["s2_alias_blob"]),
                  "created_utc": self.ctx.created_utc}
        for key, want in expect.items():
            if idx.get(key) != want:
                problems.append(f"{key} = {idx.get(key)!r}, expected {want!r}")
        bad_bits = int((ix.quantised_bits != GRID_BITS).sum())
        if bad_bits:
            problems.append(f"{bad_bits} merchants with quantised_bits != {GRID_BITS}")
        mids = ix.merchant_id
        if len(mids) > 1 and not bool((mids[1:] > mids[:-1]).all()):
            problems.append("merchants are not in strictly ascending merchant_id order")
        try:
            sealed = self.receipt_policies
            pid = idx.get("policy_id")
            if sealed.get(pid) is None or idx.get("policy_digest") != sealed.get(pid):
                problems.append(f"policy_digest of {pid!r} is not the digest S0 sealed")
        except Blocked as exc:
            problems.append(str(exc))
        return problems, {"merchants": len(mids)}

    @global_check("S2.BLOB_DIGEST", metrics={"blob_size_bytes": "size"},
                  pass_detail=lambda f: f"blob sha256 {f['sha256'][:16]}, {f['size']} bytes")
    def blob_digest(self) -> Outcome:
        """SHA-256 and size of the whole blob equal the index's."""
        idx = self.inputs["s2_alias_index"]
        blob = bytes(self.inputs["s2_alias_blob"])
        got = sha256_hex(blob)
        problems = []
        if got != idx.get("blob_sha256"):
            problems.append(f"blob sha256 {got[:16]} != index blob_sha256 {str(idx.get('blob_sha256'))[:16]}")
        if len(blob) != idx.get("blob_size_bytes"):
            problems.append(f"blob has {len(blob)} bytes, index says {idx.get('blob_size_bytes')}")
        return problems, {"sha256": got, "size": len(blob)}

    @global_check("S2.SLICE_BOUNDS",
                  pass_detail=lambda f: f"{f['slices']} slices in bounds, aligned, disjoint, zero-padded")
    def slice_bounds(self) -> Outcome:
        """Slices inside the blob, aligned, of length 16 + 8K, not overlapping; padding is zero bytes."""
        ix, sl = self.alias_index, self.alias_slices
        mids = ix.merchant_id
        problems = []
        align = ix.alignment
        for mask, what in ((~sl.in_bounds, f"outside the blob or not {align}-byte aligned"),
                           (~sl.shaped, "with length != 16 + 8 x sites (or no sites)")):
            if mask.any():
                problems.append(f"{int(mask.sum())} slices {what}{examples(mids[mask])}")
        ok = sl.in_bounds
        starts, ends = ix.offset[ok], (ix.offset + ix.length)[ok]
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        if len(starts) > 1:
            overlap = starts[1:] < ends[:-1]
            if overlap.any():
                problems.append(f"{int(overlap.sum())} slices overlap their predecessor{examples(mids[ok][order][1:][overlap])}")
        blob = sl.blob
        if len(starts) and not problems:
            # Padding is whatever no slice covers: zero bytes, and never a whole alignment unit.
            gaps = np.r_[starts[0], starts[1:] - ends[:-1], len(blob) - ends[-1]]
            if (gaps >= align).any():
                problems.append(f"{int((gaps >= align).sum())} gaps of {align}+ bytes between slices")
            cover = np.zeros(len(blob) + 1, dtype=np.int64)
            np.add.at(cover, starts, 1)
            np.add.at(cover, ends, -1)
            pad = np.cumsum(cover[:-1]) == 0
            nonzero = int((np.frombuffer(blob, dtype=np.uint8)[pad] != 0).sum())
            if nonzero:
                problems.append(f"{nonzero} padding bytes are not 0x00")
        return problems, {"slices": len(mids)}

    @global_check("S2.SLICE_HEADERS", metrics={"alias_entries": "entries"},
                  pass_detail=lambda f: f"{f['slices']} headers [K, {Q_BITS}, 0, 0], {f['entries']} entries in range")
    def slice_headers(self) -> Outcome:
        """Slice header [K, 32, 0, 0] with K = sites; q in [1, 2^32 - 1]; alias < K."""
        ix, sl = self.alias_index, self.alias_slices
        use = sl.usable
        mids, k = ix.merchant_id[use], ix.n_sites[use]
        base = ix.offset[use] // 4
        w = sl.words
        problems = []
        if (~use).any():
            problems.append(f"{int((~use).sum())} slices unusable (see S2.SLICE_BOUNDS)")
        hdr = np.stack([w[base + i] for i in range(HEADER_WORDS)], axis=1) if len(base) else np.zeros((0, 4), np.uint32)
        bad = (hdr[:, 0] != k) | (hdr[:, 1] != Q_BITS) | (hdr[:, 2] != 0) | (hdr[:, 3] != 0)
        if bad.any():
            problems.append(f"{int(bad.sum())} slice headers are not [K, {Q_BITS}, 0, 0]{examples(mids[bad])}")
        q, a, owner = self.entries(use)
        bad_q = (q == 0)  # q = 2^32 cannot be stored in a u32, so only the lower clamp can break
        bad_a = a >= k[owner]
        for mask, what in ((bad_q, "q outside [1, 2^32 - 1]"), (bad_a, "alias index >= K")):
            if mask.any():
                problems.append(f"{int(mask.sum())} entries with {what}{examples(sorted_unique(mids[owner[mask]]))}")
        return problems, {"slices": len(mids), "entries": len(q)}

    @global_check("S2.SLICE_CHECKSUMS", pass_detail=lambda f: f"{f['slices']} slice checksums verify")
    def slice_checksums(self) -> Outcome:
        """SHA-256 of every slice equals its index checksum."""
        ix, sl = self.alias_index, self.alias_slices
        view = memoryview(sl.blob)
        off, length, mids = ix.offset, ix.length, ix.merchant_id
        sums = ix.entries["checksum"].to_list()
        # One hash per merchant (about a thousand): a loop over slices, not over rows.
        bad = [int(mids[i]) for i in range(len(mids))
               if not sl.in_bounds[i] or hashlib.sha256(view[off[i]:off[i] + length[i]]).hexdigest() != sums[i]]
        if bad:
            return [f"{len(bad)} of {len(mids)} slice checksums do not verify{examples(bad)}"], {"slices": len(mids)}
        return [], {"slices": len(mids)}

    @global_check("S2.COVERAGE", pass_detail=lambda f: f"{f['merchants']} merchants, site counts equal S1")
    def coverage(self) -> Outcome:
        """Index merchants and their site counts equal S1's."""
        ix = self.alias_index
        s1 = self.sites.weights
        m1, n1 = unique_counts(s1["merchant_id"].to_numpy())
        order = np.argsort(ix.merchant_id, kind="stable")
        mids, k = ix.merchant_id[order], ix.n_sites[order]
        problems = []
        missing, extra = only_in(m1, mids), only_in(mids, m1)
        if len(missing):
            problems.append(f"{len(missing)} S1 merchants without a slice{examples(missing)}")
        if len(extra):
            problems.append(f"{len(extra)} slices for merchants not in S1{examples(extra)}")
        if len(sorted_unique(mids)) != len(mids):
            problems.append("merchants listed more than once in the index")
        if not problems:
            wrong = mids[k != n1]
            if len(wrong):
                problems.append(f"{len(wrong)} slices whose site count differs from S1{examples(wrong)}")
        return problems, {"merchants": len(m1)}

    @global_check("S2.DECODE_PARITY", metrics={"decode_max_abs_delta": "max_delta"},
                  pass_detail=lambda f: f"{f['sites']} sites decode within {DECODE_TOL}; max abs delta {f['max_delta']:.3e}")
    def decode_parity(self) -> Outcome:
        """Decoded alias probabilities equal S1 p_weight within 1.2e-7 for every site."""
        for needed in ("S2.SLICE_BOUNDS", "S2.SLICE_HEADERS", "S2.COVERAGE"):
            if not self.passed(needed):
                raise Blocked(f"{needed} failed, slices cannot be decoded safely")
        ix = self.alias_index
        s1 = self.sites.weights
        order = np.argsort(ix.merchant_id, kind="stable")
        q, a, _ = self.entries(np.ones(len(order), dtype=bool))
        k = ix.n_sites
        offsets = np.r_[0, np.cumsum(k)].astype(np.int64)
        p_hat = alias.decode_many(q, a, offsets)
        # Entries are in index order; S1 is in PK order (merchant ascending): permute whole slices.
        if not np.array_equal(order, np.arange(len(order))):
            sizes = k[order]
            p_hat = p_hat[np.repeat(offsets[:-1][order] - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))]
        p = s1["p_weight"].to_numpy()
        delta = np.abs(p_hat - p)
        worst = float(np.nanmax(delta)) if len(delta) else 0.0
        bad = ~(delta <= DECODE_TOL)
        facts = {"sites": len(p), "max_delta": worst}
        if bad.any():
            rows = s1.filter(pl.Series(bad)).select(SITE_PK).rows()
            problem = f"{int(bad.sum())} sites decode more than {DECODE_TOL} from p_weight (max {worst:.3e}){examples(rows)}"
            return [problem], facts
        return [], facts
