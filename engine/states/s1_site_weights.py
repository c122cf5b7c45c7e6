"""S1 site weights: each merchant's long-run probability of routing to each of its sites.

Modes (policy `alias_layout_policy_v1`, `weight_source.mode`):

- `profile_mixture_v2` (the plan's P1). A merchant falls in a size bucket by its site count N
  (small / mid / large, thresholds in the policy). Per bucket, a mixture over three components is
  drawn per merchant:
    * `hub_spoke`: one hub takes 1/N + (1 - 1/N) x with x ~ Beta(bucket mean, concentration); the
      spokes share the rest by a Dirichlet(alpha) (normalised Gamma(alpha) draws).
    * `heavy_tail`: the site of rank r gets r^-s x Gamma(alpha) jitter, exponent s ~ Uniform per
      bucket (a drawn power law of rank).
    * `near_uniform`: a Dirichlet with a high alpha (every site close to 1/N, none exactly).
  Then a smooth top-1 soft cap per bucket: above `cap` the top share is mapped through
  cap + H tanh((x - cap) / H) with H = 1 - min_secondary_mass - cap, so it bends away from the cap
  continuously and never reaches 1 - min_secondary_mass (no merchant collapses onto one site, and
  no two merchants are pushed onto the same capped value). The mass taken from the top is
  returned to the other sites in proportion to their shares, which keeps their order.
- `uniform`: 1/N per site. The baseline the certification harness must fail.
- `column`: raw weights from a named column of `site_locations`, normalised per merchant.

Which site is the hub and how sites rank (hub_spoke, heavy_tail) follows a site attractiveness
score built from the merchant's own sealed inputs only:
    score = home_country_bonus * [site in the merchant's home country]
          + city_cluster_log_coef * ln(merchant's sites in the same lat/lon cell)
          + tz_cluster_log_coef * ln(merchant's sites in the same tzid)
          + noise_scale * Gumbel noise.
The world places sites in cities with probability rising with population, so a merchant's sites
pile up in its big cities: the cell count is a proxy for city size taken from the data itself. We
deliberately do not look up city populations in a gazetteer: that would be an input S0 never
sealed, and it would not exist for a user's own upstream tables.

RNG (stream `2B.S1.site_weights`): counter high word = merchant_id; low word = a documented slot
(see SLOT_* / SITE_BASE_*). Site-level slots add the site's 0-based index inside its merchant in
primary-key order. The stream's key is (upstream identity, seed), never the manifest fingerprint
or a policy's bytes (engine/rng.py, common random numbers), so every draw depends only on
(upstream identity, seed, merchant_id, slot): any sharding of merchants gives identical bytes.

Provenance per row: weight_source = mode, weight_profile = size bucket, mixture_component (or
`uniform` / `column`), alpha_used = the component's Gamma shape (0.0 when nothing was drawn),
quantised_bits = 24, floor_applied = the soft cap bent this merchant's top share.

Afterwards every merchant is checked to sum to 1 within 1e-12 and to quantise onto the 2^24 grid
within the policy epsilon (the same law S2 builds its alias tables on).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .. import alias
from ..context import Context
from ..errors import EngineError
from ..policies import Policy
from ..rng import STREAM_S1, Stream

READS = ("site_locations", "site_timezones", "merchants")
POLICIES = ("alias_layout_policy_v1",)
WRITES = ("s1_site_weights",)

PK = ["merchant_id", "legal_country_iso", "site_order"]
BUCKETS = ("small", "mid", "large")
COMPONENTS = ("hub_spoke", "heavy_tail", "near_uniform")

# Counter low-word layout. Merchant-level draws: one block each at a fixed slot. Site-level
# draws: base + site index (a merchant never has 2^32 sites, so the ranges cannot overlap).
SLOT_COMPONENT = 0  # uniform -> mixture component
SLOT_HUB_LIFT = 1  # Beta -> hub lift x (hub_spoke)
SLOT_TAIL_EXPONENT = 2  # uniform -> power-law exponent s (heavy_tail)
SITE_BASE_RANK_NOISE = 1 << 32  # uniform -> Gumbel noise of the attractiveness score
SITE_BASE_SHARE = 2 << 32  # Gamma(alpha) share draw of the site

SUM_TOLERANCE = 1e-12
GRID_BITS = 24
OUTPUT_COLUMNS = [
    "merchant_id", "legal_country_iso", "site_order", "p_weight", "weight_source", "weight_profile",
    "mixture_component", "alpha_used", "quantised_bits", "floor_applied", "created_utc",
]


# ----------------------------------------------------------------------------- segment kernels
# Rows are sorted by primary key, so each merchant is one contiguous segment. These helpers do
# per-merchant reductions over whole columns; summation runs in row order inside a segment, so a
# merchant's result never depends on which other merchants are in the frame.

class Segments:
    def __init__(self, merchant_ids: np.ndarray):
        n = merchant_ids.size
        change = np.ones(n, dtype=bool)
        change[1:] = merchant_ids[1:] != merchant_ids[:-1]
        self.starts = np.flatnonzero(change)
        self.seg = np.cumsum(change) - 1  # segment (merchant) index of each row
        self.counts = np.diff(np.append(self.starts, n))
        self.merchant_ids = merchant_ids[self.starts]
        self.index = np.arange(n) - self.starts[self.seg]  # 0-based site index inside the merchant

    def sum(self, x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, self.starts)

    def rank_by(self, key: np.ndarray) -> np.ndarray:
        """0-based rank of each row inside its merchant by ascending key (ties: lower site index)."""
        order = np.lexsort((self.index, key, self.seg))
        rank = np.empty_like(self.index)
        rank[order] = np.arange(order.size) - self.starts[self.seg[order]]
        return rank


# ----------------------------------------------------------------------------- state

def run(inputs: dict, policies: dict[str, Policy], ctx: Context) -> dict[str, pl.DataFrame]:
    policy = policies["alias_layout_policy_v1"].data
    sites = _joined_sites(inputs)
    if sites.height == 0:
        raise EngineError("site_locations", "(rows)", "no sites: S1 needs at least one site")
    segs = Segments(sites["merchant_id"].to_numpy())
    mix = policy["profile_mixture_v2"]
    bucket = _bucket_of(segs.counts, mix["merchant_size_buckets"])  # per merchant, index into BUCKETS

    mode = policy["weight_source"]["mode"]
    if mode == "profile_mixture_v2":
        p, component, alpha, floored = _profile_mixture(sites, segs, bucket, mix, ctx)
        component_names = np.asarray(COMPONENTS, dtype=object)[component]
    elif mode == "uniform":
        p = 1.0 / segs.counts[segs.seg]
        component_names = np.full(segs.counts.size, "uniform", dtype=object)
        alpha = np.zeros(segs.counts.size)  # 0.0: no concentration parameter was drawn
        floored = np.zeros(segs.counts.size, dtype=bool)
    elif mode == "column":
        p = _column_weights(sites, segs, policy["weight_source"]["column"])
        component_names = np.full(segs.counts.size, "column", dtype=object)
        alpha = np.zeros(segs.counts.size)
        floored = np.zeros(segs.counts.size, dtype=bool)
    else:  # the schema forbids this; kept so a bypassed schema still fails closed
        raise EngineError("alias_layout_policy_v1", "/weight_source/mode", f"unknown mode {mode!r}")

    p = _exact_sum(p, segs)
    _check_quantisation(p, segs, float(policy["quantisation_epsilon"]))

    seg = segs.seg
    out = sites.select(PK).with_columns(
        pl.Series("p_weight", p, dtype=pl.Float64),
        pl.lit(mode).alias("weight_source"),
        pl.Series("weight_profile", np.asarray(BUCKETS, dtype=object)[bucket][seg], dtype=pl.String),
        pl.Series("mixture_component", component_names[seg], dtype=pl.String),
        pl.Series("alpha_used", alpha[seg], dtype=pl.Float64),
        pl.lit(GRID_BITS, dtype=pl.Int32).alias("quantised_bits"),
        pl.Series("floor_applied", floored[seg], dtype=pl.Boolean),
        pl.lit(ctx.created_utc).alias("created_utc"),
    )
    out = out.with_columns(pl.col("merchant_id").cast(pl.UInt64), pl.col("site_order").cast(pl.Int32))
    return {"s1_site_weights": out.select(OUTPUT_COLUMNS)}


def check_policy(policies: dict) -> None:
    """The policy's relations, checked before a run writes anything (`run` applies the same rules
    where it uses the values): bucket bounds, mixture weights summing to one, tail ranges, and
    room between each bucket's top-1 cap and its minimum secondary mass."""
    policy = policies["alias_layout_policy_v1"].data
    mix = policy["profile_mixture_v2"]
    _bucket_of(np.zeros(0, dtype=np.int64), mix["merchant_size_buckets"])
    weights = np.array([[mix["mixture_weights"][b][c] for c in COMPONENTS] for b in BUCKETS])
    bad = np.abs(weights.sum(axis=1) - 1.0) > 1e-9
    if bad.any():
        raise EngineError("alias_layout_policy_v1", f"/profile_mixture_v2/mixture_weights/{BUCKETS[int(np.argmax(bad))]}",
                          "component probabilities must sum to 1")
    low, high = _per_bucket(mix, "tail_exponent_range", "low"), _per_bucket(mix, "tail_exponent_range", "high")
    if (high < low).any():
        raise EngineError("alias_layout_policy_v1",
                          f"/profile_mixture_v2/tail_exponent_range/{BUCKETS[int(np.argmax(high < low))]}",
                          "high must not be below low")
    if (1.0 - _per_bucket(mix, "min_secondary_mass") - _per_bucket(mix, "top1_soft_cap_by_bucket") <= 0).any():
        raise EngineError("alias_layout_policy_v1", "/profile_mixture_v2/top1_soft_cap_by_bucket",
                          "cap + min_secondary_mass must stay below 1")
    source = policy["weight_source"]
    if source["mode"] == "column" and source.get("column") not in ("lat_deg", "lon_deg"):
        raise EngineError("alias_layout_policy_v1", "/weight_source/column",
                          f"{source.get('column')!r} is not a numeric column of site_locations")


