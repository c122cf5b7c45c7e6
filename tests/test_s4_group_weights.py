"""S4 group weights: the smooth regulariser's properties (hypothesis), coverage and PK order,
gamma echo, determinism and shard invariance, the hard-capped legacy mode caught by T-S4-07, the
multi-tz cohort at B+, and every bad input named."""

from __future__ import annotations

import copy

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

from certification import metrics as M
from engine import contracts
from engine.errors import EngineError
from engine.policies import load_policy
from engine.states import s4_group_weights as s4
from tests.helpers import SITE_PK, make_world, mix_policy, run_s3, run_s4

SOFT = dict(knee=0.6, cap=0.85, max_strength=0.6)


@pytest.fixture(scope="module")
def world():
    return make_world(n_merchants=160, seed=4)


@pytest.fixture(scope="module")
def s3_df(world):
    return run_s3(world)["s3_day_effects"]


def soft_policy(**changes):
    return mix_policy(mode="soft_cap_blend", **changes)


@pytest.fixture(scope="module")
def out(world, s3_df):
    """The state with the soft cap: it exercises every regulariser column."""
    return run_s4(world, s3_df, soft_policy())


# ----------------------------------------------------------------------------- the regulariser


def _flat(mixes):
    n = np.array([len(m) for m in mixes])
    return np.concatenate(mixes), np.cumsum(n) - n, n


@st_.composite
def raw_mixes(draw):
    """A batch of raw mixes with 2..8 groups, from near-uniform to one group holding ~all mass."""
    mixes = []
    for _ in range(draw(st_.integers(1, 6))):
        n = draw(st_.integers(2, 8))
        w = np.array(draw(st_.lists(st_.floats(1e-6, 1.0), min_size=n, max_size=n)))
        power = draw(st_.floats(0.2, 12.0))  # sharpens toward a dominant group
        w = w**power + 1e-300
        mixes.append(w / w.sum())
    return mixes


@settings(max_examples=150, deadline=None)
@given(raw_mixes())
def test_sum_to_one_and_rank_order(mixes):
    p_raw, start, n = _flat(mixes)
    p, lam = s4.soft_cap_blend(p_raw, start, n, **SOFT)
    seg = np.repeat(np.arange(len(n)), n)
    assert np.max(np.abs(np.bincount(seg, weights=p) - 1.0)) <= 1e-12
    assert np.all(p > 0) and np.all(lam >= 0) and np.all(lam <= SOFT["max_strength"])
    for a, b in zip(np.split(p_raw, start[1:]), np.split(p, start[1:])):
        da, db = a[:, None] - a[None, :], b[:, None] - b[None, :]
        assert np.all(np.sign(da) * np.sign(db) >= 0)  # no pair reversed
        assert np.all(db[da == 0] == 0)  # ties stay ties
        # strict order survives wherever the raw gap is above float resolution of the output
        resolved = np.abs(da) > 1e-12
        assert np.array_equal(np.sign(da[resolved]), np.sign(db[resolved]))
        # the top share never rises and stays under the soft cap whenever it started above the knee
        assert b.max() <= a.max() + 1e-15
        if a.max() > SOFT["knee"]:
            assert b.max() < max(SOFT["cap"], (1 - SOFT["max_strength"]) * a.max() + SOFT["max_strength"] / len(a)) + 1e-12


@settings(max_examples=150, deadline=None)
@given(raw_mixes(), st_.integers(0, 2**32 - 1))
def test_continuity(mixes, seed):
    p_raw, start, n = _flat(mixes)
    rng = np.random.default_rng(seed)
    eps = 1e-7
    q = p_raw * np.exp(eps * rng.uniform(-1, 1, p_raw.size))
    seg = np.repeat(np.arange(len(n)), n)
    q = q / np.bincount(seg, weights=q)[seg]
    a, _ = s4.soft_cap_blend(p_raw, start, n, **SOFT)
    b, _ = s4.soft_cap_blend(q, start, n, **SOFT)
    # a small move of the input moves the output by at most a small multiple of it (no jumps)
    assert np.max(np.abs(a - b)) <= 10 * np.max(np.abs(p_raw - q)) + 1e-15


