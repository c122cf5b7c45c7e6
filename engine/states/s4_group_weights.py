"""S4 group weights: per merchant x UTC day, the routing mix over the merchant's tz groups.

  base_share(m, g) = sum of S1 p_weight over m's sites in tz g
  mass_raw         = base_share x gamma (gamma echoed from S3, bit for bit)
  p_raw            = mass_raw / denom_raw,   denom_raw = sum over the day's groups
  p_group          = regularise(p_raw)  when the day has >= apply_when_groups_ge groups

The default mode is `off`: p_group = p_raw, the mix the site weights and day effects imply. The
certificate grades S4 against that raw mix (veto gates: no compressive map, consistency with site
weights), so a regulariser must earn its place by keeping the data's contrasts; the modes below are
kept for the trade-off the certify pack draws and as negative controls.

Regulariser `power` (a tempered mix): p proportional to p_raw^tau, 0 < tau <= 1. Every pairwise
log-ratio of shares is multiplied by exactly tau, on every day alike: a uniform, smooth,
rank-preserving and injective contraction (tau = 1 is the identity). The veto gate on compression
reads tau directly.

Regulariser `soft_cap_blend` (plan P3; a negative control since 2026-11-30): a blend toward uniform
whose strength depends smoothly on how dominant the top group is,
  p = (1 - lam) p_raw + lam / n,
with lam chosen so the top share x is mapped to T(x): identity up to `knee`, then
knee + w tanh((x - knee)/w) with w = cap - knee, which approaches `cap` softly and never reaches it.
lam is bounded by `max_strength` (then T(x) is replaced by the bounded blend). Why this form:
  * rank order: an affine map with positive slope and a common offset keeps every pairwise order;
  * exact sum: blend of two distributions, then one renormalisation (error ~1e-16);
  * continuity: lam is a continuous function of p_raw (tanh has slope 1 at the knee, so C1);
  * injectivity: p - u = (1 - lam)(p_raw - u) keeps the direction from uniform, and along any such
    ray the output top share max(T(x), (1-lam_max) x + lam_max/n) is strictly increasing in x, so
    two different raw mixes can never share an output (the upstream blend-then-clamp collapsed every
    dominant two-group day onto one point; that form is kept as `hard_cap_legacy` so the harness can
    show gate T-S4-07 catching it).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from engine.errors import EngineError
from engine.shards import merge_reports, run_whole

READS = ("s1_site_weights", "site_timezones", "s3_day_effects")
POLICIES = ("group_mix_regularizer_v1",)
WRITES = ("s4_group_weights",)

DATASET = "s4_group_weights"
POLICY = "group_mix_regularizer_v1"
SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]
BASE_SUM_TOL = 1e-9

MODES = ("power", "soft_cap_blend", "hard_cap_legacy")  # besides "off"

_COLUMNS = (
    "merchant_id", "utc_day", "tz_group_id", "p_group", "base_share", "gamma", "mass_raw", "denom_raw",
    "regularizer_applied", "regularizer_delta_mass", "created_utc",
)


# --------------------------------------------------------------------------- policy


def _resolve_block(mode: str, cfg: dict) -> dict:
    """The relations inside one mode's block (the schema checks shapes)."""
    if mode == "power":
        tau = float(cfg["tau"])
        if not (0.0 < tau <= 1.0):
            raise EngineError(POLICY, "/power/tau", f"must be in (0, 1], got {tau}")
        return {"tau": tau}
    if mode == "soft_cap_blend":
        knee, cap, strength = float(cfg["knee"]), float(cfg["cap"]), float(cfg["max_strength"])
        if not (0.0 < cap <= 1.0):
            raise EngineError(POLICY, "/soft_cap_blend/cap", f"cap must be in (0, 1], got {cap}")
        # knee >= 1/2 keeps the knee above the uniform share of every n >= 2, so T(1/n) = 1/n.
        if not (0.5 <= knee < cap):
            raise EngineError(POLICY, "/soft_cap_blend/knee", f"need 0.5 <= knee < cap, got knee {knee}, cap {cap}")
        if not (0.0 < strength < 1.0):
            raise EngineError(POLICY, "/soft_cap_blend/max_strength", f"must be in (0, 1), got {strength}")
        return {"knee": knee, "cap": cap, "max_strength": strength}
    blend, cap = float(cfg["blend"]), float(cfg["cap"])  # hard_cap_legacy
    if not (0.0 < cap <= 1.0):
        raise EngineError(POLICY, "/hard_cap_legacy/cap", f"cap must be in (0, 1], got {cap}")
    if not (0.0 <= blend < 1.0):
        raise EngineError(POLICY, "/hard_cap_legacy/blend", f"must be in [0, 1), got {blend}")
    return {"blend": blend, "cap": cap}


