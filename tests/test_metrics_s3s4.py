"""S3/S4 certification metrics against plain-numpy recomputations of the docs/certification.md recipes,
on small frames, plus the detectors (point mass, rank reversal), the floor and the cohorts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import levene

from certification import metrics as M
from tests.helpers import make_world, run_s3, run_s4


def _lin_q(x, q):
    return float(np.quantile(np.asarray(x, dtype=np.float64), q, method="linear"))


@pytest.fixture(scope="module")
def frames():
    world = make_world(n_merchants=60, seed=21)
    s3 = run_s3(world)["s3_day_effects"]
    s4 = run_s4(world, s3)["s4_group_weights"]
    return world, s3, s4


def _by(df, keys):
    """{key tuple: row indices} in first-seen order, by plain Python."""
    out = {}
    for i, k in enumerate(zip(*(df[c].to_list() for c in keys))):
        out.setdefault(k, []).append(i)
    return out


def test_s3_metrics_match_numpy(frames):
    _, s3, _ = frames
    gamma, lg = s3["gamma"].to_numpy(), s3["log_gamma"].to_numpy()
    stds = [np.std(gamma[ix], ddof=1) for ix in _by(s3, ["merchant_id"]).values()]
    got = M.t_s3_01_merchant_std(s3)
    assert got["s3_std_median"] == pytest.approx(np.median(stds), rel=1e-12)
    assert got["s3_std_p90_over_p50"] == pytest.approx(_lin_q(stds, 0.9) / np.median(stds), rel=1e-12)

    groups = [lg[ix] for _, ix in sorted(_by(s3, ["tz_group_id"]).items()) if len(ix) >= 100]
    got2 = M.t_s3_02_tz_differentiation(s3, min_rows=100)
    assert got2["s3_tz_groups_tested"] == len(groups) >= 3
    assert got2["s3_tz_levene_p"] == pytest.approx(levene(*groups, center="median").pvalue, rel=1e-9, abs=1e-300)
    sd = np.array([np.std(g, ddof=1) for g in groups])
    assert got2["s3_tz_std_cv"] == pytest.approx(np.std(sd, ddof=1) / np.mean(sd), rel=1e-9)

    got3 = M.t_s3_03_aggregate_stability(s3, gamma_clip=(0.95, 1.05))
    assert got3["s3_min_gamma"] == gamma.min()
    assert got3["s3_clipped_share"] == pytest.approx(np.mean((gamma <= 0.95) | (gamma >= 1.05)))
    assert got3["s3_mean_gamma_dev"] == pytest.approx(abs(gamma.mean() - 1), rel=1e-9)
    assert got3["s3_max_abs_log_gamma"] == np.abs(lg).max()
    assert M.t_s3_03_aggregate_stability(s3, clipped_rows=7)["s3_clipped_share"] == 7 / s3.height


def test_s3_02_needs_two_big_groups(frames):
    _, s3, _ = frames
    got = M.t_s3_02_tz_differentiation(s3, min_rows=10**9)
    assert np.isnan(got["s3_tz_levene_p"]) and got["s3_tz_groups_tested"] == 0


def _numpy_s4(s4):
    p, mass = s4["p_group"].to_numpy(), s4["mass_raw"].to_numpy()
    rows = []
    for ix in _by(s4, ["merchant_id", "utc_day"]).values():
        q, m = p[ix], mass[ix]
        pos = q[q > 0]
        rev = any(m[i] < m[j] and q[i] > q[j] for i in range(len(ix)) for j in range(len(ix)))
        rows.append((len(ix), q.max(), -np.sum(pos * np.log(pos)), np.sum(q >= 0.05), abs(q.sum() - 1), not rev))
    return np.array(rows, dtype=np.float64)


def test_s4_metrics_match_numpy(frames):
    _, _, s4 = frames
    r = _numpy_s4(s4)
    n, mx, ent, ge, err, ok = r.T
    got = M.s4_metrics(s4)
    assert got["s4_max_p_median"] == pytest.approx(np.median(mx), rel=1e-12)
    assert got["s4_max_p_p75"] == pytest.approx(_lin_q(mx, 0.75), rel=1e-12)
    assert got["s4_share_max_p_ge_095"] == pytest.approx(np.mean(mx >= 0.95))
    assert got["s4_share_two_groups_ge_005"] == pytest.approx(np.mean(ge >= 2))
    assert got["s4_entropy_median"] == pytest.approx(np.median(ent), rel=1e-12)
    assert got["s4_mass_error_max"] == pytest.approx(err.max(), abs=1e-15)  # summation order differs
    multi = n >= 2
    _, counts = np.unique(np.round(mx[multi], 6), return_counts=True)
    assert got["s4_point_mass_share"] == pytest.approx(counts.max() / multi.sum())
    assert got["s4_rank_agreement"] == pytest.approx(ok[multi].mean()) == 1.0
    # each gate function also works on the published frame directly
    assert M.t_s4_01_max_p_median(s4) == got["s4_max_p_median"]


def test_s4_floor_and_group_shares(frames):
    _, _, s4 = frames
    n = _numpy_s4(s4)[:, 0]
    ideal_max = np.where(n >= 2, 1 / n, 1.0)
    ideal_ent = np.log(n)
    floor = M.s4_floor_metrics(s4)
    assert floor["s4_max_p_median"] == pytest.approx(np.median(ideal_max))
    assert floor["s4_max_p_p75"] == pytest.approx(_lin_q(ideal_max, 0.75))
    assert floor["s4_share_max_p_ge_095"] == pytest.approx(np.mean(n == 1))
    assert floor["s4_share_two_groups_ge_005"] == pytest.approx(np.mean((n >= 2) & (n <= 20)))
    assert floor["s4_entropy_median"] == pytest.approx(np.median(ideal_ent))
    shares = M.s4_group_count_shares(s4)
    assert shares == pytest.approx({"1": np.mean(n == 1), "2": np.mean(n == 2), "3+": np.mean(n >= 3)})


def _tiny_s4(pairs):
    """A hand-made S4 frame: one merchant-day per (p_top, p_other) pair, mass_raw = p."""
    rows = []
    for d, (a, b) in enumerate(pairs):
        for g, v in enumerate((a, b)):
            rows.append({"merchant_id": 1, "utc_day": f"2026-01-{d + 1:02d}", "tz_group_id": f"Z/{g}",
                         "p_group": v, "mass_raw": v})
    return pl.DataFrame(rows, schema_overrides={"merchant_id": pl.UInt64})


def test_point_mass_and_rank_reversal_detectors():
    pairs = [(0.68, 0.32)] * 3 + [(0.6 + 0.001 * i, 0.4 - 0.001 * i) for i in range(17)]
    got = M.t_s4_07_point_mass(_tiny_s4(pairs))
    assert got["s4_point_mass_share"] == pytest.approx(3 / 20) and got["s4_rank_agreement"] == 1.0
    swapped = _tiny_s4(pairs).with_columns(
        mass_raw=pl.when(pl.col("utc_day") == "2026-01-05").then(1 - pl.col("mass_raw")).otherwise(pl.col("mass_raw")))
    assert M.t_s4_07_point_mass(swapped)["s4_rank_agreement"] == pytest.approx(19 / 20)


def test_cohorts(frames):
    world, s3, s4 = frames
    merchants, st, s1 = world
    tab = M.s3_s4_cohorts(s3, s4, st, merchants)
    assert set(tab["cohort_kind"]) == {"tz_topology", "size_bucket", "merchant_class"}
    topo = tab.filter(pl.col("cohort_kind") == "tz_topology")
    assert topo["merchants"].sum() == merchants.height
    multi_ids = st.group_by("merchant_id").agg(pl.col("tzid").n_unique().alias("k")).filter(pl.col("k") > 1)
    multi = topo.filter(pl.col("cohort") == "multi_tz").row(0, named=True)
    expect = M.s4_metrics(s4.join(multi_ids, on="merchant_id", how="semi"))
    assert multi["s4_max_p_median"] == pytest.approx(expect["s4_max_p_median"])
    single = topo.filter(pl.col("cohort") == "single_tz").row(0, named=True)
    assert single["s4_max_p_median"] == 1.0 and single["s4_share_max_p_ge_095"] == 1.0
    sizes = st.group_by("merchant_id").len()
    small = int((sizes["len"] < 10).sum())
    assert tab.filter((pl.col("cohort_kind") == "size_bucket") & (pl.col("cohort") == "small"))["merchants"].item() == small
    # bucket edges from the S1 policy shape (inclusive maxima)
    tab2 = M.s3_s4_cohorts(s3, s4, st, merchants, size_buckets={"small_max_sites": 20, "mid_max_sites": 40})
    assert tab2.filter((pl.col("cohort_kind") == "size_bucket") & (pl.col("cohort") == "small"))["merchants"].item() \
        == int((sizes["len"] <= 20).sum())
    tables = M.cohort_tables(s1.with_columns(weight_profile=pl.lit("mid")), s3, s4, st, merchants)
    assert set(tables) == {"S1", "S3_S4"} and isinstance(tables["S3_S4"], list)
    assert not any(isinstance(v, float) and v != v for r in tables["S3_S4"] for v in r.values())  # JSON-safe




def test_brown_forsythe_equals_scipy_levene_median():
    import numpy as np
    from scipy.stats import levene

    rng = np.random.default_rng(3)
    sizes, scales = [600, 700, 800, 900], [1.0, 1.1, 0.9, 1.05]
    g = np.repeat(list("abcd"), sizes)
    y = rng.normal(size=sum(sizes)) * np.repeat(scales, sizes)
    p, k, n, omega2 = M.brown_forsythe(pl.col("y"), "g", pl.DataFrame({"g": g, "y": y}))
    assert p == pytest.approx(levene(*[y[g == c] for c in "abcd"], center="median").pvalue, rel=1e-9)
    # omega^2 written out in numpy from its definition on z = |y - group median|
    z = np.concatenate([np.abs(y[g == c] - np.median(y[g == c])) for c in "abcd"])
    gz = np.repeat(list("abcd"), sizes)
    zbar = {c: z[gz == c].mean() for c in "abcd"}
    ssb = sum(len(z[gz == c]) * (zbar[c] - z.mean()) ** 2 for c in "abcd")
    ssw = sum(((z[gz == c] - zbar[c]) ** 2).sum() for c in "abcd")
    msw = ssw / (len(z) - 4)
    assert omega2 == pytest.approx((ssb - 3 * msw) / (ssb + ssw + msw), rel=1e-9)


def test_effect_size_of_groups_that_differ_only_by_noise_is_about_zero():
    """T-S3-02's negative control at the metric level: with a million rows the p-value of a tiny
    scale difference saturates, the effect size stays small; pure noise gives omega^2 ~ 0."""
    import numpy as np

    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(100), 3_000)
    same = M.brown_forsythe(pl.col("y"), "g", pl.DataFrame({"g": g, "y": rng.normal(size=g.size)}))
    assert abs(same[3]) < 1e-3
    scales = np.repeat(rng.uniform(0.7, 1.4, 100), 3_000)
    differ = M.brown_forsythe(pl.col("y"), "g", pl.DataFrame({"g": g, "y": rng.normal(size=g.size) * scales}))
    assert differ[0] < 1e-12 and differ[3] > 0.01
