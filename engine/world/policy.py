"""Reading the world policy: the cross-field rules its schema cannot state, and the laws it
defines (sites-per-merchant quantiles, home-country market weights)."""

from __future__ import annotations

import numpy as np

from ..errors import EngineError
from .reference import Reference, reference

WHERE = "world_policy_v1"
CHANNELS = ("card_present", "card_not_present", "omni")


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
