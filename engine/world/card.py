"""The world card: every calibration target with its measured value, plus emergent topology."""

from __future__ import annotations

from typing import Any

import numpy as np

from .policy import CHANNELS, _bad
from .reference import Reference


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
