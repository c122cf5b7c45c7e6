"""S3 day effects: a log-normal multiplier gamma per merchant x UTC day x tz group.

Rows: for every merchant, every day of the policy's inclusive `day_range` and every distinct tzid
of the merchant's sites (sorted), exactly one row, in primary-key order (merchant_id, utc_day,
tz_group_id).

Mode `sigma_gamma_policy_v2` (plan P2) makes volatility heterogeneous on purpose:
  sigma(m, g) = clamp(base[segment(m)] * mult[tz group g] * regime_mult[regime(m)] * jitter(m)
                      * dispersion(m), sigma_min, sigma_max)
  log_gamma   = -sigma^2 / 2 + sigma * Z(m, g, d) + weekly(m, g, d) + holiday(m, g, d)
  gamma       = exp(log_gamma), clipped to gamma_clip (clipped rows counted, log_gamma = ln(gamma))
with
  * dispersion(m) = exp(s eta_m - s^2/2), a lognormal volatility factor per merchant (mean one);
  * Z = sqrt(w) X(m, d) + sqrt(1 - w) Y(m, g, d): X a merchant-wide shock shared by all its tz
    groups, Y the group's own; both stationary AR(1) with coefficient rho and unit variance
    (X_0 = e_0, X_d = rho X_{d-1} + sqrt(1 - rho^2) e_d), so day effects have memory and a merchant's
    groups move together in part (`persistence`: rho, w);
  * weekly: the segment's Mon..Sun profile on the group's LOCAL weekday, rotated by the weekend
    convention of the group's country (engine.calendar: one convention per country, shared with the
    roster), see `_weekly_table`;
  * holiday: the segment's log-effect on the public holidays of the group's country (engine.calendar,
    local date at 12:00 UTC), the same table the roster applies to volume.
The -sigma^2/2 term makes E[exp(sigma Z)] = 1; the weekly term carries its own mean-one correction,
so the aggregate gamma stays centred near 1 (holidays aside, by design) without a data-driven
rescale (which would break shard invariance). The group's country is where most of the merchant's
sites in that zone are (ties: the smallest ISO code).

Mode `scalar` is the upstream baseline kept as a negative control: one sigma for every row, no
regimes, no jitter, no tz multiplier, no weekly term. The harness must fail its B+ tail.

RNG layout (stream `2B.S3.day_effects`, counter_hi = merchant_id always):
  * row draws:       counter_lo = day_index * n_groups + group_index: the group's own innovation e of
                     Y on that day (one block, Box-Muller), always < 2^62 (checked);
  * merchant-day:    counter_lo = 2^62 + day_index: the innovation of the shared shock X;
  * merchant draws:  counter_lo = 2^63 + slot. Slot 0's block gives u0 (regime choice) and u1
                     (sigma jitter); slot 1's block the normal eta of the dispersion factor.
The three regions never meet, and a row's Z is recomputable from the counters it records and the
counters of the same merchant's earlier days.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.calendar import (
    NOON_QUARTER,
    epoch_day,
    grid_day_strings,
    holiday_effects,
    holiday_table,
    local_days,
    tz_offsets,
    weekday_of,
    weekday_role_shift,
)
from engine.errors import EngineError
from engine.rng import STREAM_S3, Stream
from engine.shards import merge_reports, run_whole

READS = ("merchants", "site_timezones")
POLICIES = ("day_effect_policy_v1",)
WRITES = ("s3_day_effects",)

DATASET = "s3_day_effects"
POLICY = "day_effect_policy_v1"
# Top bit of counter_lo: reserved for merchant-level draws (see module docstring).
MERCHANT_SLOT_BASE = np.uint64(1 << 63)
SHARED_DAY_BASE = np.uint64(1 << 62)  # the merchant-wide shock's innovations: 2^62 + day_index
_ROW_COUNTER_LIMIT = 1 << 62

_COLUMNS = (
    "merchant_id", "utc_day", "tz_group_id", "gamma", "log_gamma", "sigma_gamma", "weekly_amp",
    "sigma_source", "rng_stream_id", "rng_counter_hi", "rng_counter_lo", "created_utc",
)


# --------------------------------------------------------------------------- policy resolution


def _fail(field: str, rule: str):
    raise EngineError(POLICY, field, rule)


def _table_lookup(table: dict, keys: list[str], field: str) -> np.ndarray:
    """Map each key through a {key: number, ..., "default": number} table."""
    if "default" not in table:
        _fail(field, "a 'default' entry is required")
    return np.array([float(table.get(k, table["default"])) for k in keys], dtype=np.float64)


def _region(tzid: str) -> str:
    # IANA area = the part before the first '/': Europe, America, Asia, Africa, Australia, Pacific ...
    return tzid.split("/", 1)[0] if "/" in tzid else "Etc"


def _normalised_shape(values, field: str) -> np.ndarray:
    """Centre a Mon..Sun profile on 0 and scale it to max |value| = 1, so amp is its peak log-effect."""
    shape = np.asarray(values, dtype=np.float64)
    if shape.shape != (7,) or not np.all(np.isfinite(shape)):
        _fail(field, "a weekly shape has exactly 7 finite values (Mon..Sun)")
    shape = shape - shape.mean()
    peak = np.abs(shape).max()
    return shape / peak if peak > 0 else shape


def _check_v2(v2: dict) -> None:
    lo, hi = v2["sigma_min"], v2["sigma_max"]
    if not (lo > 0):
        _fail("/sigma_gamma_policy_v2/sigma_min", f"must be > 0, got {lo}")
    if lo > hi:
        _fail("/sigma_gamma_policy_v2/sigma_min", f"sigma_min {lo} > sigma_max {hi}")
    _check_clip(v2["gamma_clip"], "/sigma_gamma_policy_v2/gamma_clip")
    regimes = v2["regimes"]
    if not regimes:
        _fail("/sigma_gamma_policy_v2/regimes", "at least one regime")
    shares = np.array([r["share"] for r in regimes], dtype=np.float64)
    if np.any(shares < 0) or abs(shares.sum() - 1.0) > 1e-9:
        _fail("/sigma_gamma_policy_v2/regimes", f"shares must be >= 0 and sum to 1 (sum {shares.sum()})")
    if any(r["sigma_multiplier"] <= 0 for r in regimes):
        _fail("/sigma_gamma_policy_v2/regimes", "sigma_multiplier must be > 0")
    amp = v2["sigma_jitter_by_merchant"]["amplitude"]
    if not (0 <= amp < 1):
        _fail("/sigma_gamma_policy_v2/sigma_jitter_by_merchant/amplitude", f"must be in [0, 1), got {amp}")


def _check_clip(clip: dict, field: str) -> None:
    lo, hi = clip["min"], clip["max"]
    if not (0 < lo < 1 < hi):
        _fail(field, f"gamma_clip must satisfy 0 < min < 1 < max (inverted or degenerate: {lo}, {hi})")


def check_policy(policies: dict) -> None:
    """Every rule of the policy that needs no data, so a run refuses it before it writes anything;
    `run_shard` applies the same rules where it uses the values."""
    policy = policies[POLICY].data
    grid_day_strings(policy)
    mode = policy.get("mode", "sigma_gamma_policy_v2")
    if mode == "scalar":
        _check_clip(policy["sigma_gamma_policy_v2"]["gamma_clip"], "/sigma_gamma_policy_v2/gamma_clip")
        if not float(policy.get("sigma_gamma_scalar", 0.0)) > 0:
            _fail("/sigma_gamma_scalar", "must be > 0")
        return
    if mode != "sigma_gamma_policy_v2":
        _fail("/mode", f"unknown mode {mode!r}")
    v2 = policy["sigma_gamma_policy_v2"]
    _check_v2(v2)
    tables = (("sigma_base_by_segment", lambda v: v > 0, "base sigmas must be > 0"),
              ("weekly_component_amp_by_segment", lambda v: v >= 0, "amplitudes must be >= 0"))
    for key, ok, rule in tables:
        values = _table_lookup(v2[key], list(v2[key]), f"/sigma_gamma_policy_v2/{key}")
        if not np.all(ok(values)):
            _fail(f"/sigma_gamma_policy_v2/{key}", rule)
    tz_cfg = v2["sigma_multiplier_by_tz_group"]
    mult = np.r_[_table_lookup(tz_cfg["by_region"], list(tz_cfg["by_region"]),
                               "/sigma_gamma_policy_v2/sigma_multiplier_by_tz_group/by_region"),
                 np.array(list(tz_cfg.get("by_tzid", {}).values()), dtype=np.float64)]
    if np.any(mult <= 0):
        _fail("/sigma_gamma_policy_v2/sigma_multiplier_by_tz_group", "multipliers must be > 0")
    shapes_cfg = v2["weekly_shape_by_segment"]
    if "default" not in shapes_cfg:
        _fail("/sigma_gamma_policy_v2/weekly_shape_by_segment", "a 'default' entry is required")
    for segment, shape in shapes_cfg.items():
        _normalised_shape(shape, f"/sigma_gamma_policy_v2/weekly_shape_by_segment/{segment}")


# --------------------------------------------------------------------------- weekly component


def _weekly_table(offsets_noon, tz_of_pair, shift_of_pair, seg_of_pair, utc_wd, amp_by_seg, shapes_by_seg) -> np.ndarray:
    """Weekly log-effect per (merchant x group pair, day), on the group's LOCAL weekday(s).

    A UTC day overlaps two local days: with offset o > 0 the local clock passes midnight o hours
    before the UTC day ends, so the day is (24 - o)/24 the local weekday w and o/24 the next one;
    with o < 0 it is |o|/24 the previous local day and the rest w. The profile is written for a
    Saturday/Sunday weekend; a country with another weekend rotates it (`shift`, from
    engine.calendar, the same rotation the roster applies). Groups of one merchant in different
    offsets or countries therefore see different weekly terms, which is what lets the cycle survive
    S4's renormalisation across groups. Mean-one correction: subtract ln(mean_k exp(amp * shape_k)).
    Offsets are per (tz, day), gathered per pair: rows only index into the result.
    """
    hours = offsets_noon[tz_of_pair] / 3600.0  # (pairs, days)
    frac_next = np.clip(hours, 0, 24) / 24.0
    frac_prev = np.clip(-hours, 0, 24) / 24.0
    frac_same = 1.0 - frac_next - frac_prev
    wd = (utc_wd[None, :] + shift_of_pair[:, None]) % 7  # role weekday at UTC midnight, (pairs, days)
    shapes = shapes_by_seg[seg_of_pair]  # (pairs, 7)
    rows = np.arange(len(seg_of_pair))[:, None]
    blended = (frac_prev * shapes[rows, (wd - 1) % 7] + frac_same * shapes[rows, wd]
               + frac_next * shapes[rows, (wd + 1) % 7])
    correction = np.log(np.mean(np.exp(amp_by_seg[:, None] * shapes_by_seg), axis=1))
    return amp_by_seg[seg_of_pair][:, None] * blended - correction[seg_of_pair][:, None]


def _ar1(innovations: np.ndarray, rho: float) -> np.ndarray:
    """Stationary unit-variance AR(1) along axis 1 from standard normal innovations (X_0 = e_0)."""
    out = np.empty_like(innovations)
    if innovations.shape[1] == 0:
        return out
    scale = np.sqrt(1.0 - rho * rho)
    out[:, 0] = innovations[:, 0]
    for d in range(1, innovations.shape[1]):  # a loop over days, vectorised over every series
        out[:, d] = rho * out[:, d - 1] + scale * innovations[:, d]
    return out


# --------------------------------------------------------------------------- the state


def _topology(merchants: pl.DataFrame, site_timezones: pl.DataFrame):
    """(merchant table, pair table): a merchant's tz groups are its distinct tzids, sorted."""
    if site_timezones["tzid"].null_count():
        raise EngineError("site_timezones", "tzid", "null tzid")
    mids = merchants["merchant_id"]
    if mids.is_duplicated().any():
        raise EngineError("merchants", "merchant_id", "duplicate merchant_id")
    # a group's country: where most of the merchant's sites in that zone are (ties: smallest ISO)
    pairs = (site_timezones.group_by("merchant_id", "tzid", "legal_country_iso").len()
             .sort(["merchant_id", "tzid", "len", "legal_country_iso"], descending=[False, False, True, False])
             .group_by("merchant_id", "tzid", maintain_order=True).agg(pl.col("legal_country_iso").first().alias("country"))
             .join(merchants.select("merchant_id", "merchant_class"), on="merchant_id", how="left",
                   maintain_order="left"))
    missing = pairs.filter(pl.col("merchant_class").is_null())
    if missing.height:
        raise EngineError("merchants", f"merchant_id={missing['merchant_id'][0]}",
                          "merchant has sites in site_timezones but no merchants row")
    per_merchant = (pairs.group_by("merchant_id", maintain_order=True)
                    .agg(pl.len().alias("n_groups"), pl.col("merchant_class").first()))
    return per_merchant, pairs


