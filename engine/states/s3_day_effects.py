"""S3 day effects: a log-normal multiplier gamma per merchant x UTC day x tz group.

Rows: for every merchant, every day of the policy's inclusive `day_range` and every distinct tzid
of the merchant's sites (sorted), exactly one row, in primary-key order (merchant_id, utc_day,
tz_group_id).

Mode `sigma_gamma_policy_v2` (plan P2) makes volatility heterogeneous on purpose:
  sigma(m, g) = clamp(base[segment(m)] * mult[tz group g] * regime_mult[regime(m)] * jitter(m),
                      sigma_min, sigma_max)
  log_gamma   = -sigma^2 / 2 + sigma * Z + weekly(m, g, day)
  gamma       = exp(log_gamma), clipped to gamma_clip (clipped rows counted, log_gamma = ln(gamma))
The -sigma^2/2 term makes E[exp(sigma Z)] = 1; the weekly term carries its own mean-one correction
(see `_weekly_table`), so the aggregate gamma stays centred near 1 without a data-driven rescale
(which would break shard invariance).

Mode `scalar` is the upstream baseline kept as a negative control: one sigma for every row, no
regimes, no jitter, no tz multiplier, no weekly term. The harness must fail its B+ tail.

RNG layout (stream `2B.S3.day_effects`, counter_hi = merchant_id always):
  * row draws:       counter_lo = day_index * n_groups + group_index   (one block per row, Z from
                     Box-Muller on the block), always < D * n_groups < 2^63;
  * merchant draws:  counter_lo = 2^63 + slot (top bit reserved). Slot 0's block gives u0 (regime
                     choice) and u1 (sigma jitter). Row counters never set the top bit (checked), so
                     merchant-level and row-level draws can never share a counter, and each row's Z is
                     recomputable from the counters it records.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl

from engine.calendar import day_range
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
_ROW_COUNTER_LIMIT = 1 << 63

_COLUMNS = (
    "merchant_id", "utc_day", "tz_group_id", "gamma", "log_gamma", "sigma_gamma", "weekly_amp",
    "sigma_source", "rng_stream_id", "rng_counter_hi", "rng_counter_lo", "created_utc",
)


# --------------------------------------------------------------------------- policy resolution


def _fail(field: str, rule: str):
    raise EngineError(POLICY, field, rule)


def day_grid(policy_data: dict) -> list[str]:
    """The inclusive UTC day grid as YYYY-MM-DD strings (chronological = lexicographic)."""
    start, end = (dt.date.fromisoformat(d) for d in day_range(policy_data))
    n = (end - start).days + 1
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]


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
    day_grid(policy)
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


@lru_cache(maxsize=4096)
def _utc_offsets_hours(tzid: str, first_day: str, n_days: int) -> tuple[float, ...]:
    """UTC offset (hours) of `tzid` at 12:00 UTC of each day: once per (tzid, grid), never per row.

    Noon UTC is used because DST switches happen around local night; the offset then tells where
    local midnight falls inside the UTC day to within the one hour of a switch day.
    """
    try:
        zone = ZoneInfo(tzid)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise EngineError("site_timezones", f"tzid={tzid!r}", "not a known IANA time zone") from None
    start = dt.datetime.fromisoformat(first_day).replace(hour=12, tzinfo=dt.timezone.utc)
    return tuple(
        (start + dt.timedelta(days=i)).astimezone(zone).utcoffset().total_seconds() / 3600.0
        for i in range(n_days)
    )


def _weekly_table(tz_names, days, shift_by_tz, seg_of_pair, tz_of_pair, amp_by_seg, shapes_by_seg) -> np.ndarray:
    """Weekly log-effect per (merchant x group pair, day), on the group's LOCAL weekday(s).

    A UTC day overlaps two local days: with offset o > 0 the local clock passes midnight o hours
    before the UTC day ends, so the day is (24 - o)/24 the local weekday w and o/24 the next one;
    with o < 0 it is |o|/24 the previous local day and the rest w. Groups of one merchant in
    different offsets (or with a Fri/Sat weekend, `shift`) therefore see different weekly terms,
    which is what lets the cycle survive S4's renormalisation across groups.
    Mean-one correction: subtract ln(mean_k exp(amp * shape_k)) so the weekly factor averages ~1
    over a week. Computed per (segment, tz, day), i.e. a few hundred thousand cells at most, then
    gathered per pair; rows only index into the result.
    """
    n_days = len(days)
    offsets = np.array([_utc_offsets_hours(t, days[0], n_days) for t in tz_names], dtype=np.float64)
    offsets = offsets.reshape(len(tz_names), n_days)
    frac_next = np.clip(offsets, 0, 24) / 24.0
    frac_prev = np.clip(-offsets, 0, 24) / 24.0
    frac_same = 1.0 - frac_next - frac_prev
    utc_wd = np.array([dt.date.fromisoformat(d).weekday() for d in days], dtype=np.int64)
    wd = (utc_wd[None, :] + shift_by_tz[:, None]) % 7  # local weekday at UTC midnight, (tz, day)
    # (segment, tz, day): blend of the profile over the local days the UTC day covers
    blended = (frac_prev * shapes_by_seg[:, (wd - 1) % 7] + frac_same * shapes_by_seg[:, wd]
               + frac_next * shapes_by_seg[:, (wd + 1) % 7])
    correction = np.log(np.mean(np.exp(amp_by_seg[:, None] * shapes_by_seg), axis=1))
    table = amp_by_seg[:, None, None] * blended - correction[:, None, None]
    return table[seg_of_pair, tz_of_pair]  # (pairs, days)


# --------------------------------------------------------------------------- the state


def _topology(merchants: pl.DataFrame, site_timezones: pl.DataFrame):
    """(merchant table, pair table): a merchant's tz groups are its distinct tzids, sorted."""
    if site_timezones["tzid"].null_count():
        raise EngineError("site_timezones", "tzid", "null tzid")
    mids = merchants["merchant_id"]
    if mids.is_duplicated().any():
        raise EngineError("merchants", "merchant_id", "duplicate merchant_id")
    pairs = (site_timezones.select("merchant_id", "tzid").unique()
             .sort(["merchant_id", "tzid"])
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
    days = day_grid(policy)
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
        raise EngineError(DATASET, "rng_counter_lo", "row counters would reach the reserved top bit")

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
    z = stream.normals(counter_hi, counter_lo)

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
        shift_cfg = v2.get("weekend_shift_days_by_tzid", {})
        shift_by_tz = np.array([int(shift_cfg.get(t, 0)) for t in tz_names], dtype=np.int64)
        amp_merchant = amp_seg[seg_of_merchant] if n_merchants else np.zeros(0)
        weekly_pair_day = (_weekly_table(tz_names, days, shift_by_tz, seg_of_merchant[pair_merchant], tz_of_pair,
                                         amp_seg, shapes) if n_rows else np.zeros((0, n_days)))

    # log_gamma = (-sigma^2/2 + weekly) + sigma Z; the bracket depends on (pair, day) only.
    drift = (-0.5 * sigma_pair * sigma_pair)[:, None] + weekly_pair_day
    cell = row_pair * n_days + row_day
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

    # One merchant-level block at the reserved slot: u0 picks the regime, u1 the jitter.
    u_regime, u_jitter = stream.uniform_pairs(mid, np.full(len(mid), MERCHANT_SLOT_BASE, dtype=np.uint64))
    regimes = v2["regimes"]
    cum = np.cumsum([r["share"] for r in regimes])
    regime_of_merchant = np.minimum(np.searchsorted(cum, u_regime, side="right"), len(regimes) - 1)
    regime_mult = np.array([r["sigma_multiplier"] for r in regimes], dtype=np.float64)
    amp = float(v2["sigma_jitter_by_merchant"]["amplitude"])
    jitter = 1.0 + amp * (2.0 * u_jitter - 1.0)  # bounded in [1 - amp, 1 + amp]

    pm = pair_merchant
    raw = (base_seg[seg_of_merchant[pm]] * mult_tz[tz_of_pair] * regime_mult[regime_of_merchant[pm]] * jitter[pm])
    lo, hi = float(v2["sigma_min"]), float(v2["sigma_max"])
    sigma = np.clip(raw, lo, hi)

    names = [r["name"] for r in regimes]
    source = [
        f"segment:{classes[m]}|{tz_label[t]}|regime:{names[k]}" + ("|clamp:min" if r < lo else "|clamp:max" if r > hi else "")
        for m, t, k, r in zip(pm.tolist(), tz_of_pair.tolist(), regime_of_merchant[pm].tolist(), raw.tolist())
    ]
    return sigma, source