def resolve_policy(data: dict) -> dict:
    """Validated regulariser parameters of the mode in use. Every block present is checked, in
    use or not: a sweep or the trade-off may switch to it, and a bad block is a bad input."""
    mode = data.get("mode", "off")
    ge = int(data.get("apply_when_groups_ge", 2))
    if ge < 2:
        raise EngineError(POLICY, "/apply_when_groups_ge", f"must be >= 2, got {ge}")
    if mode not in ("off", *MODES):
        raise EngineError(POLICY, "/mode", f"unknown mode {mode!r}")
    blocks = {m: _resolve_block(m, data[m]) for m in MODES if m in data}
    if mode != "off" and mode not in blocks:
        raise EngineError(POLICY, f"/{mode}", f"mode {mode!r} needs its block")
    return {"mode": mode, "apply_when_groups_ge": ge, **blocks.get(mode, {})}


def check_policy(policies: dict) -> None:
    """The policy's relations, checked before a run writes anything (resolve_policy is the rule)."""
    resolve_policy(policies[POLICY].data)


# --------------------------------------------------------------------------- regularisers
# Both work on flat arrays of contiguous segments (one segment = one merchant-day):
# p_raw (rows), seg_start (segment start rows, ascending), n (rows per segment, >= 1).


def _segment_ids(seg_start: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(seg_start)), n)


def power_map(p_raw, seg_start, n, *, tau, eligible=None):
    """p proportional to p_raw^tau within each segment. Returns (p, tau per segment).

    Worked in logs shifted by each segment's maximum, so shares down to the smallest doubles keep
    their order (a plain power would underflow first); zero shares stay zero."""
    p_raw = np.asarray(p_raw, dtype=np.float64)
    if len(seg_start) == 0:
        return p_raw.copy(), np.zeros(0)
    seg = _segment_ids(seg_start, n)
    t = np.full(len(seg_start), tau) if eligible is None else np.where(eligible, tau, 1.0)
    top = np.maximum.reduceat(p_raw, seg_start)
    with np.errstate(divide="ignore"):
        w = np.where(p_raw > 0, np.exp(t[seg] * (np.log(p_raw) - np.log(top[seg]))), 0.0)
    p = w / np.add.reduceat(w, seg_start)[seg]
    return p, np.where(t < 1.0, 1.0 - t, 0.0)


def soft_cap_target(x: np.ndarray, knee: float, cap: float) -> np.ndarray:
    """T(x): identity below the knee, then a tanh approach to the cap (strictly increasing, C1)."""
    w = cap - knee
    return np.where(x <= knee, x, knee + w * np.tanh((x - knee) / w))


def soft_cap_blend(p_raw, seg_start, n, *, knee, cap, max_strength, eligible=None):
    """Smooth dominance-dependent blend toward uniform. Returns (p, lam per segment)."""
    p_raw = np.asarray(p_raw, dtype=np.float64)
    if len(seg_start) == 0:
        return p_raw.copy(), np.zeros(0)
    seg = _segment_ids(seg_start, n)
    x = np.maximum.reduceat(p_raw, seg_start)
    u = 1.0 / n
    target = soft_cap_target(x, knee, cap)
    excess = x - u
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(excess > 0, (x - target) / excess, 0.0)
    lam = np.clip(lam, 0.0, max_strength)
    if eligible is not None:
        lam = np.where(eligible, lam, 0.0)
    p = (1.0 - lam[seg]) * p_raw + (lam * u)[seg]
    # One renormalisation: the blend already sums to 1 up to rounding; this makes it ~1e-16.
    p = p / np.add.reduceat(p, seg_start)[seg]
    return p, lam


