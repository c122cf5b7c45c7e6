"""The RNG law: Philox2x64-10 (Random123), keyed per stream, addressed by 128-bit counters.

Everything random in the engine is a pure function of (seed, the identity of the world or upstream
the draws run over, stream, merchant_id, ordinal), never of policy bytes: policies decide how draws
are used, not which draws exist (common random numbers), so two candidate policies compare on the
same draws and an edit changes only what its consumers compute. The counter's high word is the
merchant_id and the low word the event's ordinal inside that merchant's stream, so any single draw
can be recomputed alone and merchants may be processed in any order or sharding with identical
results.

The bit generator works on whole numpy uint64 arrays. numpy has no 64x64->128 multiply, so the
high half of the product is assembled from 32-bit halves (each partial product fits in 64 bits).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .identity import length_prefixed

PHILOX_M2x64_0 = np.uint64(0xD2B74407B1CE6E93)
PHILOX_W64_0 = np.uint64(0x9E3779B97F4A7C15)
ROUNDS = 10
KEY_DOMAIN = "seg2b.rng.philox2x64-10.v2"  # v2: identity instead of manifest fingerprint

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_SHIFT11 = np.uint64(11)
_TWO_POW_53 = float(2**53)

# One stream id per purpose (docs/architecture.md, RNG law).
STREAM_S1 = "2B.S1.site_weights"
STREAM_S3 = "2B.S3.day_effects"
STREAM_ROSTER = "2B.roster"
STREAM_S5 = "2B.S5.routing"
STREAM_S6 = "2B.S6.edge"


def _mulhilo(a: NDArray[np.uint64], b: np.uint64) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """(high, low) 64-bit halves of the 128-bit products a * b (reference form, used by tests)."""
    a_lo, a_hi = a & _MASK32, a >> _SHIFT32
    b_lo, b_hi = b & _MASK32, b >> _SHIFT32
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    hh = a_hi * b_hi
    middle = (ll >> _SHIFT32) + (lh & _MASK32) + (hl & _MASK32)
    high = hh + (lh >> _SHIFT32) + (hl >> _SHIFT32) + (middle >> _SHIFT32)
    return high, a * b


_M_LO = PHILOX_M2x64_0 & _MASK32
_M_HI = PHILOX_M2x64_0 >> _SHIFT32


BLOCK = 1 << 15  # counters per cache-sized block


def philox2x64_10(counter_lo: ArrayLike, counter_hi: ArrayLike, key: ArrayLike) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Philox2x64 with 10 rounds over arrays of counters (ctr = [counter_lo, counter_hi]).

    `key` may be a scalar or an array broadcastable against the counters. Work proceeds in
    blocks that fit in cache, each with in-place ufuncs on preallocated buffers (the same
    arithmetic as `_mulhilo`); the result does not depend on the blocking.
    """
    c0 = np.atleast_1d(np.asarray(counter_lo, dtype=np.uint64))
    c1 = np.atleast_1d(np.asarray(counter_hi, dtype=np.uint64))
    k = np.asarray(key, dtype=np.uint64)
    c0, c1, k = np.broadcast_arrays(c0, c1, k)
    shape = c0.shape
    c0, c1, k = c0.ravel(), c1.ravel(), k.ravel()
    n = c0.size
    if n <= BLOCK:
        o0, o1 = _philox_block(c0.copy(), c1.copy(), k)
        return o0.reshape(shape), o1.reshape(shape)
    out0, out1 = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64)
    for start in range(0, n, BLOCK):
        sl = slice(start, start + BLOCK)
        out0[sl], out1[sl] = _philox_block(c0[sl].copy(), c1[sl].copy(), k[sl])
    return out0.reshape(shape), out1.reshape(shape)