SHARDED = True  # every draw is keyed by merchant_id: merchant shards give the same rows


def run(inputs: dict, policies: dict, ctx) -> dict:
    return run_whole(run_shard, finish, inputs, policies, ctx)


def finish(inputs: dict, policies: dict, ctx, parts: list[dict]) -> dict:
    return {"_report": merge_reports(parts, same=("days", "mode"))}


def run_shard(inputs: dict, policies: dict, ctx) -> dict:
    policy = policies[POLICY].data
    days = grid_day_strings(policy)
    n_days = len(days)
    mode = policy.get("mode", "sigma_gamma_policy_v2")
    # Fail closed on the policy before any work is done.
    if mode == "sigma_gamma_policy_v2":
        _check_v2(policy["sigma_gamma_policy_v2"])
    elif mode == "scalar":
        _check_clip(policy["sigma_gamma_policy_v2"]["gamma_clip"], "/sigma_gamma_policy_v2/gamma_clip")
    else:
        _fail("/mode", f"unknown mode {mode!r}")

    per_merchant, pairs = _topology(inputs["merchants"], inputs["site_timezones"])
    mid = per_merchant["merchant_id"].to_numpy().astype(np.uint64)
    n_groups = per_merchant["n_groups"].to_numpy().astype(np.int64)
    classes = per_merchant["merchant_class"].to_list()
    n_merchants = len(mid)
    if n_merchants and int(n_groups.max()) * n_days >= _ROW_COUNTER_LIMIT:
        raise EngineError(DATASET, "rng_counter_lo", "row counters would reach the merchant-day region (2^62)")

    # Pair level (merchant x group): index helpers.
    pair_offset = np.concatenate(([0], np.cumsum(n_groups)[:-1])).astype(np.int64)
    pair_tz = pairs["tzid"]
    tz_names, tz_of_pair = np.unique(pair_tz.to_numpy().astype(str), return_inverse=True)
    tz_names = tz_names.tolist()
    pair_merchant = np.repeat(np.arange(n_merchants), n_groups)

    # Row level, in PK order: merchant, then day, then group, so counter_lo = d * n_g + g ascends.
    # Built as merchant-day segments of n_g rows (repeats only, no per-row division).
    seg_m = np.repeat(np.arange(n_merchants), n_days)
    seg_day = np.tile(np.arange(n_days), n_merchants)
    seg_n = n_groups[seg_m]
    n_rows = int(seg_n.sum())
    seg_start = np.cumsum(seg_n) - seg_n
    row_seg = np.repeat(np.arange(len(seg_n)), seg_n)
    row_m = seg_m[row_seg]
    row_day = seg_day[row_seg]
    row_g = np.arange(n_rows, dtype=np.int64) - seg_start[row_seg]
    row_pair = pair_offset[row_m] + row_g
    counter_lo = (row_day * n_groups[row_m] + row_g).astype(np.uint64)
    counter_hi = mid[row_m]

    stream = Stream(ctx.draws_of, ctx.seed, STREAM_S3)
    e_row = stream.normals(counter_hi, counter_lo)  # the group's own innovation of each row
    cell = row_pair * n_days + row_day

    seg_names = sorted(set(classes))
    seg_index = {s: i for i, s in enumerate(seg_names)}
    seg_of_merchant = np.array([seg_index[c] for c in classes], dtype=np.int64)

    if mode == "scalar":
        sigma_scalar = float(policy["sigma_gamma_scalar"])
        if not sigma_scalar > 0:
            _fail("/sigma_gamma_scalar", "must be > 0")
        clip = policy["sigma_gamma_policy_v2"]["gamma_clip"]
        sigma_pair = np.full(len(pair_merchant), sigma_scalar)
        source_pair = ["scalar"] * len(pair_merchant)
        amp_merchant = np.zeros(n_merchants)
        weekly_pair_day = np.zeros((len(pair_merchant), n_days))
        z = e_row  # i.i.d. days: the upstream baseline
        holidays_hit = 0
    else:
        v2 = policy["sigma_gamma_policy_v2"]
        clip = v2["gamma_clip"]
        sigma_pair, source_pair = _resolve_sigma(v2, stream, mid, classes, seg_of_merchant,
                                                 pair_merchant, tz_of_pair, tz_names)
        amp_seg = _table_lookup(v2["weekly_component_amp_by_segment"], seg_names,
                                "/sigma_gamma_policy_v2/weekly_component_amp_by_segment")
        if np.any(amp_seg < 0):
            _fail("/sigma_gamma_policy_v2/weekly_component_amp_by_segment", "amplitudes must be >= 0")
        shapes_cfg = v2["weekly_shape_by_segment"]
        if "default" not in shapes_cfg:
            _fail("/sigma_gamma_policy_v2/weekly_shape_by_segment", "a 'default' entry is required")
        shapes = np.stack([_normalised_shape(shapes_cfg.get(s, shapes_cfg["default"]),
                                             f"/sigma_gamma_policy_v2/weekly_shape_by_segment/{s}")
                           for s in seg_names]) if seg_names else np.zeros((0, 7))
        first = epoch_day(days[0])
        epoch_days = first + np.arange(n_days, dtype=np.int64)
        offsets_noon = tz_offsets(tz_names, first, n_days)[:, :, NOON_QUARTER]  # (tz, day) seconds
        countries, country_of_pair = np.unique(pairs["country"].to_numpy().astype(str), return_inverse=True)
        shift_of_country = np.array([weekday_role_shift(c) for c in countries], dtype=np.int64)
        seg_of_pair = seg_of_merchant[pair_merchant]
        amp_merchant = amp_seg[seg_of_merchant] if n_merchants else np.zeros(0)
        weekly_pair_day = (_weekly_table(offsets_noon, tz_of_pair, shift_of_country[country_of_pair], seg_of_pair,
                                         weekday_of(epoch_days), amp_seg, shapes) if n_rows else np.zeros((0, n_days)))
        # public holidays of the group's country on the local date at 12:00 UTC of each UTC day
        hol = holiday_table(countries.tolist(), first, n_days)
        local_index = local_days(offsets_noon, epoch_days[None, :]) - (first - 1)  # (tz, day) into hol
        on_holiday = hol[country_of_pair[:, None], local_index[tz_of_pair]] if n_rows else np.zeros((0, n_days), bool)
        hol_effect = _table_lookup(holiday_effects(policy), seg_names, "/sigma_gamma_policy_v2/holidays/log_effect_by_segment")
        weekly_pair_day = weekly_pair_day + np.where(on_holiday, hol_effect[seg_of_pair][:, None], 0.0)
        holidays_hit = int(on_holiday.sum())
        # memory: stationary AR(1) per group plus a merchant-wide AR(1) shock (module docstring)
        rho, w = float(v2["persistence"]["ar1"]), float(v2["persistence"]["shared_share"])
        own = np.empty(len(pair_merchant) * n_days)
        own[cell] = e_row
        own = _ar1(own.reshape(len(pair_merchant), n_days), rho)
        day_idx = np.arange(n_days, dtype=np.uint64)
        shared = _ar1(stream.normals(np.repeat(mid, n_days), np.tile(SHARED_DAY_BASE + day_idx, n_merchants))
                      .reshape(n_merchants, n_days), rho)
        z_pair_day = np.sqrt(w) * shared[pair_merchant] + np.sqrt(1.0 - w) * own
        z = z_pair_day.ravel()[cell]

    # log_gamma = (-sigma^2/2 + weekly + holiday) + sigma Z; the bracket depends on (pair, day) only.
    drift = (-0.5 * sigma_pair * sigma_pair)[:, None] + weekly_pair_day
    sigma = sigma_pair[row_pair]
    log_gamma = drift.ravel()[cell] + sigma * z
    gamma = np.exp(log_gamma)
    low, high = gamma < clip["min"], gamma > clip["max"]
    clipped = low | high
    n_low, n_high = int(low.sum()), int(high.sum())
    if n_low or n_high:
        gamma = np.clip(gamma, clip["min"], clip["max"])
        log_gamma[clipped] = np.log(gamma[clipped])  # keep gamma = exp(log_gamma) on clipped rows

    df = pl.DataFrame({
        "merchant_id": pl.Series(counter_hi, dtype=pl.UInt64),
        "utc_day": pl.Series(days, dtype=pl.String).gather(row_day),
        "tz_group_id": pair_tz.gather(row_pair),
        "gamma": gamma,
        "log_gamma": log_gamma,
        "sigma_gamma": sigma,
        "weekly_amp": amp_merchant[row_m],
        "sigma_source": pl.Series(source_pair, dtype=pl.String).gather(row_pair),
        "rng_stream_id": pl.repeat(STREAM_S3, n_rows, dtype=pl.String, eager=True),
        "rng_counter_hi": pl.Series(counter_hi, dtype=pl.UInt64),
        "rng_counter_lo": pl.Series(counter_lo, dtype=pl.UInt64),
        "created_utc": pl.repeat(ctx.created_utc, n_rows, dtype=pl.String, eager=True),
    }).select(_COLUMNS)

    report = {
        "rows": n_rows,
        "merchants": n_merchants,
        "days": n_days,
        "mode": mode,
        "clipped_rows": n_low + n_high,
        "clipped_low": n_low,
        "clipped_high": n_high,
        "sigma_clamped_pairs": int(sum(1 for s in source_pair if "|clamp:" in s)),
        "holiday_cells": holidays_hit,
    }
    return {DATASET: df, "_part": report}


