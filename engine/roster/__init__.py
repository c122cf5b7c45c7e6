"""The realism-grade arrival roster (`s5_arrival_roster`) and its card; validation of user rosters.

The plan's validation precondition needs repeated arrivals per merchant-day over the whole S3 day
grid (docs/world.md, "The realism-grade roster"; docs/certification.md PRE-01..03). The law, per merchant:

* horizon: the S3 day grid, or an explicit sub-range of it (a short horizon is the PRE-01 negative
  control of the certification harness);
* activity: each day of the horizon is active unless its activity uniform falls below
  `inactive_day_prob`; if that leaves fewer than `min_active_days` (or than the horizon's days,
  if fewer), the days with the largest activity uniforms are switched back on, so the minimum
  holds by construction;
* count: an active day gets N = `min_arrivals_per_active_day` + Poisson(rate) arrivals, with
  rate = rate_scale x base_rate[class] x weekday[class][role of the local weekday]
         x holiday x volume,
  capped at `rate_cap`. The local date is that of the merchant's home zone at 12:00 UTC of the day
  (the local date covering most of the UTC day); its weekday plays the role engine.calendar gives it
  for the home country's weekend (Fri/Sat countries rotate the Mon..Sun profile, as S3 does); on a
  public holiday of the home country the rate is multiplied by exp(the class's holiday effect,
  day_effect_policy_v1: the table S3 applies to the mix). volume = a merchant factor
  exp(s_m z - s_m^2/2) times (the sum over its sites of exp(s_s z_k - s_s^2/2) / size_reference_sites)
  ^ size_exponent: near-proportional to sites with lognormal merchant and site productivity, so volume
  inherits the heavy tail of site counts (`_volumes`, the policy cites its calibration source);
* Poisson: inverse CDF on one uniform (vectorised over all merchant-days, iterating k over the
  still-undecided ones) for rate <= `normal_threshold`; above it the normal approximation
  floor(rate + sqrt(rate) z + 1/2), clipped at 0 (relative error of the approximation is small there
  and the inverse-CDF loop would need ~rate iterations);
* time of day: each arrival first takes one of the merchant's zones (distinct tzids of its sites),
  drawn by site counts (one-zone merchants draw nothing), so a multi-zone merchant's intraday cycle
  is the mixture of its zones' local cycles (`intraday_clock` "zones"; "home" keeps every arrival on
  the home zone's clock, the old law). The UTC day is cut into 96 quarter hours; a quarter's weight
  is the class's intraday weight of the LOCAL hour it falls in (that zone's offset in that quarter),
  so the local profile is shifted by the real offset and every draw lands inside its UTC day by
  construction (`quarter_activity`, which S5 reads back to route each arrival to a zone awake at
  its instant). Offsets are
  looked up once per (tzid, day) with zoneinfo, and per quarter only on days where the offset
  changes (DST); all 2026 offsets are multiples of 15 minutes, so quarters map to one local hour.
  The quarter is picked by inverse CDF on an integer (2^32) CDF (exact integer comparisons, so the
  pick never depends on which other rows share the table), the microsecond inside it uniformly;
* uniqueness: inside a merchant-day, timestamps are made strictly increasing by bumping collisions
  one microsecond at a time (vectorised running maximum), after capping the k-th of n arrivals at
  day_end - n + k so that a bump can never leave the UTC day.

RNG (docs/architecture.md, RNG law): stream `2B.roster`, counter_hi = merchant_id, counter_lo =
epoch_day x 2^20 + slot, epoch_day = days since 1970-01-01 of the UTC day (so a draw is addressed by
the calendar day, independent of the horizon and of the other merchants), slots:
  0 activity uniform, 1 count uniform (inverse CDF), 2 count normal (normal approximation),
  8 + j arrival j's block (word 0 -> quarter hour, word 1 -> microsecond inside it),
  2^19 + j arrival j's zone uniform;
and merchant-level draws at counter_lo = 2^63 + slot (slot 0: merchant volume normal, 1 + k: site
k's productivity normal, k in site_timezones order), a region no calendar day reaches. Every draw
is therefore a pure function of (merchant, day, slot) and building merchants in any split gives
identical rows.
"""

from __future__ import annotations

from .build import build_roster, build_roster_shard, card_of_parts  # noqa: F401 (the package's interface)
from .card import concentration, gini, hill_tail_index, roster_card  # noqa: F401
from .clock import _format_timestamps, _groups_and_ranks, _unique_times, quarter_activity  # noqa: F401
from .layout import *  # noqa: F401,F403
from .validate import load_user_roster, validate_roster  # noqa: F401
from .volume import check_policy, merchant_zones, profiles  # noqa: F401
