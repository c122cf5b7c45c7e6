"""The world as a function of (world policy, reference data, seed): merchants, their sites, the
sites' cities and time zones (the steps are listed in engine/world/__init__.py)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from .. import rng
from ..errors import EngineError
from .card import world_card
from .policy import CHANNELS, _bad, _classes, _size_knots, market_weights, sites_quantile
from .reference import Reference, reference, reference_identity
from .sampling import _block_cumulative, _pick_in_blocks, _stratified_uniforms

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
    logit = math.log(ex["continue_prob"] / (1 - ex["continue_prob"])) + ex["size_slope"] * np.log(sites / ex["ref_sites"])
    q = 1.0 / (1.0 + np.exp(-logit))
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
    """The upstream what-if (docs/world.md), never used by the default world: raise
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