def _joined_sites(inputs: dict) -> pl.DataFrame:
    """site_locations in PK order with each site's tzid and its merchant's home country."""
    sites = inputs["site_locations"].sort(PK)
    # After the sort a duplicated key sits next to its twin: compare each row with the previous.
    dup = sites.select(pl.all_horizontal(pl.col(c) == pl.col(c).shift(1) for c in PK).fill_null(False)).to_series()
    if dup.any():
        raise EngineError("site_locations", _site_label(sites.row(int(dup.arg_max()), named=True)),
                          "duplicate primary key")
    tz = inputs["site_timezones"].select(*PK, "tzid")
    sites = sites.join(tz, on=PK, how="left", maintain_order="left")
    missing = sites["tzid"].is_null()
    if missing.any():
        raise EngineError("site_timezones", _site_label(sites.row(int(missing.arg_max()), named=True)),
                          "site has no tzid")
    home = inputs["merchants"].select("merchant_id", "home_country_iso")
    sites = sites.join(home, on="merchant_id", how="left", maintain_order="left")
    missing = sites["home_country_iso"].is_null()
    if missing.any():
        m = sites["merchant_id"][int(missing.arg_max())]
        raise EngineError("merchants", f"merchant_id={m}", "merchant of site_locations is not in merchants")
    return sites


