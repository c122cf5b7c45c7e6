"""Sampling helpers over whole columns: stratified uniforms and categorical draws inside blocks
(one searchsorted for every row, whatever its block)."""

from __future__ import annotations

import numpy as np

from .. import rng
from ..errors import EngineError


def _stratified_uniforms(stream: rng.Stream, n: int) -> np.ndarray:
    """One uniform per entity, exactly one in each of the n strata [k/n, (k+1)/n).

    The stratum of entity i is its rank under a random key (lo 0), its place inside the stratum a
    second uniform (lo 1). Marginally each value is U(0,1); jointly the empirical distribution is
    as close to the target as n points can be, so calibrated quantiles and shares hold at every
    seed instead of only on average (a variance-reduction design, not a fudge).
    """
    idx = np.arange(n, dtype=np.uint64)
    key = stream.uniforms(idx, np.zeros(n, dtype=np.uint64))
    rank = np.empty(n, dtype=np.float64)
    rank[np.argsort(key, kind="stable")] = np.arange(n, dtype=np.float64)
    return (rank + stream.uniforms(idx, np.ones(n, dtype=np.uint64))) / n


def _block_cumulative(block: np.ndarray, weight: np.ndarray, n_blocks: int):
    """Cumulative shares per block, offset by the block number (block b spans (b, b + 1]).

    Items must be sorted by block. Returns (gcum, lo, hi): block b's items are gcum[lo[b]:hi[b]];
    hi[b] - 1 is its last item of positive weight.
    """
    weight = np.asarray(weight, dtype=np.float64)
    counts = np.bincount(block, minlength=n_blocks)
    end = np.cumsum(counts)
    start = end - counts
    total = np.bincount(block, weights=weight, minlength=n_blocks)
    if np.any(total[counts > 0] <= 0):
        raise EngineError("world", "weights", "a categorical law has no positive weight")
    csum = np.cumsum(weight)
    before = np.concatenate(([0.0], csum))[start]  # running total at each block's start
    share = (csum - np.repeat(before, counts)) / np.repeat(np.where(total > 0, total, 1.0), counts)
    gcum = block + np.minimum(share, 1.0)
    # Last positive-weight item per block: a draw that rounds up to b + 1 must not land on a
    # trailing zero-weight item.
    pos = np.flatnonzero(weight > 0)
    hi = end.copy()
    last_pos = np.full(n_blocks, -1, dtype=np.int64)
    np.maximum.at(last_pos, block[pos], pos)
    hi[counts > 0] = last_pos[counts > 0] + 1
    gcum[np.maximum(hi - 1, 0)[counts > 0]] = np.arange(n_blocks)[counts > 0] + 1.0
    return gcum, start, hi


def _pick_in_blocks(block: np.ndarray, u: np.ndarray, gcum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index of the item chosen by uniform u inside each row's block (inverse-CDF, one searchsorted)."""
    idx = np.searchsorted(gcum, block + u, side="right")
    return np.clip(idx, lo[block], hi[block] - 1)
