"""Gate evaluation and the deterministic verdict reducer (docs/certification.md).

Every threshold comes from `policies/certification_gates_v1.json`; this module only knows how to
compare a metric with a threshold, how conditions combine into a band, and how bands, structural
checks and preconditions reduce to one verdict.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
BANDS = ("FAIL", "B", "B+")

PASS_BPLUS, PASS_B, FAIL_REALISM, INVALID = "PASS_BPLUS", "PASS_B", "FAIL_REALISM", "INVALID_FOR_GRADING"


def holds(value, op: str, threshold) -> bool:
    """A missing threshold always holds; a missing or NaN value never does."""
    if threshold is None:
        return True
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(OPS[op](value, threshold))


def band(conditions: list[dict], metrics: dict) -> str:
    """B+ if every condition meets its B+ threshold (and B), B if every B threshold holds, else FAIL."""
    at_b = all(holds(metrics.get(c["metric"]), c["op"], c["B"]) for c in conditions)
    at_bplus = at_b and all(holds(metrics.get(c["metric"]), c["op"], c["B+"]) for c in conditions)
    return "B+" if at_bplus else "B" if at_b else "FAIL"


def band_rank(b: str) -> int:
    return BANDS.index(b)


@dataclass
class GateResult:
    gate: str
    seed: int | None
    band: str
    values: dict
    thresholds: list
    attribution: str | None = None
    floor_values: dict = field(default_factory=dict)
    floor_band: str | None = None
    family: str = "realism"  # realism | veto
    data_values: dict = field(default_factory=dict)
    data_band: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


# Where the fix of a gate below B+ belongs (docs/certification.md, floor attribution).
TOPOLOGY = "structural: upstream topology"
UPSTREAM_OF_S4 = "upstream of S4: S1/S3 shares"
S4 = "S4"
OWNER = {"T-S1": "S1", "T-S3": "S3", "T-S4": "S4", "T-S5": "S5", "T-R-": "roster"}


def attribute(band_published: str, band_floor: str | None, band_data: str | None, veto_ok: bool) -> str:
    """Which state a shortfall of an S4 gate belongs to, from its three references: the topology
    floor (no S4 can beat it), the data reference (the raw S1 x S3 mix: an S4 that changes nothing)
    and the published value. Never points at S4 for what S4 could only close by bending the data."""
    published = band_rank(band_published)
    if band_floor is not None and band_rank(band_floor) <= published:
        return TOPOLOGY
    if not veto_ok:
        return S4
    if band_data is None or band_rank(band_data) <= published:
        return UPSTREAM_OF_S4
    return S4  # S4 publishes a worse band than the mix it was given


def evaluate_seed(gates_policy: dict, metrics: dict, floor_metrics: dict | None = None, seed: int | None = None,
                  data_metrics: dict | None = None) -> dict[str, GateResult]:
    """Band of every realism and veto gate for one seed, with the three-reference attribution of
    the S4 gates (see `attribute`); other gates below B+ are attributed to their own state."""
    out = {}
    for gate, conditions in gates_policy.get("veto_gates", {}).items():
        res = GateResult(gate, seed, band(conditions, metrics), {c["metric"]: metrics.get(c["metric"]) for c in conditions},
                         conditions, family="veto")
        if res.band != "B+":
            res.attribution = S4
        out[gate] = res
    veto_ok = all(r.band != "FAIL" for r in out.values())
    attributed = set(gates_policy["floor_attributed_gates"])
    realism = {}
    for gate, conditions in gates_policy["realism_gates"].items():
        res = GateResult(gate, seed, band(conditions, metrics), {c["metric"]: metrics.get(c["metric"]) for c in conditions},
                         conditions)
        if gate in attributed and floor_metrics is not None:
            res.floor_values = {c["metric"]: floor_metrics.get(c["metric"]) for c in conditions}
            res.floor_band = band(conditions, floor_metrics)
            if data_metrics is not None:
                res.data_values = {c["metric"]: data_metrics.get(c["metric"]) for c in conditions}
                res.data_band = band(conditions, data_metrics)
            if res.band != "B+":
                res.attribution = attribute(res.band, res.floor_band, res.data_band, veto_ok)
        elif res.band != "B+":
            res.attribution = OWNER.get(gate[:4], "2B")
        realism[gate] = res
    return realism | out


def cross_seed(gates_policy: dict, per_seed_metrics: dict[int, dict]) -> dict:
    """T-X-01 CVs (std ddof=1 / mean across seeds) and the S3 drift CV."""
    cfg = gates_policy["cross_seed"]

    def cv(metric):
        vals = [m.get(metric) for m in per_seed_metrics.values()]
        if len(vals) < 2 or any(v is None for v in vals):
            return None
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
        return math.sqrt(var) / abs(mean) if mean else math.inf

    cvs = {gate: cv(metric) for gate, metric in cfg["cv_gates"].items()}
    worst = max((v for v in cvs.values() if v is not None), default=None)
    if worst is None:
        x01 = "N/A"
    elif worst <= cfg["cv_max"]["B+"]:
        x01 = "B+"
    elif worst <= cfg["cv_max"]["B"]:
        x01 = "B"
    else:
        x01 = "FAIL"
    drift = cv(cfg["s3_drift_metric"])
    return {"cv": cvs, "T-X-01": x01, "worst_cv": worst, "cv_max": cfg["cv_max"], "s3_drift_cv": drift,
            "s3_drift_cv_max": cfg["s3_drift_cv_max"],
            "s3_drift_ok": None if drift is None else drift <= cfg["s3_drift_cv_max"]}


def verdict(preconditions: dict[str, bool], structural: dict[int, dict[str, bool]],
            gates: dict[int, dict[str, GateResult]], xseed: dict, full_grid: bool, certifying: bool) -> dict:
    """The reducer, in docs/certification.md's order. Returns the verdict and every reason."""
    failed_pre = sorted(k for k, ok in preconditions.items() if not ok)
    # ok None: a check that was not run (a sweep without replay) is neither a pass nor a failure
    failed_struct = sorted(f"seed={s}:{g}" for s, checks in structural.items() for g, ok in checks.items() if ok is False)
    failed_b = sorted(f"seed={s}:{g}" for s, res in gates.items() for g, r in res.items()
                      if r.band == "FAIL" and r.family != "veto")
    failed_veto = sorted(f"seed={s}:{g}" for s, res in gates.items() for g, r in res.items()
                         if r.band == "FAIL" and r.family == "veto")
    below_bplus = sorted(f"seed={s}:{g}" for s, res in gates.items() for g, r in res.items() if r.band == "B")
    x01 = xseed.get("T-X-01")
    reasons = {"preconditions_failed": failed_pre, "structural_failed": failed_struct, "veto_failed": failed_veto,
               "realism_failed": failed_b, "below_bplus": below_bplus, "T-X-01": x01, "s3_drift_ok": xseed.get("s3_drift_ok")}
    if failed_pre:
        v = INVALID
    elif failed_struct or failed_veto or failed_b or x01 == "FAIL":
        v = FAIL_REALISM
    elif not below_bplus and x01 in ("B+", "N/A") and xseed.get("s3_drift_ok") in (True, None) and full_grid:
        v = PASS_BPLUS
    else:
        v = PASS_B
    return {"verdict": v, "provisional": not certifying, "reasons": reasons}