def _site_label(row: dict) -> str:
    return f"merchant_id={row['merchant_id']} legal_country_iso={row['legal_country_iso']} site_order={row['site_order']}"


def _bucket_of(counts: np.ndarray, spec: dict) -> np.ndarray:
    small, mid = int(spec["small_max_sites"]), int(spec["mid_max_sites"])
    if not small < mid:
        raise EngineError("alias_layout_policy_v1", "/profile_mixture_v2/merchant_size_buckets",
                          "small_max_sites must be below mid_max_sites")
    return (counts > small).astype(np.int64) + (counts > mid)


def _per_bucket(mix: dict, key: str, field: str | None = None) -> np.ndarray:
    return np.array([mix[key][b] if field is None else mix[key][b][field] for b in BUCKETS], dtype=np.float64)


def _profile_mixture(sites: pl.DataFrame, segs: Segments, bucket: np.ndarray, mix: dict, ctx: Context):
    stream = Stream(ctx.draws_of, ctx.seed, STREAM_S1)
    mids, n_m = segs.merchant_ids.astype(np.uint64), segs.counts
    seg = segs.seg

    # Component: inverse CDF of the bucket's categorical mixture on one uniform.
    weights = np.array([[mix["mixture_weights"][b][c] for c in COMPONENTS] for b in BUCKETS])
    bad = np.abs(weights.sum(axis=1) - 1.0) > 1e-9
    if bad.any():
        raise EngineError("alias_layout_policy_v1", f"/profile_mixture_v2/mixture_weights/{BUCKETS[int(np.argmax(bad))]}",
                          "component probabilities must sum to 1")
    cum = np.cumsum(weights, axis=1)
    u = stream.uniforms(mids, np.uint64(SLOT_COMPONENT))
    component = np.minimum((u[:, None] >= cum[bucket]).sum(axis=1), len(COMPONENTS) - 1)
    alpha = np.array([mix["concentration_alpha"][c] for c in COMPONENTS])[component]

    # Site order: attractiveness score (documented in the module docstring), rank 0 = hub.
    cov = mix["hub_covariates"]
    cell = float(cov["city_cell_deg"])
    counts = sites.select(
        (pl.col("legal_country_iso") == pl.col("home_country_iso")).alias("home"),
        pl.len().over("merchant_id", (pl.col("lat_deg") / cell).floor(), (pl.col("lon_deg") / cell).floor()).alias("city_n"),
        pl.len().over("merchant_id", "tzid").alias("tz_n"),
    )
    u_noise = stream.uniforms(mids[seg], np.uint64(SITE_BASE_RANK_NOISE) + segs.index.astype(np.uint64))
    score = (cov["home_country_bonus"] * counts["home"].to_numpy().astype(np.float64)
             + cov["city_cluster_log_coef"] * np.log(counts["city_n"].to_numpy().astype(np.float64))
             + cov["tz_cluster_log_coef"] * np.log(counts["tz_n"].to_numpy().astype(np.float64))
             + cov["noise_scale"] * -np.log(-np.log(u_noise)))
    rank = segs.rank_by(-score)

    # One Gamma(alpha) share draw per site; its role depends on the merchant's component.
    g = stream.gammas(mids[seg], np.uint64(SITE_BASE_SHARE) + segs.index.astype(np.uint64), alpha[seg])
    comp_row = component[seg]

    # hub_spoke: hub lift x ~ Beta, hub share h = 1/N + (1 - 1/N) x (a hub is never below uniform).
    lift_mean, lift_conc = _per_bucket(mix, "hub_lift_beta", "mean"), _per_bucket(mix, "hub_lift_beta", "concentration")
    a, b = (lift_mean * lift_conc)[bucket], ((1 - lift_mean) * lift_conc)[bucket]
    x = stream.betas(mids, np.uint64(SLOT_HUB_LIFT), a, b)
    hub = 1.0 / n_m + (1.0 - 1.0 / n_m) * x
    is_hub = rank == 0
    spoke_g = np.where(is_hub, 0.0, g)
    spoke_total = segs.sum(spoke_g)
    with np.errstate(invalid="ignore", divide="ignore"):  # N = 1 merchants have no spokes
        w_hub = np.where(is_hub, hub[seg], (1.0 - hub[seg]) * spoke_g / spoke_total[seg])

    # heavy_tail: share of rank r (1-based) proportional to r^-s times the Gamma jitter.
    low, high = _per_bucket(mix, "tail_exponent_range", "low"), _per_bucket(mix, "tail_exponent_range", "high")
    if (high < low).any():
        raise EngineError("alias_layout_policy_v1",
                          f"/profile_mixture_v2/tail_exponent_range/{BUCKETS[int(np.argmax(high < low))]}",
                          "high must not be below low")
    s = low[bucket] + (high - low)[bucket] * stream.uniforms(mids, np.uint64(SLOT_TAIL_EXPONENT))
    w_tail = (rank + 1.0) ** -s[seg] * g

    w = np.select([comp_row == 0, comp_row == 1], [w_hub, w_tail], default=g)  # near_uniform: Dirichlet
    p = w / segs.sum(w)[seg]

    p, floored = _soft_cap(p, segs, _per_bucket(mix, "top1_soft_cap_by_bucket")[bucket],
                           _per_bucket(mix, "min_secondary_mass")[bucket])
    return p, component, alpha, floored


