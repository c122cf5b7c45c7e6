"""Checks of the S3 day effects and the S4 group mix, per merchant shard.

Merchant and tz codes in keys are local to the shard; only counts, worst deltas and short problem
texts leave it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ...calendar import day_bounds, day_range, epoch_days
from ...errors import EngineError
from ...rng import STREAM_S3
from . import keys
from .arrays import index_in, index_in_runs, only_in, ordinal_in_runs, sorted_unique, take, unique_counts
from .audit import Audit
from .registry import EXAMPLES, MAX, SAME, SUM, Blocked, Outcome, examples, preparation, shard_check

MASS_TOL = 1e-9
BASE_SHARE_TOL = 1e-12


@dataclass(frozen=True)
class CodeBook:
    """What the merchant and tz codes of the shard's keys refer to."""

    merchant_ids: np.ndarray  # sorted u64 ids of S1, site_timezones, S3 and S4
    tzids: list[str]  # sorted tzids of site_timezones, S3 and S4


@dataclass(frozen=True)
class KeyedRows:
    rows: pl.DataFrame
    key: np.ndarray  # per row: its day key (-1 where it cannot be formed)


@dataclass(frozen=True)
class MerchantGroups:
    """Each merchant's tz groups: the distinct tzids of its sites, sorted."""

    key: np.ndarray  # sorted group keys
    rank: np.ndarray  # position of the group among its merchant's groups
    n_groups: np.ndarray  # how many groups its merchant has


