"""S1 metric recipes: hand-computed tiny frames and a plain-numpy recomputation."""

import numpy as np
import polars as pl
import pytest

from certification import metrics as m


def frame(weights: dict[int, list[float]], profile: dict[int, str] | None = None) -> pl.DataFrame:
    rows = [(mid, "US", i + 1, p, (profile or {}).get(mid, "small"))
            for mid, ps in weights.items() for i, p in enumerate(ps)]
    return pl.DataFrame(rows, schema={"merchant_id": pl.UInt64, "legal_country_iso": pl.String,
                                      "site_order": pl.Int32, "p_weight": pl.Float64,
                                      "weight_profile": pl.String}, orient="row")


# A: skewed, B: uniform, C: two sites, D: a single site (uniform by definition, no top2).
TINY = frame({1: [0.5, 0.3, 0.2], 2: [0.25] * 4, 3: [0.9, 0.1], 4: [1.0]})


def test_residual_median_by_hand():
    # residuals: A 1/6, 1/30, 2/15; B 0 x4; C 0.4, 0.4; D 0 -> ten values, midpoint of the
    # 5th (0) and 6th (1/30) = 1/60
    assert m.t_s1_01_residual_median(TINY) == pytest.approx(1 / 60, abs=1e-15)


def test_top_gap_median_by_hand():
    # merchants with N >= 2: A 0.2, B 0.0, C 0.8 -> median 0.2 (D is excluded)
    assert m.t_s1_02_top_gap_median(TINY) == pytest.approx(0.2, abs=1e-15)
    # a tie at the top is a zero gap, not the gap to the third site
    assert m.t_s1_02_top_gap_median(frame({1: [0.4, 0.4, 0.2]})) == pytest.approx(0.0, abs=1e-15)


def test_hhi_iqr_by_hand():
    # HHI: A 0.38, B 0.25, C 0.82, D 1.0 -> sorted 0.25 0.38 0.82 1.0
    # q25 at position 0.75: 0.25 + 0.75 * 0.13 = 0.3475; q75 at 2.25: 0.82 + 0.25 * 0.18 = 0.865
    assert m.t_s1_03_hhi_iqr(TINY) == pytest.approx(0.865 - 0.3475, abs=1e-12)


def test_uniform_share_by_hand():
    assert m.t_s1_04_uniform_share(TINY) == pytest.approx(0.5)  # B and D
    nearly = frame({1: [0.5 + 1e-13, 0.5 - 1e-13], 2: [0.5 + 1e-9, 0.5 - 1e-9]})
    assert m.t_s1_04_uniform_share(nearly) == pytest.approx(0.5)  # spread 2e-13 counts, 2e-9 does not


def test_metrics_equal_plain_numpy_recomputation():
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 40, size=300)
    weights = {i + 1: list(rng.dirichlet(np.full(n, rng.choice([0.5, 3.0, 1e9])))) for i, n in enumerate(sizes)}
    df = frame(weights)
    resid = np.concatenate([np.abs(np.array(p) - 1 / len(p)) for p in weights.values()])
    ordered = [np.sort(p)[::-1] for p in weights.values()]
    gaps = [o[0] - o[1] for o in ordered if o.size >= 2]
    hhi = np.array([np.sum(np.square(p)) for p in weights.values()])
    uniform = np.array([np.ptp(p) <= 1e-12 for p in weights.values()])
    assert m.t_s1_01_residual_median(df) == pytest.approx(np.median(resid), rel=1e-12)
    assert m.t_s1_02_top_gap_median(df) == pytest.approx(np.median(gaps), rel=1e-12)
    assert m.t_s1_03_hhi_iqr(df) == pytest.approx(np.subtract(*np.quantile(hhi, [0.75, 0.25])), rel=1e-12)
    assert m.t_s1_04_uniform_share(df) == pytest.approx(uniform.mean())


def test_cohorts_split_by_topology_and_bucket():
    s1 = frame({1: [0.5, 0.3, 0.2], 2: [0.25] * 4, 3: [0.9, 0.1]}, profile={1: "small", 2: "small", 3: "mid"})
    tz = s1.select("merchant_id", "legal_country_iso", "site_order").with_columns(
        pl.when((pl.col("merchant_id") == 1) & (pl.col("site_order") == 3))
        .then(pl.lit("America/Chicago")).otherwise(pl.lit("America/New_York")).alias("tzid"))
    out = m.s1_cohorts(s1, tz)
    assert out.select("cohort_kind", "cohort").rows() == [
        ("tz_topology", "single_tz"), ("tz_topology", "multi_tz"),
        ("size_bucket", "small"), ("size_bucket", "mid"), ("size_bucket", "large")]
    by = {r["cohort"]: r for r in out.iter_rows(named=True)}
    assert (by["multi_tz"]["merchants"], by["multi_tz"]["sites"]) == (1, 3)
    assert (by["single_tz"]["merchants"], by["small"]["merchants"], by["mid"]["merchants"]) == (2, 2, 1)
    single = s1.filter(pl.col("merchant_id") != 1)
    for gate, fn in m.S1_METRICS.items():
        assert by["single_tz"][gate] == pytest.approx(fn(single), nan_ok=True)
    assert by["mid"]["T-S1-02"] == pytest.approx(0.8)
    assert by["large"]["merchants"] == 0 and np.isnan(by["large"]["T-S1-01"])