def _philox_block(c0: NDArray[np.uint64], c1: NDArray[np.uint64], k: NDArray[np.uint64]
                  ) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    k = k.copy()
    a_lo, a_hi, t, mid, hi = (np.empty_like(c0) for _ in range(5))
    with np.errstate(over="ignore"):
        for r in range(ROUNDS):
            np.bitwise_and(c0, _MASK32, out=a_lo)
            np.right_shift(c0, _SHIFT32, out=a_hi)
            np.multiply(c0, PHILOX_M2x64_0, out=c0)  # low word of the product (wrapping)
            # high word = hh + (lh >> 32) + (hl >> 32) + carry out of the middle column
            np.multiply(a_lo, _M_LO, out=mid)
            np.right_shift(mid, _SHIFT32, out=mid)  # ll >> 32
            np.multiply(a_lo, _M_HI, out=t)  # lh
            np.right_shift(t, _SHIFT32, out=hi)
            np.bitwise_and(t, _MASK32, out=t)
            np.add(mid, t, out=mid)
            np.multiply(a_hi, _M_LO, out=t)  # hl
            np.bitwise_and(t, _MASK32, out=a_lo)
            np.add(mid, a_lo, out=mid)
            np.right_shift(t, _SHIFT32, out=t)
            np.add(hi, t, out=hi)
            np.multiply(a_hi, _M_HI, out=t)  # hh
            np.add(hi, t, out=hi)
            np.right_shift(mid, _SHIFT32, out=mid)
            np.add(hi, mid, out=hi)
            np.bitwise_xor(hi, k, out=hi)
            np.bitwise_xor(hi, c1, out=hi)
            # (c0, c1) <- (hi ^ key ^ c1, lo); the old c1 buffer is scratch for the next round
            c0, c1, hi = hi, c0, c1
            if r + 1 < ROUNDS:
                np.add(k, PHILOX_W64_0, out=k)
    return c0, c1


def stream_key(identity: str, seed: int, stream: str) -> np.uint64:
    """First 8 bytes (LE u64) of SHA-256(len-prefixed domain, identity bytes, LE64 seed, len-prefixed stream).

    `identity` (64 hex) names what the draws run over: the upstream identity for 2B streams (a
    digest of the upstream tables' bytes), the reference-data identity for the world's streams.
    """
    digest = hashlib.sha256(
        length_prefixed(KEY_DOMAIN.encode())
        + bytes.fromhex(identity)
        + struct.pack("<Q", seed & 0xFFFFFFFFFFFFFFFF)
        + length_prefixed(stream.encode())
    ).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


_U_MAX = 1.0 - 2.0**-53


def to_uniform(bits: NDArray[np.uint64]) -> NDArray[np.float64]:
    """u = ((bits >> 11) + 0.5) / 2^53: 53 random bits, strictly inside (0, 1).

    For the single top value the exact result 1 - 2^-54 is not a double and rounds to 1.0, so
    it is clamped to the largest double below 1 (one value in 2^53 is affected).
    """
    return np.minimum(((bits >> _SHIFT11).astype(np.float64) + 0.5) / _TWO_POW_53, _U_MAX)


def uniforms(key: ArrayLike, counter_hi: ArrayLike, counter_lo: ArrayLike) -> NDArray[np.float64]:
    """One uniform per counter, from the first output word of its block."""
    out0, _ = philox2x64_10(counter_lo, counter_hi, key)
    return to_uniform(out0)