class DayEffects(Audit):
    @preparation.named("universe")
    def codes(self) -> CodeBook:
        sites = self.sites
        merchants = [sorted_unique(sites.weights["merchant_id"].to_numpy())]
        tzids = [sites.timezones["tzid"].unique()]
        for dataset_id in ("s3_day_effects", "s4_group_weights"):
            df = self.inputs[dataset_id]
            if "merchant_id" in df.columns and "tz_group_id" in df.columns:
                merchants.append(sorted_unique(df["merchant_id"].cast(pl.UInt64).to_numpy()))
                tzids.append(df["tz_group_id"].unique())
        tz_list = sorted(set().union(*(set(t.to_list()) for t in tzids)))
        if len(tz_list) >= 1 << keys.TZ_BITS:
            raise Blocked(f"{len(tz_list)} distinct tz groups exceed the 16-bit key field")
        return CodeBook(sorted_unique(np.concatenate(merchants)), tz_list)

    def tz_codes(self, tz: pl.Series) -> np.ndarray:
        names = self.codes.tzids
        return tz.replace_strict(names, list(range(len(names))), default=-1, return_dtype=pl.Int64).to_numpy()

    def day_keys_of(self, df: pl.DataFrame) -> np.ndarray:
        merchant = index_in_runs(self.codes.merchant_ids, df["merchant_id"].to_numpy())
        return keys.day_keys(merchant, epoch_days(df["utc_day"]), self.tz_codes(df["tz_group_id"]))

    def describe(self, day_keys: np.ndarray, with_tz: bool = True) -> list:
        """Readable (merchant_id, day[, tzid]) of a few day keys, for FAIL details only."""
        out = []
        for k in day_keys[:EXAMPLES]:
            k = int(k)
            merchant, day = int(self.codes.merchant_ids[keys.merchant_of(k)]), str(np.datetime64(keys.day_of(k), "D"))
            out.append((merchant, day, self.codes.tzids[keys.tz_of(k)]) if with_tz else (merchant, day))
        return out

    @preparation
    def s3(self) -> KeyedRows:
        return KeyedRows(self.inputs["s3_day_effects"], self.day_keys_of(self.inputs["s3_day_effects"]))

    @preparation
    def s4(self) -> KeyedRows:
        return KeyedRows(self.inputs["s4_group_weights"], self.day_keys_of(self.inputs["s4_group_weights"]))

    @preparation.named("groups")
    def merchant_groups(self) -> MerchantGroups:
        with_tz = self.sites.with_tz
        merchant = index_in(self.codes.merchant_ids, with_tz["merchant_id"].to_numpy())
        # tz codes follow tzid string order, so sorted group keys list each merchant's groups in the law's order.
        group = sorted_unique(keys.group_keys(merchant, self.tz_codes(with_tz["tzid"])))
        owner = keys.merchant_of_group(group)
        n_groups = unique_counts(owner)[1]
        return MerchantGroups(group, ordinal_in_runs(owner).astype(np.int64), np.repeat(n_groups, n_groups))

    @preparation
    def day_grid(self) -> np.ndarray | None:
        """The S3 day grid: the policy's inclusive day_range if given, else S3's own contiguous days
        (None when there is neither: a shard without S3 rows cannot tell the grid, nor needs it)."""
        pol = self.policies.get("day_effect_policy_v1")
        if pol is not None:
            try:
                start, end = day_bounds(day_range(pol.data), "day_effect_policy_v1")
            except EngineError as exc:
                raise Blocked(f"day_effect_policy_v1.day_range malformed: {exc.rule}") from None
            return np.arange(start, end + 1)
        if self.inputs["s3_day_effects"].height == 0:
            return None
        days = sorted_unique(epoch_days(self.inputs["s3_day_effects"]["utc_day"].unique()))
        if len(days) == 0 or days[0] < 0 or days[-1] - days[0] + 1 != len(days):
            raise Blocked("S3 days are not a contiguous YYYY-MM-DD grid")
        return days

    @shard_check("S3.COVERAGE", facts={"rows": SUM, "groups": SUM, "days": SAME, "first_day": SAME},
                 metrics={"s3_rows": "rows", "merchant_groups": "groups", "days": "days"},
                 pass_detail=lambda f: f"{f['groups'] * f['days']} rows = {f['groups']} merchant groups x {f['days']} days")
    def s3_coverage(self) -> Outcome:
        """S3 keys = merchants x their sorted site tz groups x the full day grid."""
        s3, groups, days = self.s3, self.merchant_groups.key, self.day_grid
        facts = {"rows": s3.rows.height, "groups": len(groups), "days": None if days is None else len(days),
                 "first_day": None if days is None else int(days[0])}
        if days is None:  # no S3 row and no policy grid: right only for a shard without merchant groups
            return [f"{len(groups)} merchant groups without any S3 row"] if len(groups) else [], facts
        want = keys.pack_day_keys(np.repeat(keys.merchant_of_group(groups), len(days)), np.tile(days, len(groups)),
                                  np.repeat(keys.tz_of(groups), len(days)))
        have = s3.key
        problems = []
        if (have < 0).any():
            problems.append(f"{int((have < 0).sum())} rows with an unknown merchant, malformed day or unknown tz")
        want_s, have_s = np.sort(want), np.sort(have[have >= 0])
        if not np.array_equal(want_s, have_s):
            missing = only_in(want_s, have_s)
            extra = only_in(have_s, want_s)
            if len(missing):
                problems.append(f"{len(missing)} merchant x day x group rows missing{examples(self.describe(missing))}")
            if len(extra):
                problems.append(f"{len(extra)} rows outside the grid{examples(self.describe(extra))}")
            if not len(missing) and not len(extra):
                problems.append("duplicate keys")
        return problems, facts

    @shard_check("S3.DOMAIN", facts={"rows": SUM},
                 pass_detail=lambda f: f"{f['rows']} rows with finite positive gamma and sigma_gamma")
    def s3_domain(self) -> Outcome:
        """gamma and sigma_gamma finite and > 0."""
        s3 = self.inputs["s3_day_effects"]
        gamma, sigma = s3["gamma"].to_numpy(), s3["sigma_gamma"].to_numpy()
        bad = ~(np.isfinite(gamma) & (gamma > 0)) | ~(np.isfinite(sigma) & (sigma > 0))
        problems = [f"{int(bad.sum())} rows with gamma or sigma_gamma not finite and > 0"] if bad.any() else []
        return problems, {"rows": len(gamma)}

    @shard_check("S3.COUNTERS", facts={"counters": SUM}, pass_detail=lambda f: f"{f['counters']} S3 counters follow the law")
    def s3_counters(self) -> Outcome:
        """S3 counters: hi = merchant_id, lo = day index x n_groups + group index, unique."""
        s3, groups, days = self.s3, self.merchant_groups, self.day_grid
        df, key = s3.rows, s3.key
        if days is None:  # no S3 rows (see day_grid): no counters
            return [], {"counters": 0}
        if (key < 0).any():
            raise Blocked("S3 rows with unknown keys (see S3.COVERAGE)")
        pos = index_in(groups.key, keys.group_of(key))
        day_index = keys.day_of(key) - days[0]
        if (pos < 0).any():
            raise Blocked("S3 rows for groups the merchant has no site in (see S3.COVERAGE)")
        lo_want = (day_index * groups.n_groups[pos] + groups.rank[pos]).astype(np.uint64)
        hi, lo = df["rng_counter_hi"].to_numpy(), df["rng_counter_lo"].to_numpy()
        bad = (hi != df["merchant_id"].to_numpy()) | (lo != lo_want)
        problems = []
        if bad.any():
            rows = df.filter(pl.Series(bad)).select("merchant_id", "utc_day", "tz_group_id").rows()
            problems.append(f"{int(bad.sum())} rows whose counter is not (merchant_id, day x n_groups + group){examples(rows)}")
        streams = sorted(df["rng_stream_id"].unique().to_list())
        if streams not in ([STREAM_S3], []):
            problems.append(f"rng_stream_id values {streams[:EXAMPLES]}, expected only {STREAM_S3!r}")
        if not bad.any():
            # Counters that follow the law are unique exactly when the keys are (checked in S3S4.KEYSET).
            dups = len(key) - len(sorted_unique(key))
            if dups:
                problems.append(f"{dups} duplicate counters")
        return problems, {"counters": len(key)}

    @shard_check("S3S4.KEYSET", facts={"s3_keys": SUM, "s4_rows": SUM}, metrics={"s4_rows": "s4_rows"},
                 pass_detail=lambda f: f"{f['s3_keys']} keys, identical in S3 and S4")
    def s3_s4_keyset(self) -> Outcome:
        """S3 and S4 hold the same unique (merchant_id, utc_day, tz_group_id) keys."""
        k3, k4 = self.s3.key, self.s4.key
        problems = []
        for name, k in (("S3", k3), ("S4", k4)):
            if (k < 0).any():
                problems.append(f"{name}: {int((k < 0).sum())} rows with unknown merchant, malformed day or unknown tz")
            dups = len(k) - len(sorted_unique(k))
            if dups:
                problems.append(f"{name}: {dups} duplicate keys")
        a, b = sorted_unique(k3[k3 >= 0]), sorted_unique(k4[k4 >= 0])
        if not np.array_equal(a, b):
            only3, only4 = only_in(a, b), only_in(b, a)
            if len(only3):
                problems.append(f"{len(only3)} keys only in S3{examples(self.describe(only3))}")
            if len(only4):
                problems.append(f"{len(only4)} keys only in S4{examples(self.describe(only4))}")
        return problems, {"s3_keys": len(k3), "s4_rows": len(k4)}

    @shard_check("S4.GAMMA_ECHO", facts={"echoed": SUM, "mismatches": SUM}, metrics={"gamma_echo_mismatches": "mismatches"},
                 pass_detail=lambda f: f"{f['echoed']} S4 gammas equal S3 exactly")
    def gamma_echo(self) -> Outcome:
        """S4 gamma equals S3 gamma bit for bit."""
        s3, s4 = self.s3, self.s4
        order3 = np.argsort(s3.key, kind="stable")
        pos = index_in(s3.key[order3], s4.key)
        keep = (pos >= 0) & (s4.key >= 0)
        i4 = np.flatnonzero(keep)
        i3 = order3[pos[keep]]
        g3 = s3.rows["gamma"].to_numpy()[i3]
        g4 = s4.rows["gamma"].to_numpy()[i4]
        # Echo means the same float, bit for bit (a recomputation would not be an echo).
        bad = g3.view(np.uint64) != g4.view(np.uint64)
        facts = {"echoed": len(i4), "mismatches": int(bad.sum())}
        if bad.any():
            worst = float(np.nanmax(np.abs(g3[bad] - g4[bad])))
            rows = examples(self.describe(s4.key[i4][bad]))
            return [f"{int(bad.sum())} S4 rows whose gamma differs from S3 (max {worst:.3e}){rows}"], facts
        if len(i4) != len(s4.key):
            return [f"{len(s4.key) - len(i4)} S4 rows without an S3 row to echo"], facts
        return [], facts

    @shard_check("S4.MASS", facts={"merchant_days": SUM, "max_delta": MAX},
                 metrics={"merchant_days": "merchant_days", "mass_max_abs_delta": "max_delta"},
                 pass_detail=lambda f: f"{f['merchant_days']} merchant-days sum to 1 within {MASS_TOL}; max {f['max_delta']:.3e}")
    def mass(self) -> Outcome:
        """Per merchant-day |sum p_group - 1| <= 1e-9, every p_group in [0, 1]."""
        key, p = self.s4.key, self.s4.rows["p_group"].to_numpy()
        if (key < 0).any():
            raise Blocked("S4 rows with unknown keys (see S3S4.KEYSET)")
        merchant_day = keys.merchant_day_of(key)
        order = np.argsort(merchant_day, kind="stable")
        md_sorted, p_sorted = merchant_day[order], p[order]
        starts = np.r_[0, np.flatnonzero(md_sorted[1:] != md_sorted[:-1]) + 1] if len(md_sorted) else np.zeros(0, np.int64)
        sums = np.add.reduceat(p_sorted, starts) if len(starts) else np.zeros(0)
        dev = np.abs(sums - 1.0)
        worst = float(np.nanmax(dev)) if len(dev) else None  # None: no rows in this shard (see MAX)
        bad = ~(dev <= MASS_TOL)
        out_of_range = int((~((p >= 0) & (p <= 1))).sum())
        problems = []
        if bad.any():
            problems.append(f"{int(bad.sum())} merchant-days with |sum p_group - 1| > {MASS_TOL} (max {worst:.3e})"
                            f"{examples(self.describe(md_sorted[starts][bad] << keys.TZ_BITS, with_tz=False))}")
        if out_of_range:
            problems.append(f"{out_of_range} p_group values outside [0, 1]")
        return problems, {"merchant_days": len(starts), "max_delta": worst}

    @shard_check("S4.BASE_SHARE", facts={"rows": SUM, "max_delta": MAX}, metrics={"base_share_max_abs_delta": "max_delta"},
                 pass_detail=lambda f: f"{f['rows']} base shares recomputed within {BASE_SHARE_TOL}; max {f['max_delta']:.3e}")
    def base_share(self) -> Outcome:
        """base_share = sum of S1 p_weight over the merchant's sites in the group (within 1e-12)."""
        with_tz = self.sites.with_tz
        key = self.s4.key
        merchant = index_in(self.codes.merchant_ids, with_tz["merchant_id"].to_numpy())
        site_group = keys.group_keys(merchant, self.tz_codes(with_tz["tzid"]))
        groups = sorted_unique(site_group)
        share = np.bincount(np.searchsorted(groups, site_group), weights=with_tz["p_weight"].to_numpy(), minlength=len(groups))
        pos = index_in(groups, np.where(key >= 0, keys.group_of(key), -1))
        b = self.s4.rows["base_share"].to_numpy()
        no_site = pos < 0
        dev = np.abs(b - take(share, pos))
        dev[no_site] = np.inf
        finite = dev[~no_site]
        worst = float(np.nanmax(finite)) if len(finite) else None  # None: no rows with a site here
        bad = ~(dev <= BASE_SHARE_TOL)
        facts = {"rows": len(b), "max_delta": worst}
        if bad.any():
            return [(f"{int(bad.sum())} S4 rows whose base_share is not the S1 sum over the group's sites "
                     f"({int(no_site.sum())} without any site; max delta {worst or 0.0:.3e})"
                     f"{examples(self.describe(np.where(key >= 0, key, 0)[bad]))}")], facts
        return [], facts