def _resolve_sigma(v2, stream, mid, classes, seg_of_merchant, pair_merchant, tz_of_pair, tz_names):
    """Per (merchant, group) sigma and its provenance string."""
    seg_names = sorted(set(classes))
    base_seg = _table_lookup(v2["sigma_base_by_segment"], seg_names, "/sigma_gamma_policy_v2/sigma_base_by_segment")
    if np.any(base_seg <= 0):
        _fail("/sigma_gamma_policy_v2/sigma_base_by_segment", "base sigmas must be > 0")

    tz_cfg = v2["sigma_multiplier_by_tz_group"]
    overrides = tz_cfg.get("by_tzid", {})
    regions = [_region(t) for t in tz_names]
    mult_tz = _table_lookup(tz_cfg["by_region"], regions, "/sigma_gamma_policy_v2/sigma_multiplier_by_tz_group/by_region")
    for i, t in enumerate(tz_names):
        if t in overrides:
            mult_tz[i] = float(overrides[t])
    if np.any(mult_tz <= 0):
        _fail("/sigma_gamma_policy_v2/sigma_multiplier_by_tz_group", "multipliers must be > 0")
    tz_label = [f"tz:{t}" if t in overrides else f"region:{r}" for t, r in zip(tz_names, regions)]

    # One merchant-level block at the reserved slot: u0 picks the regime, u1 the jitter; slot 1's
    # block gives the dispersion normal.
    u_regime, u_jitter = stream.uniform_pairs(mid, np.full(len(mid), MERCHANT_SLOT_BASE, dtype=np.uint64))
    eta = stream.normals(mid, np.full(len(mid), MERCHANT_SLOT_BASE + np.uint64(1), dtype=np.uint64))
    spread = float(v2["volatility_dispersion"]["sigma"])
    dispersion = np.exp(spread * eta - 0.5 * spread * spread)
    regimes = v2["regimes"]
    cum = np.cumsum([r["share"] for r in regimes])
    regime_of_merchant = np.minimum(np.searchsorted(cum, u_regime, side="right"), len(regimes) - 1)
    regime_mult = np.array([r["sigma_multiplier"] for r in regimes], dtype=np.float64)
    amp = float(v2["sigma_jitter_by_merchant"]["amplitude"])
    jitter = 1.0 + amp * (2.0 * u_jitter - 1.0)  # bounded in [1 - amp, 1 + amp]

    pm = pair_merchant
    raw = (base_seg[seg_of_merchant[pm]] * mult_tz[tz_of_pair] * regime_mult[regime_of_merchant[pm]] * jitter[pm]
           * dispersion[pm])
    lo, hi = float(v2["sigma_min"]), float(v2["sigma_max"])
    sigma = np.clip(raw, lo, hi)

    names = [r["name"] for r in regimes]
    source = [
        f"segment:{classes[m]}|{tz_label[t]}|regime:{names[k]}" + ("|clamp:min" if r < lo else "|clamp:max" if r > hi else "")
        for m, t, k, r in zip(pm.tolist(), tz_of_pair.tolist(), regime_of_merchant[pm].tolist(), raw.tolist())
    ]
    return sigma, source