def _soft_cap(p: np.ndarray, segs: Segments, cap: np.ndarray, min_secondary: np.ndarray):
    """Smoothly compress a top share above `cap` toward the ceiling 1 - min_secondary."""
    headroom = 1.0 - min_secondary - cap
    if (headroom <= 0).any():
        raise EngineError("alias_layout_policy_v1", "/profile_mixture_v2/top1_soft_cap_by_bucket",
                          "cap + min_secondary_mass must stay below 1")
    top_row = segs.starts + _first_max_offset(p, segs)
    x = p[top_row]
    floored = (x > cap) & (segs.counts >= 2)
    new_top = np.where(floored, cap + headroom * np.tanh((x - cap) / np.where(floored, headroom, 1.0)), x)
    rest_old = segs.sum(p) - x  # mass off the top site before the cap
    rest_new = 1.0 - new_top
    # Others keep their proportions; if they had no mass at all they split the freed mass evenly.
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(rest_old > 0, rest_new / rest_old, 0.0)
        even = np.where((rest_old > 0) | (segs.counts < 2), 0.0, rest_new / np.maximum(segs.counts - 1, 1))
    out = p * scale[segs.seg] + even[segs.seg]
    out[top_row] = new_top
    return out, floored


def _first_max_offset(p: np.ndarray, segs: Segments) -> np.ndarray:
    """Offset inside each merchant of its largest share (ties: lower site index); O(n), no sort."""
    top = np.maximum.reduceat(p, segs.starts)
    candidates = np.where(p == top[segs.seg], segs.index, np.iinfo(np.int64).max)
    return np.minimum.reduceat(candidates, segs.starts)


