"""The alias law: known answers, properties over arbitrary weight vectors, sampling sanity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from engine import alias
from engine.errors import EngineError
from engine.rng import Stream

GRID = 1 << 24
QMAX = (1 << 32) - 1
EPS = 1.2e-7

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# strategies


@st.composite
def weight_vectors(draw, max_size: int = 5000) -> np.ndarray:
    """Non-negative, not-all-zero vectors: small hand-shaped ones (which shrink well) and large
    seeded ones with heavy skew, spikes of 1e-9 against 1, exact ties and many zeros."""
    if draw(st.booleans()):
        atoms = st.sampled_from([0.0, 1e-12, 1e-9, 1e-6, 0.1, 0.5, 1.0, 1.0, 3.0, 1e3, 1e9])
        vals = draw(st.lists(atoms | st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=24))
        w = np.array(vals, dtype=np.float64)
    else:
        n = draw(st.integers(1, max_size))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        style = draw(st.sampled_from(["lognormal", "spikes", "ties", "sparse", "uniform"]))
        if style == "lognormal":
            w = rng.lognormal(0.0, rng.uniform(0.1, 8.0), n)
        elif style == "spikes":
            w = np.where(rng.random(n) < 0.05, 1.0, 1e-9)
        elif style == "ties":
            w = rng.integers(1, 4, n).astype(np.float64)
        elif style == "sparse":
            w = np.where(rng.random(n) < 0.1, rng.random(n), 0.0)
        else:
            w = np.ones(n)
    if not w.sum() > 0:
        w[draw(st.integers(0, w.size - 1))] = 1.0
    return w


@st.composite
def segmented(draw) -> tuple[np.ndarray, np.ndarray]:
    segs = draw(st.lists(weight_vectors(max_size=300), min_size=1, max_size=12))
    offsets = np.r_[0, np.cumsum([s.size for s in segs])]
    return np.concatenate(segs), offsets


def naive_quantise(w) -> list[int]:
    """The S1/S2 quantisation sentence transcribed with Python sorting, as an oracle."""
    w = np.asarray(w, dtype=np.float64)
    x = (w / np.add.reduceat(w, [0])[0]) * GRID
    m = [int(v) for v in np.rint(x)]
    r = GRID - sum(m)
    d = [float(x[i]) - m[i] for i in range(len(m))]
    step = 1 if r > 0 else -1
    for i in sorted(range(len(m)), key=lambda i: (-d[i] * step, i))[: abs(r)]:
        m[i] += step
    return m


# ---------------------------------------------------------------------------------------------
# known answers


def test_two_equal_weights_give_full_self_entries():
    q, a = alias.build([1.0, 1.0])
    assert q.tolist() == [QMAX, QMAX] and a.tolist() == [0, 1]


def test_three_site_hand_computed_table():
    # t = (0.375, 0.75, 1.875): both small entries lean on entry 2, which ends at exactly 1.
    q, a = alias.build([1.0, 2.0, 5.0])
    assert q.tolist() == [int(0.375 * 2**32), int(0.75 * 2**32), QMAX] and a.tolist() == [2, 2, 2]


def test_demoted_large_is_taken_before_remaining_smalls():
    # t = (1.5, 1.5, 0.5, 0.5): entry 0 absorbs both smalls, drops to 0.5, then leans on entry 1.
    q, a = alias.build([3.0, 3.0, 1.0, 1.0])
    assert q.tolist() == [2**31, QMAX, 2**31, 2**31] and a.tolist() == [1, 1, 0, 0]


def test_zero_weight_gets_minimum_q_and_points_at_the_large():
    q, a = alias.build([0.0, 1.0])
    assert q.tolist() == [1, QMAX] and a.tolist() == [1, 1]


def test_single_entry_table():
    q, a = alias.build([0.3])
    assert q.tolist() == [QMAX] and a.tolist() == [0]


def test_residual_added_to_lowest_index_on_tie():
    assert alias.quantise([1.0, 1.0, 1.0]).tolist() == [5592406, 5592405, 5592405]


def test_residual_removed_from_smallest_residue_lowest_index():
    # p * 2^24 = (1000.625, 2000.625, 16774214.75) rounds to a sum of 2^24 + 1.
    assert alias.quantise([1000.625, 2000.625, GRID - 3001.25]).tolist() == [1000, 2001, 16774215]


def test_rounding_is_half_to_even_before_the_fix():
    # 0.5 -> 0 and 2.5 -> 2 (half-even), then the missing unit goes to index 0 (residue 0.5).
    assert alias.quantise([0.5, 2.5, GRID - 3.0]).tolist() == [1, 2, GRID - 3]


def test_slice_bytes_known_layout():
    q, a = alias.build([1.0, 2.0, 5.0])
    words = np.frombuffer(alias.slice_bytes(q, a), dtype="<u4").tolist()
    assert words == [3, 32, 0, 0, int(0.375 * 2**32), 2, int(0.75 * 2**32), 2, QMAX, 2]


@pytest.mark.parametrize(
    "weights, field",
    [
        ([1.0, float("nan")], "weights[1]"),
        ([1.0, -0.5], "weights[1]"),
        ([float("inf"), 1.0], "weights[0]"),
        ([0.0, 0.0], "weights"),
        ([], "weights"),
    ],
)
def test_quantise_rejects_bad_weights_naming_the_entry(weights, field):
    with pytest.raises(EngineError) as exc:
        alias.quantise(weights)
    assert exc.value.field == field


def test_build_many_names_the_bad_segment_entry():
    with pytest.raises(EngineError) as exc:
        alias.build_many([1.0, 2.0, 1.0, float("nan")], [0, 2, 4])
    assert exc.value.field == "segment 1 entry 1"


def test_build_many_rejects_empty_segment():
    with pytest.raises(EngineError, match="at least one weight"):
        alias.build_many([1.0, 2.0], [0, 0, 2])


def test_sample_of_exactly_one_maps_to_last_column():
    # rng.to_uniform rounds its top value up to 1.0, so the law must accept it.
    q, a = alias.build([1.0, 1.0, 1.0, 1.0])
    assert alias.sample(q, a, [1.0]).tolist() == [3]


@pytest.mark.parametrize("u", [0.0, -0.1, 1.5, float("nan")])
def test_sample_rejects_uniform_outside_unit_interval(u):
    q, a = alias.build([1.0, 1.0])
    with pytest.raises(EngineError) as exc:
        alias.sample(q, a, [0.5, u])
    assert exc.value.field == "u[1]"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda w: w[:-1], "length"),
        (lambda w: np.r_[w[:1], [31], w[2:]], "header"),
        (lambda w: np.r_[w[:5], [7], w[6:]], "entry 0"),
        (lambda w: np.r_[w[:4], [0], w[5:]], "entry 0"),
    ],
)
def test_parse_slice_rejects_malformed_slices(mutate, field):
    words = np.frombuffer(alias.slice_bytes(*alias.build([1.0, 2.0, 5.0])), dtype="<u4")
    bad = np.asarray(mutate(words), dtype="<u4").tobytes()
    with pytest.raises(EngineError) as exc:
        alias.parse_slice(bad)
    assert exc.value.field == field


def test_pack_many_pads_to_alignment_with_zero_bytes():
    q, a = alias.build_many([1.0, 1.0, 2.0, 3.0, 4.0], [0, 2, 5])
    blob, starts, lengths = alias.pack_many(q, a, [0, 2, 5], alignment=64)
    assert starts.tolist() == [0, 64] and lengths.tolist() == [32, 40] and blob[32:64] == bytes(32) and len(blob) == 104


# ---------------------------------------------------------------------------------------------
# properties


@PROPS
@given(weight_vectors())
def test_decode_matches_normalised_weights(w):
    q, a = alias.build_many(w, [0, w.size])
    assert np.max(np.abs(alias.decode_probabilities(q, a) - w / w.sum())) <= EPS


@PROPS
@given(weight_vectors())
def test_decode_reproduces_grid_masses_up_to_the_q_clamp(w):
    q, a = alias.build_many(w, [0, w.size])
    assert np.max(np.abs(alias.decode_probabilities(q, a) - alias.quantise(w) / GRID)) <= 2.0**-32


@PROPS
@given(weight_vectors())
def test_grid_masses_sum_to_grid(w):
    assert int(alias.quantise(w).sum()) == GRID


@PROPS
@given(weight_vectors(max_size=60))
def test_quantise_matches_the_sentence_of_the_spec(w):
    assert alias.quantise(w).tolist() == naive_quantise(w)


@PROPS
@given(weight_vectors())
def test_entries_in_range(w):
    q, a = alias.build_many(w, [0, w.size])
    assert int(a.max()) < w.size and int(q.min()) >= 1 and int(q.max()) <= QMAX


@PROPS
@given(weight_vectors())
def test_slice_bytes_deterministic_and_round_trip(w):
    first = alias.slice_bytes(*alias.build_many(w, [0, w.size]))
    strided = np.repeat(w, 2)[::2]
    again = alias.slice_bytes(*alias.build_many(strided, [0, w.size]))
    q, a = alias.parse_slice(first)
    assert first == again and alias.slice_bytes(q, a) == first


@PROPS
@given(segmented())
def test_build_many_equals_build_per_segment(case):
    w, off = case
    q, a = alias.build_many(w, off)
    for s in range(off.size - 1):
        q1, a1 = alias.build(w[off[s]:off[s + 1]])
        assert np.array_equal(q[off[s]:off[s + 1]], q1) and np.array_equal(a[off[s]:off[s + 1]], a1), s


@PROPS
@given(segmented())
def test_decode_many_equals_decode_per_segment(case):
    w, off = case
    q, a = alias.build_many(w, off)
    whole = alias.decode_many(q, a, off)
    parts = [alias.decode_probabilities(q[off[s]:off[s + 1]], a[off[s]:off[s + 1]]) for s in range(off.size - 1)]
    assert np.array_equal(whole, np.concatenate(parts))


@PROPS
@given(segmented(), st.integers(0, 2**32 - 1))
def test_sample_many_equals_sample_per_segment(case, seed):
    w, off = case
    q, a = alias.build_many(w, off)
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, off.size - 1, 500)
    u = (rng.integers(0, 2**53, 500) + 0.5) / 2.0**53
    got = alias.sample_many(q, a, off, seg, u)
    want = [int(alias.sample(q[off[s]:off[s + 1]], a[off[s]:off[s + 1]], [x])[0]) for s, x in zip(seg, u)]
    assert got.tolist() == want


@PROPS
@given(segmented())
def test_pack_many_slices_equal_slice_bytes(case):
    w, off = case
    q, a = alias.build_many(w, off)
    blob, starts, lengths = alias.pack_many(q, a, off)
    pieces = [blob[o:o + n] for o, n in zip(starts, lengths)]
    assert pieces == [alias.slice_bytes(q[off[s]:off[s + 1]], a[off[s]:off[s + 1]]) for s in range(off.size - 1)]


# ---------------------------------------------------------------------------------------------
# sampling frequencies


def _uniforms(n: int) -> np.ndarray:
    stream = Stream("ab" * 32, 42, "test.alias.sampling")
    return stream.uniforms(np.zeros(n, dtype=np.uint64), np.arange(n, dtype=np.uint64))


@pytest.mark.parametrize(
    "weights",
    [
        [0.05, 0.3, 0.15, 0.2, 0.1, 0.2],
        list(np.linspace(1.0, 40.0, 25) ** 1.5),
    ],
    ids=["six-sites", "skewed-25"],
)
def test_sampling_frequencies_follow_decoded_probabilities(weights):
    q, a = alias.build(weights)
    draws = alias.sample(q, a, _uniforms(200_000))
    observed = np.bincount(draws, minlength=len(weights))
    expected = alias.decode_probabilities(q, a) * draws.size
    expected *= draws.size / expected.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3
