"""The alias law: 2^24 grid quantisation, Vose build, Q0.32 encoding, decode, sampling, slices.

Every alias table in the engine (S2 site tables, S5 group and per-group site tables, S7's
re-decode) goes through this module, so there is exactly one definition of each step.

Grid quantisation (`quantise`, `quantise_many`)
    p = w / sum(w) per segment (the sum is numpy's `add.reduceat`, one code path for one or
    many segments, so a segment's masses never depend on how it was batched).
    m = round-half-even(p * 2^24). The residual r = 2^24 - sum(m) is fixed by +1 on the r
    entries with the largest fractional residue d = p * 2^24 - m (r > 0), or -1 on the |r|
    entries with the smallest d (r < 0); ties go to the lower index. Afterwards sum(m) = 2^24
    exactly and max |m / 2^24 - p| <= 1.2e-7 is checked.

Vose build (`build`, `build_many`), in exact integers
    K entries, scaled mass t_i = (m_i / 2^24) * K. Everything is kept in units of 2^-24, where
    T_i = m_i * K is an integer and "1" is 2^24, so no rounding enters the construction and the
    tables are bit-identical on every machine. Entry i is *small* if T_i < 2^24, else *large*.

    Worklist discipline (the stable definition of the tables):
      * the large list holds the large entries in ascending index order; the pairing always
        uses its front entry g, and g stays at the front while T_g >= 2^24;
      * the small list holds the small entries in ascending index order, except that a large
        entry g whose T_g drops below 2^24 leaves the large list and is taken as the very next
        small entry (before any remaining original small entry);
      * pairing small s with large g: prob_s = T_s / 2^24, alias_s = g, then T_g -= 2^24 - T_s;
      * when either list is empty, every entry not yet paired gets prob 1 and alias itself.
    Because sum(T) = K * 2^24 exactly, the leftovers all have T exactly 2^24.

    `build` runs that loop literally (the readable reference). `build_many` computes the same
    tables for many segments at once from a closed form of the loop: with the small entries'
    deficits (2^24 - T) and the large entries' excesses (T - 2^24) accumulated in index order
    as D and E, small entry k is aliased to the first large r with E_r >= D_{k-1}, and large r
    is demoted iff E_r is below its segment's total excess, with prob 2^24 + E_r - D_k (k the
    first small with D_k > E_r) and alias the next large. That is a handful of cumulative sums
    and binary searches over the flat arrays, with no Python loop over segments or entries.

Q0.32 encoding: q = clamp(floor(prob * 2^32), 1, 2^32 - 1); prob * 2^32 = T * 2^8 is exact.

Decode: p^_i = q_i / (2^32 K) + sum over j with alias_j = i of (1 - q_j / 2^32) / K.
Sampling with u in (0, 1]: j = floor(u K), keep j if frac(u K) < q_j / 2^32, else alias_j. For
u < 1, floor(u K) <= K - 1 in float64, and `rng.to_uniform` never gives 1.0 (it clamps its top
value, whose exact ((2^53 - 1) + 0.5) / 2^53 would round to 1.0, to the largest double below 1).
A caller's u = 1.0 is still accepted: it maps to column K - 1 with frac 1, i.e. to alias_{K-1}.

Slice layout: little-endian u32 words, header [K, 32, 0, 0], then K pairs (q_i, alias_i).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import EngineError

GRID_BITS = 24
GRID = 1 << GRID_BITS
PROB_BITS = 32
Q_MAX = (1 << PROB_BITS) - 1
QUANTISATION_EPSILON = 1.2e-7
SLICE_HEADER_WORDS = 4
SLICE_HEADER_BYTES = 4 * SLICE_HEADER_WORDS

_WHERE = "alias weights"


# ---------------------------------------------------------------------------------------------
# quantisation


def _check_offsets(offsets: ArrayLike, n: int) -> NDArray[np.int64]:
    off = np.asarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != n:
        raise EngineError(_WHERE, "offsets", f"offsets must start at 0 and end at {n} (the number of weights)")
    if off.size > 1 and np.any(np.diff(off) < 1):
        s = int(np.flatnonzero(np.diff(off) < 1)[0])
        raise EngineError(_WHERE, f"segment {s}", "every segment must hold at least one weight (offsets strictly increasing)")
    return off


def _entry_label(single: bool, seg: NDArray[np.int64], off: NDArray[np.int64], i: int) -> str:
    if single:
        return f"weights[{i}]"
    s = int(seg[i])
    return f"segment {s} entry {i - int(off[s])}"


def _fix_residuals(m: NDArray[np.int64], x: NDArray[np.float64], resid: NDArray[np.int64], off: NDArray[np.int64]) -> None:
    """Apply the +-1 residual fix in place, segment by segment.

    Segments are grouped by width class (next power of two of K) and each group becomes one
    padded matrix, so a row-wise stable argsort ranks every segment at once; a global sort
    keyed on (segment, residue) would cost several times more on 10^5 tiny segments. The loop
    runs over at most log2(max K) + 1 classes.
    """
    need = np.flatnonzero(resid != 0)
    if need.size == 0:
        return
    sizes = np.diff(off)[need]
    width = np.maximum(2, 1 << np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64))
    for wd in np.unique(width):
        rows = need[width == wd]
        k = sizes[width == wd]
        cols = np.arange(wd, dtype=np.int64)
        valid = cols[None, :] < k[:, None]
        idx = np.where(valid, off[rows][:, None] + cols[None, :], 0)
        step = np.sign(resid[rows])
        # -d*step ranks the entries that most deserve the +-1 first; +0.0 folds -0.0 into 0.0 so
        # equal residues tie, and the stable sort then keeps them in ascending index order.
        key = np.where(valid, -(x[idx] - m[idx]) * step[:, None] + 0.0, np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        take = (cols[None, :] < np.abs(resid[rows])[:, None]) & valid
        chosen = np.take_along_axis(idx, order, axis=1)[take]
        m[chosen] += np.broadcast_to(step[:, None], take.shape)[take]


def _quantise(w: ArrayLike, off: NDArray[np.int64], single: bool) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(grid masses, segment number of every entry)."""
    # Contiguous input keeps reduceat's summation order independent of the caller's strides.
    w = np.ascontiguousarray(w, dtype=np.float64)
    if w.ndim != 1:
        raise EngineError(_WHERE, "weights", "weights must be one-dimensional")
    n_seg = off.size - 1
    seg = np.repeat(np.arange(n_seg, dtype=np.int64), np.diff(off))

    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EngineError(_WHERE, _entry_label(single, seg, off, i), f"weight must be finite and >= 0 (got {w[i]!r})")
    if n_seg == 0:
        return np.zeros(0, dtype=np.int64), seg
    starts = off[:-1]
    total = np.add.reduceat(w, starts)
    dead = ~(total > 0) | ~np.isfinite(total)
    if dead.any():
        s = int(np.flatnonzero(dead)[0])
        field = "weights" if single else f"segment {s}"
        raise EngineError(_WHERE, field, f"weights must not all be zero and their sum must be finite (sum {total[s]!r})")

    p = w / total[seg]
    x = p * GRID
    m = np.rint(x).astype(np.int64)  # rint rounds half to even
    resid = GRID - np.add.reduceat(m, starts)

    _fix_residuals(m, x, resid, off)

    err = np.abs(m / GRID - p)
    worst = int(np.argmax(err))
    if err[worst] > QUANTISATION_EPSILON or np.any(m < 0) or np.any(np.add.reduceat(m, starts) != GRID):
        raise EngineError(_WHERE, _entry_label(single, seg, off, worst),
                          f"2^24 grid quantisation error {err[worst]:.3e} exceeds {QUANTISATION_EPSILON}")
    return m, seg


