"""Distributions derived from the RNG law: Gamma and Beta by inversion, one block per draw."""

import numpy as np
import pytest
from scipy import special, stats

from engine import rng

MF = "ab" * 32
N = 4000


def _counters(n=N, hi=11):
    return np.full(n, hi, dtype=np.uint64), np.arange(n, dtype=np.uint64)


@pytest.mark.parametrize("shape", [0.7, 1.2, 4.0, 25.0])
def test_gamma_matches_its_distribution(shape):
    s = rng.Stream(MF, 42, "test.gamma")
    x = s.gammas(*_counters(), shape)
    assert (x > 0).all()
    assert stats.kstest(x, stats.gamma(shape).cdf).pvalue > 1e-3


@pytest.mark.parametrize("a,b", [(1.5, 4.5), (3.0, 3.0), (0.8, 0.8)])
def test_beta_matches_its_distribution(a, b):
    s = rng.Stream(MF, 42, "test.beta")
    x = s.betas(*_counters(), a, b)
    assert ((x > 0) & (x < 1)).all()
    assert stats.kstest(x, stats.beta(a, b).cdf).pvalue > 1e-3


def test_one_block_per_draw_and_addressable():
    """A draw is the inverse CDF at the uniform of its own counter: recomputable alone."""
    s = rng.Stream(MF, 7, "test.gamma")
    hi, lo = _counters(50)
    shapes = np.linspace(0.5, 30, 50)
    whole = s.gammas(hi, lo, shapes)
    assert np.array_equal(whole, special.gammaincinv(shapes, s.uniforms(hi, lo)))
    assert s.gammas(hi[17], lo[17], shapes[17])[0] == whole[17]
    beta = s.betas(hi, lo, 2.0, 5.0)
    assert np.array_equal(beta, special.betaincinv(2.0, 5.0, s.uniforms(hi, lo)))


def test_seed_and_stream_change_the_draws():
    hi, lo = _counters(20)
    a = rng.Stream(MF, 1, "x").gammas(hi, lo, 2.0)
    assert not np.array_equal(a, rng.Stream(MF, 2, "x").gammas(hi, lo, 2.0))
    assert not np.array_equal(a, rng.Stream(MF, 1, "y").gammas(hi, lo, 2.0))
    assert np.array_equal(a, rng.Stream(MF, 1, "x").gammas(hi, lo, 2.0))