def hard_cap_legacy(p_raw, seg_start, n, *, blend, cap, eligible=None):
    """The upstream form: blend toward uniform, then clamp the top group at `cap` and hand the
    excess to the others pro rata. Every day whose blended top share exceeds the cap lands on the
    same top share; for two groups on one identical vector. Kept only as the negative control."""
    p_raw = np.asarray(p_raw, dtype=np.float64)
    if len(seg_start) == 0:
        return p_raw.copy(), np.zeros(0)
    seg = _segment_ids(seg_start, n)
    lam = np.full(len(seg_start), blend) if eligible is None else np.where(eligible, blend, 0.0)
    p = (1.0 - lam[seg]) * p_raw + (lam / n)[seg]
    top = np.maximum.reduceat(p, seg_start)
    # first row holding the maximum of its segment
    is_max = p == top[seg]
    first = np.zeros(len(p), dtype=bool)
    idx = np.flatnonzero(is_max)
    _, keep = np.unique(seg[idx], return_index=True)
    first[idx[keep]] = True
    clamp = top > cap if eligible is None else (top > cap) & eligible
    rest = np.add.reduceat(np.where(first, 0.0, p), seg_start)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(clamp & (rest > 0), (1.0 - cap) / rest, 1.0)
    p = np.where(first & clamp[seg], cap, p * scale[seg])
    return p, lam


def regularise(p_raw, seg_start, n, params: dict):
    """The published mix of contiguous merchant-day segments under resolved policy `params`
    (`resolve_policy`): (p, strength per segment). Days with fewer than apply_when_groups_ge groups
    are left alone."""
    eligible = np.asarray(n) >= params["apply_when_groups_ge"]
    mode = params["mode"]
    if mode == "power":
        return power_map(p_raw, seg_start, n, tau=params["tau"], eligible=eligible)
    if mode == "soft_cap_blend":
        return soft_cap_blend(p_raw, seg_start, n, knee=params["knee"], cap=params["cap"],
                              max_strength=params["max_strength"], eligible=eligible)
    if mode == "hard_cap_legacy":
        return hard_cap_legacy(p_raw, seg_start, n, blend=params["blend"], cap=params["cap"], eligible=eligible)
    return np.asarray(p_raw, dtype=np.float64), np.zeros(len(seg_start))


# --------------------------------------------------------------------------- inputs


def _base_shares(s1: pl.DataFrame, site_timezones: pl.DataFrame) -> pl.DataFrame:
    w = s1["p_weight"]
    if w.null_count() or w.is_nan().any() or (w < 0).any() or w.is_infinite().any():
        bad = s1.with_row_index("row").filter(
            pl.col("p_weight").is_null() | pl.col("p_weight").is_nan() | (pl.col("p_weight") < 0)
            | pl.col("p_weight").is_infinite()).row(0, named=True)
        raise EngineError("s1_site_weights", f"row {bad['row']}", f"p_weight must be finite and >= 0: {bad['p_weight']}")
    sites = s1.select(*SITE_PK, "p_weight").join(site_timezones.select(*SITE_PK, "tzid"), on=SITE_PK, how="left",
                                                   maintain_order="left")
    if sites["tzid"].null_count():
        bad = sites.filter(pl.col("tzid").is_null()).row(0, named=True)
        raise EngineError("site_timezones", f"site {bad['merchant_id']}/{bad['legal_country_iso']}/{bad['site_order']}",
                          "S1 site has no site_timezones row")
    if site_timezones.height != sites.height:
        raise EngineError("s1_site_weights", "(rows)",
                          f"{site_timezones.height} site_timezones rows but {sites.height} S1 rows: S1 must cover every site")
    # A float sum depends on its order, and a multi-threaded group_by does not fix one: sort
    # to a total order (merchant, tzid, site PK) and add sequentially, so the bytes never vary.
    sites = sites.sort("merchant_id", "tzid", "legal_country_iso", "site_order")
    first = sites.select(((pl.col("merchant_id") != pl.col("merchant_id").shift(1))
                          | (pl.col("tzid") != pl.col("tzid").shift(1))).fill_null(True)).to_series().to_numpy()
    starts = np.flatnonzero(first)
    w_sorted = sites["p_weight"].to_numpy()
    base = sites[starts].select("merchant_id", "tzid").with_columns(
        base_share=pl.Series(np.add.reduceat(w_sorted, starts) if starts.size else np.zeros(0)))
    sums = base.group_by("merchant_id").agg(pl.col("base_share").sum().alias("s"))
    off = sums.filter((pl.col("s") - 1.0).abs() > BASE_SUM_TOL)
    if off.height:
        r = off.sort("merchant_id").row(0, named=True)
        raise EngineError("s1_site_weights", f"merchant_id={r['merchant_id']}", f"p_weight sums to {r['s']!r}, not 1")
    return base