@settings(max_examples=150, deadline=None)
@given(raw_mixes(), st_.floats(0.05, 1.0))
def test_power_map_scales_every_log_ratio_by_tau(mixes, tau):
    p_raw, start, n = _flat(mixes)
    p, strength = s4.power_map(p_raw, start, n, tau=tau)
    seg = np.repeat(np.arange(len(n)), n)
    assert np.max(np.abs(np.bincount(seg, weights=p) - 1.0)) <= 1e-12
    assert np.all(strength == pytest.approx(1.0 - tau, abs=1e-15) if tau < 1 else strength == 0)
    for a, b in zip(np.split(p_raw, start[1:]), np.split(p, start[1:])):
        la, lb = np.log(a), np.log(b)
        # ln(p_i / p_j) = tau ln(r_i / r_j) for every pair: a uniform contraction, slope tau
        np.testing.assert_allclose(lb[:, None] - lb[None, :], tau * (la[:, None] - la[None, :]), rtol=1e-9, atol=1e-9)


def test_off_is_the_raw_mix_bit_for_bit(world, s3_df):
    df = run_s4(world, s3_df, mix_policy(mode="off"))["s4_group_weights"]
    assert np.array_equal(df["p_group"].to_numpy(), (df["mass_raw"] / df["denom_raw"]).to_numpy())
    assert not df["regularizer_applied"].any()
    assert load_policy("group_mix_regularizer_v1").data["mode"] == "off"  # the shipped default


def test_continuous_across_the_knee():
    x = np.linspace(0.5, 0.9999, 20001)
    p_raw = np.column_stack([x, 1 - x]).ravel()
    start, n = np.arange(0, p_raw.size, 2), np.full(x.size, 2)
    p, _ = s4.soft_cap_blend(p_raw, start, n, **SOFT)
    top = p[0::2]
    assert np.all(np.diff(top) > 0)  # strictly increasing in the raw top share: no plateau
    assert np.max(np.abs(np.diff(top))) <= 1.01 * np.max(np.diff(x))  # slope <= 1: no jump at the knee


def _random_mixes(count, seed):
    rng = np.random.default_rng(seed)
    mixes = []
    for _ in range(count):
        n = int(rng.integers(2, 9))
        # small concentrations give many dominant mixes (top share > 0.95), large ones near-uniform
        w = rng.dirichlet(np.full(n, rng.choice([0.15, 0.5, 2.0]))) + 1e-9
        mixes.append(w / w.sum())
    return mixes


def _distinct_outputs(fn, mixes):
    p_raw, start, n = _flat(mixes)
    p, _ = fn(p_raw, start, n)
    outs = np.split(p, start[1:])
    by_n = {}
    for o in outs:
        by_n.setdefault(len(o), []).append(o)
    return sum(np.unique(np.vstack(v), axis=0).shape[0] for v in by_n.values())


def test_injective_on_10000_random_mixes():
    mixes = _random_mixes(10_000, seed=9)
    assert len({m.tobytes() for m in mixes}) == 10_000
    assert _distinct_outputs(lambda p, s, n: s4.soft_cap_blend(p, s, n, **SOFT), mixes) == 10_000
    # the upstream blend-then-clamp maps many raw mixes onto one output
    collapsed = _distinct_outputs(lambda p, s, n: s4.hard_cap_legacy(p, s, n, blend=0.2, cap=0.68), mixes)
    assert collapsed < 9_500  # ~9% of these mixes share an output with another


def test_legacy_collapses_two_group_days_onto_one_point():
    x = np.linspace(0.9, 0.999, 50)
    p_raw = np.column_stack([x, 1 - x]).ravel()
    p, _ = s4.hard_cap_legacy(p_raw, np.arange(0, 100, 2), np.full(50, 2), blend=0.2, cap=0.68)
    assert np.unique(p.reshape(-1, 2).round(12), axis=0).shape[0] == 1  # (0.68, 0.32) for all


# ----------------------------------------------------------------------------- the state