def _column_weights(sites: pl.DataFrame, segs: Segments, column: str) -> np.ndarray:
    if column not in sites.columns:
        raise EngineError("site_locations", column, "weight column named by weight_source.column is missing")
    raw = sites[column].cast(pl.Float64, strict=False)
    values = raw.to_numpy().astype(np.float64)  # nulls become NaN here
    for bad, rule in ((~np.isfinite(values), "weight is NaN, null or infinite"), (values < 0, "weight is negative")):
        if bad.any():
            row = sites.row(int(np.argmax(bad)), named=True)
            raise EngineError("site_locations", f"{_site_label(row)} column={column}", rule)
    total = segs.sum(values)
    if (total <= 0).any():
        m = segs.merchant_ids[int(np.argmax(total <= 0))]
        raise EngineError("site_locations", f"merchant_id={m} column={column}", "weights sum to zero")
    return values / total[segs.seg]


def _exact_sum(p: np.ndarray, segs: Segments) -> np.ndarray:
    """Renormalise, put the last rounding residual on each merchant's top site, verify 1e-12."""
    p = p / segs.sum(p)[segs.seg]
    top_row = segs.starts + _first_max_offset(p, segs)
    p[top_row] += 1.0 - segs.sum(p)
    err = np.abs(segs.sum(p) - 1.0)
    if (err > SUM_TOLERANCE).any() or not np.isfinite(p).all() or (p < 0).any():
        m = segs.merchant_ids[int(np.argmax(err > SUM_TOLERANCE))] if (err > SUM_TOLERANCE).any() else "?"
        raise EngineError("s1_site_weights", f"merchant_id={m}", "weights do not sum to 1 within 1e-12")
    return p


def quantise_check(p: np.ndarray, merchant_ids: np.ndarray, epsilon: float) -> np.ndarray:
    """Grid masses m (sum 2^24 per merchant) of weights in PK order; raises if off by > epsilon."""
    segs = Segments(np.asarray(merchant_ids))
    return _check_quantisation(np.asarray(p, dtype=np.float64), segs, epsilon)


def _check_quantisation(p: np.ndarray, segs: Segments, epsilon: float) -> np.ndarray:
    """The 2^24 grid check of docs/states.md through the one alias law (engine/alias.py).

    Returns the grid masses; raises naming the merchant when a merchant cannot be quantised
    within epsilon (the policy's epsilon, never looser than the alias law's own).
    """
    offsets = np.append(segs.starts, p.size).astype(np.int64)
    try:
        m = alias.quantise_many(p, offsets)
    except EngineError as exc:
        raise EngineError("s1_site_weights", "quantisation", f"{exc.field}: {exc.rule}") from None
    err = np.abs(m / float(alias.GRID) - p)
    if (err > epsilon).any():
        i = int(segs.seg[np.argmax(err)])
        raise EngineError("s1_site_weights", f"merchant_id={segs.merchant_ids[i]}",
                          f"2^24 quantisation off by {err.max():.3e} > epsilon {epsilon:g}")
    return m