def quantise(weights: ArrayLike) -> NDArray[np.int64]:
    """Grid masses m (int64, sum 2^24) of one weight vector; see the module docstring."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0:
        raise EngineError(_WHERE, "weights", "at least one weight is required")
    return _quantise(w, _check_offsets([0, w.size], w.size), single=True)[0]


def quantise_many(weights_flat: ArrayLike, offsets: ArrayLike) -> NDArray[np.int64]:
    """Grid masses of many segments [offsets[i], offsets[i+1]) at once; each sums to 2^24."""
    w = np.asarray(weights_flat, dtype=np.float64)
    return _quantise(w, _check_offsets(offsets, w.size), single=False)[0]


# ---------------------------------------------------------------------------------------------
# Vose build


def _encode(prob_units: NDArray[np.int64]) -> NDArray[np.uint32]:
    q = prob_units << np.int64(PROB_BITS - GRID_BITS)
    np.clip(q, 1, Q_MAX, out=q)
    return q.astype(np.uint32)


def build(weights: ArrayLike) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """(q, alias) as uint32 for one weight vector: the worklist loop of the module docstring.

    This is the reference statement of the law (a Python loop over at most K pairings); batch
    work should call `build_many`, which is tested to give identical tables.
    """
    m = quantise(weights)
    k = m.size
    t = [int(v) * k for v in m]
    prob = [GRID] * k
    alias = list(range(k))
    small = deque(i for i in range(k) if t[i] < GRID)
    large = deque(i for i in range(k) if t[i] >= GRID)
    demoted = None
    while large and (demoted is not None or small):
        g = large[0]
        if demoted is not None:
            s, demoted = demoted, None
        else:
            s = small.popleft()
        prob[s], alias[s] = t[s], g
        t[g] -= GRID - t[s]
        if t[g] < GRID:
            large.popleft()
            demoted = g
    return _encode(np.asarray(prob, dtype=np.int64)), np.asarray(alias, dtype=np.uint32)


def build_many(weights_flat: ArrayLike, offsets: ArrayLike) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """(q_flat, alias_flat) uint32 for segments [offsets[i], offsets[i+1]); alias is local to
    its segment (0..K-1). Equal to `build` on every segment (closed form, module docstring)."""
    w = np.asarray(weights_flat, dtype=np.float64)
    off = _check_offsets(offsets, w.size)
    m, seg = _quantise(w, off, single=False)
    n = m.size
    if n == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
    sizes = np.diff(off)
    t = m * sizes[seg]

    is_small = t < GRID
    sm = np.flatnonzero(is_small)
    lg = np.flatnonzero(~is_small)
    # Global running sums stay aligned with per-segment ones because every segment's total
    # deficit equals its total excess; ties across a boundary are resolved by the clamps below.
    D = np.cumsum(GRID - t[sm])
    E = np.cumsum(t[lg] - GRID)
    # Every segment holds at least one large entry (its masses sum to K * 2^24).
    last_lg = np.cumsum(np.add.reduceat(~is_small, off[:-1], dtype=np.int64)) - 1
    first_lg = np.r_[0, last_lg[:-1] + 1]

    prob = np.full(n, GRID, dtype=np.int64)
    alias = np.arange(n, dtype=np.int64)

    prob[sm] = t[sm]
    d_before = D - (GRID - t[sm])
    r = np.maximum(np.searchsorted(E, d_before, side="left"), first_lg[seg[sm]])
    alias[sm] = lg[r]

    lseg = seg[lg]
    dem = np.flatnonzero(E < E[last_lg[lseg]])  # noqa: SIM300 (E is the excess array of the docstring, not a constant)
    k = np.searchsorted(D, E[dem], side="right")
    prob[lg[dem]] = GRID + E[dem] - D[k]
    alias[lg[dem]] = lg[dem + 1]

    alias -= off[seg]
    return _encode(prob), alias.astype(np.uint32)


# ---------------------------------------------------------------------------------------------
# decode and sampling


def decode_many(q_flat: ArrayLike, alias_flat: ArrayLike, offsets: ArrayLike) -> NDArray[np.float64]:
    """Decoded probabilities p^ (float64) of every entry of every segment."""
    q = np.asarray(q_flat, dtype=np.int64)
    a = np.asarray(alias_flat, dtype=np.int64)
    off = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(off)
    seg = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    # Numerators in units of 2^-32 / K are integers below 2^53, so the float sums are exact.
    num = q + np.bincount(a + off[seg], weights=(1 << PROB_BITS) - q, minlength=q.size)
    return num / (float(1 << PROB_BITS) * sizes[seg])


def decode_probabilities(q: ArrayLike, alias: ArrayLike) -> NDArray[np.float64]:
    """p^_i = q_i / (2^32 K) + sum_{j: alias_j = i} (1 - q_j / 2^32) / K."""
    q = np.asarray(q)
    return decode_many(q, alias, [0, q.size])


def sample_many(q_flat: ArrayLike, alias_flat: ArrayLike, offsets: ArrayLike, seg_index: ArrayLike, u: ArrayLike
                ) -> NDArray[np.int64]:
    """For each u[k] in (0, 1], the local index (0..K-1) picked inside segment seg_index[k]."""
    u = np.asarray(u, dtype=np.float64)
    seg_index = np.asarray(seg_index, dtype=np.int64)
    off = np.asarray(offsets, dtype=np.int64)
    outside = ~(u > 0) | ~(u <= 1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise EngineError("alias sample", f"u[{i}]", f"uniform must lie in (0, 1] (got {u[i]!r})")
    if seg_index.size and (seg_index.min() < 0 or seg_index.max() >= off.size - 1):
        raise EngineError("alias sample", "seg_index", f"segment index outside 0..{off.size - 2}")
    start = off[seg_index]
    size = off[seg_index + 1] - start
    x = u * size
    j = np.minimum(np.floor(x).astype(np.int64), size - 1)  # only u == 1.0 needs the cap
    frac = x - j
    g = start + j
    keep = frac * float(1 << PROB_BITS) < np.asarray(q_flat)[g]
    picked: NDArray[np.int64] = np.where(keep, j, np.asarray(alias_flat, dtype=np.int64)[g])
    return picked


def sample(q: ArrayLike, alias: ArrayLike, u: ArrayLike) -> NDArray[np.int64]:
    """Local indices picked by the decode law for uniforms u in (0, 1]."""
    u = np.asarray(u, dtype=np.float64)
    q = np.asarray(q)
    return sample_many(q, alias, [0, q.size], np.zeros(u.shape, dtype=np.int64), u)


# ---------------------------------------------------------------------------------------------
# slices


def slice_bytes(q: ArrayLike, alias: ArrayLike) -> bytes:
    """One slice: LE u32 header [K, 32, 0, 0] then K pairs (q_i, alias_i); 16 + 8K bytes."""
    q = np.asarray(q, dtype=np.uint32)
    words = np.zeros(SLICE_HEADER_WORDS + 2 * q.size, dtype="<u4")
    words[0], words[1] = q.size, PROB_BITS
    words[SLICE_HEADER_WORDS::2] = q
    words[SLICE_HEADER_WORDS + 1::2] = np.asarray(alias, dtype=np.uint32)
    return words.tobytes()


def parse_slice(data: bytes, where: str = "alias slice") -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    """(q, alias) of one slice, after checking its header, length and entry ranges."""
    data = bytes(data)
    if len(data) < SLICE_HEADER_BYTES or len(data) % 8:
        raise EngineError(where, "length", f"slice length {len(data)} is not 16 + 8K bytes")
    words = np.frombuffer(data, dtype="<u4")
    k = int(words[0])
    if len(data) != SLICE_HEADER_BYTES + 8 * k:
        raise EngineError(where, "header", f"header says K={k} but slice is {len(data)} bytes (expected {16 + 8 * k})")
    if k < 1:
        raise EngineError(where, "header", "K must be at least 1")
    if int(words[1]) != PROB_BITS or words[2] or words[3]:
        raise EngineError(where, "header", f"header must be [K, 32, 0, 0] (got {words[:4].tolist()})")
    q = words[SLICE_HEADER_WORDS::2].astype(np.uint32)
    a = words[SLICE_HEADER_WORDS + 1::2].astype(np.uint32)
    if np.any(q == 0):
        raise EngineError(where, f"entry {int(np.flatnonzero(q == 0)[0])}", "q must be in [1, 2^32 - 1]")
    if np.any(a >= k):
        raise EngineError(where, f"entry {int(np.flatnonzero(a >= k)[0])}", f"alias must be < K={k}")
    return q, a


def pack_many(q_flat: ArrayLike, alias_flat: ArrayLike, offsets: ArrayLike, alignment: int = 8
              ) -> tuple[bytes, NDArray[np.int64], NDArray[np.int64]]:
    """All segments as consecutive slices in one blob.

    Returns (blob, byte_offsets, byte_lengths). Slice i starts at a multiple of `alignment`;
    the gap before it is 0x00 padding, not counted in any length; nothing follows the last slice.
    """
    if alignment < 8 or alignment % 8:
        raise EngineError("alias blob", "alignment_bytes", f"alignment must be a positive multiple of 8 (got {alignment})")
    off = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(off)
    lengths = SLICE_HEADER_BYTES + 8 * sizes
    padded = -(-lengths // alignment) * alignment
    starts = (np.cumsum(padded) - padded).astype(np.int64)
    total = int(starts[-1] + lengths[-1]) if sizes.size else 0
    words = np.zeros(total // 4, dtype="<u4")
    w0 = starts // 4
    words[w0] = sizes
    words[w0 + 1] = PROB_BITS
    seg = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    pos = w0[seg] + SLICE_HEADER_WORDS + 2 * (np.arange(off[-1]) - off[seg])
    words[pos] = np.asarray(q_flat, dtype=np.uint32)
    words[pos + 1] = np.asarray(alias_flat, dtype=np.uint32)
    return words.tobytes(), starts, lengths