def test_coverage_schema_pk_and_echo(world, s3_df, out):
    df = out["s4_group_weights"]
    contracts.conform("s4_group_weights", df)
    contracts.check_key_order("s4_group_weights", df)
    assert df.select("merchant_id", "utc_day", "tz_group_id").equals(s3_df.select("merchant_id", "utc_day", "tz_group_id"))
    assert np.array_equal(df["gamma"].to_numpy(), s3_df["gamma"].to_numpy())  # bit-exact echo
    _, st, s1 = world
    base = (s1.join(st, on=SITE_PK).group_by("merchant_id", "tzid").agg(pl.col("p_weight").sum().alias("b"))
            .rename({"tzid": "tz_group_id"}))
    chk = df.join(base, on=["merchant_id", "tz_group_id"])
    np.testing.assert_allclose(chk["base_share"].to_numpy(), chk["b"].to_numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(df["mass_raw"].to_numpy(), (df["base_share"] * df["gamma"]).to_numpy(), rtol=1e-15)
    md = df.group_by("merchant_id", "utc_day").agg(pl.col("p_group").sum().alias("s"), pl.col("mass_raw").sum().alias("m"),
                                                   pl.col("denom_raw").first().alias("d"), pl.len().alias("n"),
                                                   pl.col("regularizer_applied").any().alias("a"))
    assert (md["s"] - 1).abs().max() <= 1e-12
    np.testing.assert_allclose(md["m"].to_numpy(), md["d"].to_numpy(), rtol=1e-14)
    assert not md.filter(pl.col("n") == 1)["a"].any()  # single-group days: p = 1, untouched
    assert (df.filter(pl.col("regularizer_applied"))["regularizer_delta_mass"] > 0).all()
    assert (df.filter(~pl.col("regularizer_applied"))["regularizer_delta_mass"] == 0).all()
    assert out["_report"]["max_sum_error"] <= 1e-12


def test_deterministic_order_independent_and_shard_invariant(world, s3_df, out):
    assert run_s4(world, s3_df, soft_policy())["s4_group_weights"].equals(out["s4_group_weights"])
    shuffled = run_s4(world, s3_df.sample(fraction=1.0, shuffle=True, seed=5), soft_policy())["s4_group_weights"]
    assert shuffled.equals(out["s4_group_weights"])
    merchants, st, s1 = world
    ids = merchants["merchant_id"].to_list()[::4]
    keep = pl.col("merchant_id").is_in(ids)
    part = run_s4((merchants.filter(keep), st.filter(keep), s1.filter(keep)), s3_df.filter(keep), soft_policy())
    assert part["s4_group_weights"].equals(out["s4_group_weights"].filter(keep))


def test_apply_threshold(world, s3_df):
    df = run_s4(world, s3_df, soft_policy(apply_when_groups_ge=3))["s4_group_weights"]
    two = df.filter(pl.len().over("merchant_id", "utc_day") == 2)
    assert two.height and not two["regularizer_applied"].any()
    np.testing.assert_allclose(two["p_group"].to_numpy(), (two["mass_raw"] / two["denom_raw"]).to_numpy(), rtol=1e-15)


def test_gates_soft_mode_and_legacy_negative_control():
    world = make_world(n_merchants=400, seed=12)
    s3_df = run_s3(world)["s3_day_effects"]
    soft = run_s4(world, s3_df, soft_policy())["s4_group_weights"]
    m = M.s4_metrics(soft)
    assert m["s4_mass_error_max"] <= 1e-9  # T-S4-06
    assert m["s4_point_mass_share"] <= 0.01 and m["s4_rank_agreement"] == 1.0  # T-S4-07
    _, st, _ = world
    multi = st.group_by("merchant_id").agg(pl.col("tzid").n_unique().alias("k")).filter(pl.col("k") > 1)
    c = M.s4_metrics(soft.join(multi, on="merchant_id", how="semi"))
    assert c["s4_max_p_median"] <= 0.78 and c["s4_max_p_p75"] <= 0.88  # multi_tz cohort at B+
    assert c["s4_share_max_p_ge_095"] <= 0.20 and c["s4_share_two_groups_ge_005"] >= 0.50
    assert c["s4_entropy_median"] >= 0.45
    legacy = run_s4(world, s3_df, mix_policy(mode="hard_cap_legacy"))["s4_group_weights"]
    assert M.t_s4_07_point_mass(legacy)["s4_point_mass_share"] > 0.01  # caught by T-S4-07


@pytest.mark.parametrize("changes, field", [
    ({"mode": "soft_cap_blend", "soft_cap_blend/cap": 1.2}, "/soft_cap_blend/cap"),
    ({"mode": "soft_cap_blend", "soft_cap_blend/cap": 0.0}, "/soft_cap_blend/cap"),
    ({"mode": "soft_cap_blend", "soft_cap_blend/knee": 0.9}, "/soft_cap_blend/knee"),
    ({"mode": "power", "power/tau": 0.0}, "/power/tau"),
    ({"mode": "power", "power/tau": 1.5}, "/power/tau"),
    ({"mode": "hard_cap_legacy", "hard_cap_legacy/cap": -0.1}, "/hard_cap_legacy/cap"),
    ({"apply_when_groups_ge": 1}, "/apply_when_groups_ge"),
    ({"mode": "bogus"}, "/mode"),
])
def test_bad_policy_raises(world, s3_df, changes, field):
    with pytest.raises(EngineError) as err:
        run_s4(world, s3_df, mix_policy(**changes))
    assert err.value.field == field


def test_bad_policy_file_fails_schema(tmp_path):
    data = copy.deepcopy(load_policy("group_mix_regularizer_v1").data)
    data["soft_cap_blend"]["cap"] = 1.5
    (tmp_path / "group_mix_regularizer_v1.json").write_text(__import__("json").dumps(data))
    with pytest.raises(EngineError):
        load_policy("group_mix_regularizer_v1", tmp_path)


def _nth(df, i, **cols):
    return df.with_columns(**{k: pl.when(pl.int_range(pl.len()) == i).then(v).otherwise(pl.col(k)) for k, v in cols.items()})


@pytest.mark.parametrize("bad, match", [
    (lambda d: d.filter(pl.int_range(pl.len()) != 17), "cell missing"),
    (lambda d: pl.concat([d, d.slice(17, 1)]), "cell duplicated"),
    (lambda d: d.filter(pl.col("utc_day") != "2026-01-20"), "day missing"),
    (lambda d: _nth(d, 3, gamma=pl.lit(float("nan"))), "gamma must be finite and > 0"),
    (lambda d: _nth(d, 3, gamma=pl.lit(0.0)), "gamma must be finite and > 0"),
    (lambda d: _nth(d, 3, gamma=pl.lit(-1.0)), "gamma must be finite and > 0"),
    (lambda d: _nth(d, 0, tz_group_id=pl.lit("Antarctica/Troll")), "not one of its site tzids"),
    (lambda d: _nth(d, 0, utc_day=pl.lit("Jan 1")), "YYYY-MM-DD"),
])
def test_bad_s3_raises(world, s3_df, bad, match):
    with pytest.raises(EngineError, match=match):
        run_s4(world, bad(s3_df))


def test_bad_s1_raises(world, s3_df):
    merchants, st, s1 = world
    with pytest.raises(EngineError, match="no site_timezones row"):
        run_s4((merchants, st.slice(1), s1), s3_df)
    with pytest.raises(EngineError, match="finite and >= 0"):
        run_s4((merchants, st, _nth(s1, 2, p_weight=pl.lit(-0.1))), s3_df)
    with pytest.raises(EngineError, match="not 1"):
        run_s4((merchants, st, _nth(s1, 2, p_weight=pl.col("p_weight") + 0.01)), s3_df)


def test_base_shares_do_not_depend_on_site_row_order(world, s3_df, out):
    """Float sums in a fixed order: a reordered site_timezones gives bit-identical output."""
    merchants, st, s1 = world
    for seed in range(3):
        shuffled = (merchants, st.sample(fraction=1.0, shuffle=True, seed=seed), s1)
        got = run_s4(shuffled, s3_df, soft_policy())["s4_group_weights"]
        assert got.equals(out["s4_group_weights"])