def _day_codes(s3: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    days = s3["utc_day"].unique().sort().to_list()
    try:
        dates = [dt.date.fromisoformat(d) for d in days]
    except (TypeError, ValueError):
        raise EngineError("s3_day_effects", "utc_day", "utc_day must be YYYY-MM-DD") from None
    for a, b in zip(dates, dates[1:]):
        if (b - a).days != 1:
            raise EngineError("s3_day_effects", f"utc_day={a + dt.timedelta(days=1)}", "day missing from the S3 grid")
    codes = s3["utc_day"].cast(pl.Enum(days)).to_physical().to_numpy().astype(np.int64) if days else np.zeros(0, np.int64)
    return days, codes


# --------------------------------------------------------------------------- the state


SHARDED = True  # merchant-days are independent: merchant shards give the same rows


def run(inputs: dict, policies: dict, ctx) -> dict:
    return run_whole(run_shard, finish, inputs, policies, ctx)


def finish(inputs: dict, policies: dict, ctx, parts: list[dict]) -> dict:
    return {"_report": merge_reports(parts, same=("mode",), maxed=("max_lambda", "max_sum_error"))}


def run_shard(inputs: dict, policies: dict, ctx) -> dict:
    params = resolve_policy(policies[POLICY].data)
    s3 = inputs["s3_day_effects"].select("merchant_id", "utc_day", "tz_group_id", "gamma")
    base = _base_shares(inputs["s1_site_weights"], inputs["site_timezones"])

    gamma_in = s3["gamma"]
    gvals = gamma_in.to_numpy() if s3.height else np.zeros(0)
    if gamma_in.null_count() or not np.all(np.isfinite(gvals) & (gvals > 0)):
        row = int(np.flatnonzero(~(np.isfinite(gvals) & (gvals > 0)))[0]) if not gamma_in.null_count() \
            else int(gamma_in.is_null().arg_max())
        raise EngineError("s3_day_effects", f"row {row}", "gamma must be finite and > 0")

    # Merchant and pair (merchant x tz group) indices, in PK order.
    per_m = base.group_by("merchant_id", maintain_order=True).agg(pl.len().alias("n_groups"))
    mid = per_m["merchant_id"].to_numpy().astype(np.uint64)
    n_g = per_m["n_groups"].to_numpy().astype(np.int64)
    n_m = len(mid)
    pair_offset = np.concatenate(([0], np.cumsum(n_g)[:-1])).astype(np.int64)
    pair_m = np.repeat(np.arange(n_m), n_g)
    base_share_pair = base["base_share"].to_numpy()

    days, dcode = _day_codes(s3)
    n_days = len(days)

    keyed = s3.select("merchant_id", pl.col("tz_group_id").alias("tzid")).join(
        base.select("merchant_id", "tzid").with_row_index("pair"), on=["merchant_id", "tzid"],
        how="left", maintain_order="left")
    if keyed["pair"].null_count():
        bad = keyed.with_row_index("row").filter(pl.col("pair").is_null()).row(0, named=True)
        raise EngineError("s3_day_effects", f"row {bad['row']}",
                          f"tz group {bad['tzid']!r} of merchant {bad['merchant_id']} is not one of its site tzids")
    pair = keyed["pair"].to_numpy().astype(np.int64)
    m_of_row = pair_m[pair]
    g_of_row = pair - pair_offset[m_of_row]

    # Coverage: every merchant x day x group exactly once. key = that cell's PK-order row number.
    rows_per_m = n_g * n_days
    row_offset = np.concatenate(([0], np.cumsum(rows_per_m)[:-1])).astype(np.int64)
    n_rows = int(rows_per_m.sum())
    key = row_offset[m_of_row] + dcode * n_g[m_of_row] + g_of_row
    counts = np.bincount(key, minlength=n_rows) if n_rows else np.zeros(0, np.int64)
    if s3.height != n_rows or np.any(counts != 1):
        _coverage_error(counts, n_rows, s3.height, row_offset, n_g, n_days, mid, days, base)

    perm = np.empty(n_rows, dtype=np.int64)
    perm[key] = np.arange(n_rows)
    # S3 is written in PK order, so the gather is normally skipped.
    ordered = s3 if np.array_equal(perm, np.arange(n_rows)) else s3.select(pl.all().gather(pl.Series(perm)))

    gamma = ordered["gamma"].to_numpy() if n_rows else np.zeros(0)
    base_share = base_share_pair[pair[perm]]
    mass = base_share * gamma

    # One merchant-day = n_g contiguous rows; segment starts in PK order.
    seg_n = np.repeat(n_g, n_days)
    seg_start = np.concatenate(([0], np.cumsum(seg_n)[:-1])).astype(np.int64) if len(seg_n) else np.zeros(0, np.int64)
    seg = np.repeat(np.arange(len(seg_n)), seg_n)
    denom = np.add.reduceat(mass, seg_start) if n_rows else np.zeros(0)
    if np.any(~(denom > 0)):
        s = int(np.flatnonzero(~(denom > 0))[0])
        raise EngineError("s4_group_weights", f"merchant_id={mid[s // n_days]} utc_day={days[s % n_days]}",
                          "denom_raw is not > 0 (all base shares of the day are zero)")
    p_raw = mass / denom[seg]

    eligible = seg_n >= params["apply_when_groups_ge"]
    p, lam = regularise(p_raw, seg_start, seg_n, params)

    # Total variation distance between the raw and the published mix, per merchant-day.
    tv = 0.5 * np.add.reduceat(np.abs(p - p_raw), seg_start) if n_rows else np.zeros(0)
    applied = eligible & (tv > 0)

    df = pl.DataFrame({
        "merchant_id": ordered["merchant_id"],
        "utc_day": ordered["utc_day"],
        "tz_group_id": ordered["tz_group_id"],
        "p_group": p,
        "base_share": base_share,
        "gamma": ordered["gamma"],
        "mass_raw": mass,
        "denom_raw": denom[seg] if n_rows else np.zeros(0),
        "regularizer_applied": applied[seg] if n_rows else np.zeros(0, bool),
        "regularizer_delta_mass": tv[seg] if n_rows else np.zeros(0),
        "created_utc": pl.repeat(ctx.created_utc, n_rows, dtype=pl.String, eager=True),
    }).select(_COLUMNS)
    report = {
        "rows": n_rows,
        "merchant_days": int(len(seg_n)),
        "mode": params["mode"],
        "regularized_merchant_days": int(applied.sum()),
        "max_lambda": float(lam.max()) if len(lam) else 0.0,
        "max_sum_error": float(np.abs(np.add.reduceat(p, seg_start) - 1).max()) if n_rows else 0.0,
    }
    return {DATASET: df, "_part": report}


def _coverage_error(counts, n_rows, height, row_offset, n_g, n_days, mid, days, base):
    """Name the first missing or duplicated (merchant, day, group) cell."""
    tz = base["tzid"].to_list()
    pair_offset = np.concatenate(([0], np.cumsum(n_g)[:-1]))
    bad = np.flatnonzero(counts != 1)
    if len(bad) == 0:
        raise EngineError("s3_day_effects", "(rows)", f"{height} rows where coverage needs {n_rows}")
    k = int(bad[0])
    m = int(np.searchsorted(row_offset, k, side="right") - 1)
    local = k - row_offset[m]
    d, g = divmod(local, int(n_g[m]))
    what = "missing" if counts[k] == 0 else f"duplicated ({counts[k]} rows)"
    raise EngineError("s3_day_effects", f"merchant_id={mid[m]} utc_day={days[d]} tz_group_id={tz[pair_offset[m] + g]}",
                      f"cell {what}: coverage must equal merchants x days x groups")