def uniform_pairs(key: ArrayLike, counter_hi: ArrayLike, counter_lo: ArrayLike
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two uniforms per counter (both output words of the block)."""
    out0, out1 = philox2x64_10(counter_lo, counter_hi, key)
    return to_uniform(out0), to_uniform(out1)


def normals(key: ArrayLike, counter_hi: ArrayLike, counter_lo: ArrayLike) -> NDArray[np.float64]:
    """One standard normal per counter: Box-Muller on the block's two uniforms (cosine branch)."""
    u0, u1 = uniform_pairs(key, counter_hi, counter_lo)
    return np.sqrt(-2.0 * np.log(u0)) * np.cos(2.0 * np.pi * u1)


def gammas(key: ArrayLike, counter_hi: ArrayLike, counter_lo: ArrayLike, shape: ArrayLike) -> NDArray[np.float64]:
    """One Gamma(shape, scale 1) deviate per counter, by inversion: x = P^-1(shape, u).

    u is the block's first uniform and P^-1 the inverse regularised lower incomplete gamma
    function (scipy.special.gammaincinv, accurate to a few ulps). Inversion costs exactly one
    block per draw (no rejection loop, so the counter budget is fixed and known in advance) and
    is monotone in u. `shape` (> 0) broadcasts against the counters.
    """
    from scipy.special import gammaincinv  # lazy: only the states that draw gammas need scipy

    draws: NDArray[np.float64] = gammaincinv(np.asarray(shape, dtype=np.float64), uniforms(key, counter_hi, counter_lo))
    return draws


def betas(key: ArrayLike, counter_hi: ArrayLike, counter_lo: ArrayLike, a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """One Beta(a, b) deviate per counter, by inversion of the regularised incomplete beta
    function (scipy.special.betaincinv) at the block's first uniform: one block per draw."""
    from scipy.special import betaincinv

    draws: NDArray[np.float64] = betaincinv(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                                            uniforms(key, counter_hi, counter_lo))
    return draws


# --------------------------------------------------------------------------- transforms of uniforms
# Distributions the states draw through a stream's uniforms and normals, written once, here.


def gumbel(u: NDArray[np.float64]) -> NDArray[np.float64]:
    """Standard Gumbel deviates -ln(-ln u) (for Gumbel top-k draws without replacement)."""
    return -np.log(-np.log(u))


def poisson_counts(rate: NDArray[np.float64], u: NDArray[np.float64], z_for_large: Callable[[NDArray[np.bool_]], ArrayLike],
                   threshold: float) -> tuple[NDArray[np.int64], int]:
    """Poisson counts: inverse CDF of u for rate <= threshold, normal approximation above.

    `z_for_large(mask)` returns the normals of the merchant-days in `mask` (drawn only for those).
    Each element goes through the same elementwise operations whatever else is in the batch, so
    the count of a merchant-day does not depend on the shard it is built in.
    """
    k = np.zeros(rate.shape, dtype=np.int64)
    small = rate <= threshold
    # k_max bounds the loop where u is so close to 1 that the float CDF never reaches it.
    k_max = int(np.ceil(threshold + 15.0 * np.sqrt(max(threshold, 1.0)) + 30.0))
    k[small] = inverse_cdf_counts(rate[small], u[small], k_max)
    large = ~small
    if large.any():
        lam = rate[large]
        z = z_for_large(large)
        k[large] = np.maximum(0.0, np.floor(lam + np.sqrt(lam) * z + 0.5)).astype(np.int64)
    return k, int(large.sum())


def inverse_cdf_counts(lam: NDArray[np.float64], u: NDArray[np.float64], k_max: int) -> NDArray[np.int64]:
    """Smallest k with P(X <= k) >= u, X ~ Poisson(lam), iterating k only over undecided elements."""
    k = np.zeros(lam.size, dtype=np.int64)
    p = np.exp(-lam)
    cdf = p.copy()
    live = np.flatnonzero(u > cdf)
    step = 0
    while live.size and step < k_max:
        step += 1
        p[live] = p[live] * lam[live] / step
        cdf[live] += p[live]
        k[live] = step
        live = live[u[live] > cdf[live]]
    return k


class Stream:
    """A keyed stream: the bit generator bound to one (identity, seed, stream id).

    Distributions are derived from `uniforms`/`normals`; each draw is addressed by
    (counter_hi, counter_lo) so callers state which event they consume.
    """

    def __init__(self, identity: str, seed: int, stream_id: str) -> None:
        self.stream_id = stream_id
        self.key = stream_key(identity, seed, stream_id)

    def uniforms(self, counter_hi: ArrayLike, counter_lo: ArrayLike) -> NDArray[np.float64]:
        return uniforms(self.key, counter_hi, counter_lo)

    def uniform_pairs(self, counter_hi: ArrayLike, counter_lo: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return uniform_pairs(self.key, counter_hi, counter_lo)

    def normals(self, counter_hi: ArrayLike, counter_lo: ArrayLike) -> NDArray[np.float64]:
        return normals(self.key, counter_hi, counter_lo)

    def gammas(self, counter_hi: ArrayLike, counter_lo: ArrayLike, shape: ArrayLike) -> NDArray[np.float64]:
        return gammas(self.key, counter_hi, counter_lo, shape)

    def betas(self, counter_hi: ArrayLike, counter_lo: ArrayLike, a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
        return betas(self.key, counter_hi, counter_lo, a, b)
