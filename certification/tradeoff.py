"""The S4 trade-off: every regulariser setting of the gates policy scored on the seed's own draws.

For each point of `certification_gates_v1.tradeoff.points`, S4's own regulariser (`regularise`,
the function S4's `run_shard` applies) maps the raw mix S1 x S3 imply to a candidate published mix,
and the S4 gates and the veto gates are computed exactly as for the published run. It is what
`seg2b sweep` over the regulariser would report for those gates (same state code, same draws:
common random numbers), without rerunning S5..S8, which do not move them. The table shows where the
honest frontier is: which settings reach which band without failing a veto gate.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import polars as pl

from engine.policies import Policy
from engine.states import s4_group_weights as s4

from . import gates as G
from . import metrics as M

GATE_PREFIX = "T-S4-"


def point_policy(base: Policy, regularizer: dict) -> Policy:
    """The in-use regulariser policy with a point's fields replaced (its mode and that mode's block)."""
    data = copy.deepcopy(base.data)
    data.update(copy.deepcopy(regularizer))
    return replace(base, data=data, sha256="tradeoff")


def segments(mix: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_raw, segment starts, groups per segment) of the raw mix; rows are in S3's key order, so a
    merchant-day's groups are contiguous, as S4 lays them out."""
    same = (pl.col("merchant_id") == pl.col("merchant_id").shift(1)) & (pl.col("utc_day") == pl.col("utc_day").shift(1))
    first = mix.select(same.fill_null(False).not_()).to_series().to_numpy()
    starts = np.flatnonzero(first)
    return mix["r"].to_numpy(), starts, np.diff(np.append(starts, mix.height))


def tradeoff_points(gates_policy: dict, base: Policy, mix: pl.DataFrame, floor: dict, data_metrics: dict,
                    veto_settings: dict, seed: int) -> list[dict]:
    """One entry per trade-off point: its label, strength, the S4 and veto gates' values and bands."""
    vs = dict(veto_settings)
    min_days = vs.pop("min_days", M.MIN_DAYS_FOR_SLOPE)
    p_raw, starts, n = segments(mix)
    cells = mix.select("merchant_id", "utc_day", "tz_group_id", "mass_raw")
    out = []
    for point in gates_policy.get("tradeoff", {}).get("points", []):
        pol = point_policy(base, point["regularizer"])
        p, _ = s4.regularise(p_raw, starts, n, s4.resolve_policy(pol.data))
        published = cells.with_columns(p_group=pl.Series(p))
        metrics = M.s4_metrics(M.s4_merchant_days(published))
        veto = M.veto_summary(M.compression_slopes(mix, published, min_days), M.share_ratios(mix, published), **vs)
        veto.pop("veto_slope_bands")
        metrics.update(veto)
        results = G.evaluate_seed(gates_policy, metrics, floor, seed, data_metrics)
        out.append({"label": point["label"], "strength": point["strength"], "mode": pol.data["mode"],
                    "gates": {g: {"band": r.band, "values": r.values, "attribution": r.attribution}
                              for g, r in results.items() if g.startswith(GATE_PREFIX)}})
    return out
