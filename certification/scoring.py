"""Scoring one seed's published run: realism metrics, floor, cohorts, structural checks, preconditions.

Everything here reads the published datasets (through the pipeline's contract-checked loader)
and calls the metric recipes of the `certification/metrics/` package; nothing reaches into engine state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from engine import alias, contracts
from engine.bundle import verify_bundle
from engine.datasets import check_table
from engine.errors import EngineError
from engine.pipeline import RunResult, partition_of
from engine.replay import ReplayResult, compare
from engine.states.s2_alias_tables import read_tables

from . import metrics as M
from .plot_series import plot_series, veto_series

if TYPE_CHECKING:
    from .config import LaneConfig

# metric key (as named in certification_gates_v1) -> (datasets it needs, recipe)
S1_KEYS = {
    "s1_residual_median": M.t_s1_01_residual_median,
    "s1_top_gap_median": M.t_s1_02_top_gap_median,
    "s1_hhi_iqr": M.t_s1_03_hhi_iqr,
    "s1_uniform_share": M.t_s1_04_uniform_share,
}


@dataclass
class SeedScore:
    seed: int
    metrics: dict
    floor_metrics: dict
    group_shares: dict
    cohorts: dict
    structural: dict  # T-STR id -> {"ok": bool, "detail": str}
    roster_facts: dict
    s8_flag: str | None
    world_card: dict
    roster_card: dict
    runtime: dict
    plot_data: dict = field(default_factory=dict)
    data_metrics: dict = field(default_factory=dict)  # the S4 metrics of the raw S1 x S3 mix (data reference)
    veto_bands: list = field(default_factory=list)  # T-S4-V1 per dominance band
    tradeoff: list = field(default_factory=list)  # certification/tradeoff.py, one entry per regulariser setting
    stages: dict = field(default_factory=dict)  # stage -> {status, outputs: {dataset: sha256}}
    upstream_identity: str = ""  # what the seed's draws are keyed by (engine.identity.upstream_identity)


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def realism_metrics(s1: pl.DataFrame, s3: pl.DataFrame, s4: pl.DataFrame, clipped_rows: int | None = None,
                    gamma_clip: tuple[float, float] | None = None) -> dict:
    out = {k: fn(s1) for k, fn in S1_KEYS.items()}
    out.update(M.s3_metrics(s3, clipped_rows=clipped_rows, gamma_clip=gamma_clip))
    out.update(M.s4_metrics(s4))
    return {k: _finite(v) for k, v in out.items()}


def roster_facts(roster: pl.DataFrame) -> dict:
    per_day = roster.group_by("merchant_id", "utc_day").len()
    days = roster.select(pl.col("utc_day").min().alias("lo"), pl.col("utc_day").max().alias("hi")).row(0)
    from engine.calendar import epoch_day

    horizon = epoch_day(days[1]) - epoch_day(days[0]) + 1 if roster.height else 0
    return {
        "horizon_days": horizon,
        "first_day": days[0],
        "last_day": days[1],
        "arrivals": roster.height,
        "active_merchant_days": per_day.height,
        "median_arrivals_per_merchant_day": float(per_day["len"].median()) if per_day.height else 0.0,
        "share_merchant_days_repeated": float((per_day["len"] >= 2).mean()) if per_day.height else 0.0,
        "merchants": roster["merchant_id"].n_unique(),
        "classes": sorted(roster["merchant_class"].unique().to_list()),
        "channels": sorted(roster["channel"].unique().to_list()),
    }


def structural_checks(result: RunResult) -> tuple[dict, str | None]:
    """T-STR-01..04 of a published run. T-STR-05 needs the seed's replay, which is back only after
    scoring (it runs meanwhile): the lane adds it, by `replay_check`."""
    checks = {}
    # T-STR-01: independent decode of the published blob against S1 (not S7's code path).
    try:
        s1 = result.load("s1_site_weights")
        mids, q, al, offsets = read_tables(result.load("s2_alias_index"), result.load("s2_alias_blob"))
        p_hat = alias.decode_many(q, al, offsets)
        delta = float(np.max(np.abs(p_hat - s1["p_weight"].to_numpy()))) if s1.height else 0.0
        s1_merchants = s1["merchant_id"].unique(maintain_order=True).to_numpy()
        same_merchants = np.array_equal(np.asarray(mids, dtype=np.uint64), s1_merchants)
        ok = delta <= 1.2e-7 and same_merchants
        checks["T-STR-01"] = {"ok": ok, "detail": f"max |p_hat - p_weight| = {delta:.3e}; merchants aligned: {same_merchants}"}
    except EngineError as exc:
        checks["T-STR-01"] = {"ok": False, "detail": str(exc)}
    # T-STR-02: the S7 report.
    try:
        s7 = result.load("s7_audit_report")
        failed = [c["id"] for c in s7["checks"] if c["status"] != "PASS"]
        checks["T-STR-02"] = {"ok": s7["summary"]["overall"] == "PASS",
                              "detail": f"{s7['summary']['overall']}; failed: {failed or 'none'}"}
    except EngineError as exc:
        checks["T-STR-02"] = {"ok": False, "detail": str(exc)}
    # T-STR-03: the S8 flag under the hash law.
    flag = None
    try:
        flag = verify_bundle(result.path("validation_bundle_2B"))
        checks["T-STR-03"] = {"ok": True, "detail": f"sha256_hex = {flag}"}
    except EngineError as exc:
        checks["T-STR-03"] = {"ok": False, "detail": str(exc)}
    # T-STR-04: every Parquet dataset of the seed: exact schema (on read) and key order.
    problems = []
    for ds in contracts.DATASETS.values():
        if ds.kind != "parquet":
            continue
        path = result.path(ds.id)
        if not path.exists():
            continue
        try:
            check_table(ds.id, path, partition_of(ds.id, result.ctx))
        except EngineError as exc:
            problems.append(str(exc))
    checks["T-STR-04"] = {"ok": not problems, "detail": "; ".join(problems) or "all Parquet datasets conform"}
    return checks, flag


def replay_check(replay: ReplayResult | None, published: dict[str, str], labels: dict[str, str]) -> dict:
    """T-STR-05: an independent rerun of the seed (fresh folder, fresh process) reproduced every
    output byte for byte, so rerunning publishes nothing new.

    `published`: the published run's output digests (engine.replay.output_digests); `labels`: output
    path -> "stage:dataset" (engine.replay.output_paths), how a changed output is named."""
    if replay is None:
        return {"ok": False, "detail": "replay not run"}
    if replay.error:
        return {"ok": False, "detail": f"replay failed: {replay.error}"}
    changed = sorted(labels.get(p, p) for p in compare(published, replay.digests))
    return {"ok": not changed, "detail": f"{len(published.keys() | replay.digests.keys())} outputs rerun from nothing "
            f"and compared; changed: {changed or 'none'}"}


def veto_settings(gates_policy: dict | None) -> dict:
    """The veto recipes' parameters from certification_gates_v1 (the recipes' defaults without one)."""
    vp = (gates_policy or {}).get("veto_parameters")
    if not vp:
        return {}
    edges = list(vp["dominance_band_edges"])
    edges[-1] = max(edges[-1], 1.0) + 1e-12  # the top band includes a share of exactly 1
    return {"edges": tuple(edges), "min_merchants": vp["min_merchants_per_band"], "quantile": vp["share_ratio_quantile"],
            "min_days": vp["min_days_for_slope"]}


def score_seed(result: RunResult, config: LaneConfig | None = None, tradeoff: bool = False) -> SeedScore:
    """Everything of one seed but T-STR-05 (see `structural_checks`), under the lane's policies."""
    gates_policy = config.gates_policy if config else None
    s1 = result.load("s1_site_weights")
    s3 = result.load("s3_day_effects")
    s4 = result.load("s4_group_weights")
    tz = result.load("site_timezones")
    merchants = result.load("merchants")
    roster = result.load("s5_arrival_roster")
    clipped = None
    for rec in result.stages:
        if rec.name == "S3" and rec.report:
            clipped = rec.report.get("clipped_rows")
    md = M.s4_merchant_days(s4)  # aggregated once, read by every S4 recipe below
    # A skipped S3 has no report: its clipped rows are counted at the lane's clip bounds.
    metrics = realism_metrics(s1, s3, md, clipped, config.gamma_clip() if config and clipped is None else None)
    floor = {k: _finite(v) for k, v in M.s4_floor_metrics(md).items()}
    mix = M.raw_mix(s1, s3, tz)  # what S1 x S3 imply, recomputed here: the data reference and the veto gates
    data = {k: _finite(v) for k, v in M.s4_metrics(M.data_reference_days(mix)).items()}
    events = result.load("rng_event_alias_pick_group")
    breadth_series = {}
    for part in (M.merchant_concentration(roster), M.day_effect_memory(s3), M.holiday_effects(s3, roster, tz, merchants),
                 M.night_share_gap(roster, events, s1, tz)):
        breadth_series.update(part.pop(M.SERIES, {}))
        metrics.update({k: _finite(v) for k, v in part.items()})
    vs = veto_settings(gates_policy)
    slopes = M.compression_slopes(mix, s4, **({"min_days": vs.pop("min_days")} if vs else {}))
    ratios = M.share_ratios(mix, s4)
    veto = M.veto_summary(slopes, ratios, **vs)
    bands = veto.pop("veto_slope_bands")
    points = []
    if tradeoff and config:
        from engine.states.s4_group_weights import POLICY

        from .tradeoff import tradeoff_points

        points = tradeoff_points(gates_policy, config.engine[POLICY], mix, floor, data,
                                 veto_settings(gates_policy), result.ctx.seed)
    metrics.update({k: _finite(v) for k, v in veto.items()})
    structural, flag = structural_checks(result)
    cohorts = M.cohort_tables(s1, s3, md, tz, merchants)
    return SeedScore(
        seed=result.ctx.seed,
        metrics=metrics,
        floor_metrics=floor,
        group_shares=M.s4_group_count_shares(md),
        cohorts=cohorts,
        structural=structural,
        roster_facts=roster_facts(roster),
        s8_flag=flag,
        world_card=result.load("world_card"),
        roster_card=result.load("roster_card"),
        runtime={r.name: round(r.seconds, 4) for r in result.stages},
        plot_data={**plot_series(s1, s3, s4), **veto_series(slopes, ratios), **breadth_series},
        stages=stage_outputs(result),
        data_metrics=data,
        tradeoff=points,
        veto_bands=bands,
        upstream_identity=result.ctx.upstream_identity,
    )


def stage_outputs(result: RunResult) -> dict:
    """Per stage: how this run got it (ran, skipped, reused) and its output digests (from its receipt),
    so two candidates can say which states' outputs differ."""
    import json

    from engine.pipeline import receipt_path

    out = {}
    for rec in result.stages:
        path = receipt_path(result.runs_root, result.ctx, rec.name)
        outputs = json.loads(path.read_bytes()).get("outputs", {}) if path.exists() else {}
        out[rec.name] = {"status": rec.status, "outputs": outputs}
    return out


def preconditions(gates_policy: dict, lane: str, seeds: list[int], scores: dict[int, SeedScore],
                  results: dict[int, RunResult], engine_digests: dict[str, str]) -> dict:
    """PRE-01..05 (docs/certification.md); each {ok, detail}. `engine_digests`: the digests of the
    engine policies the lane read from its policy folder."""
    pre = gates_policy["preconditions"]
    out = {}
    horizons = {s: sc.roster_facts["horizon_days"] for s, sc in scores.items()}
    out["PRE-01"] = {"ok": all(h >= pre["min_horizon_days"] for h in horizons.values()),
                     "detail": f"horizon days per seed {horizons} (need >= {pre['min_horizon_days']})"}
    med = {s: sc.roster_facts["median_arrivals_per_merchant_day"] for s, sc in scores.items()}
    rep = {s: round(sc.roster_facts["share_merchant_days_repeated"], 4) for s, sc in scores.items()}
    out["PRE-02"] = {"ok": all(med[s] >= pre["min_median_arrivals_per_merchant_day"]
                               and rep[s] >= pre["min_share_merchant_days_repeated"] for s in scores),
                     "detail": f"median arrivals per merchant-day {med}; share with >= 2 {rep}"}
    cover = {}
    for s, res in results.items():
        merchants = res.load("merchants")
        s1_merchants = set(res.load("s1_site_weights")["merchant_id"].unique().to_list())
        f = scores[s].roster_facts
        roster_merchants = set(res.load("s5_arrival_roster")["merchant_id"].unique().to_list())
        missing_m = len(s1_merchants - roster_merchants)
        missing_c = sorted(set(merchants["merchant_class"].unique().to_list()) - set(f["classes"]))
        missing_ch = sorted(set(merchants["channel"].unique().to_list()) - set(f["channels"]))
        cover[s] = (missing_m, missing_c, missing_ch)
    out["PRE-03"] = {"ok": all(m == 0 and not c and not ch for m, c, ch in cover.values()),
                     "detail": "; ".join(f"seed {s}: {m} S1 merchants without arrivals, classes missing {c}, "
                                         f"channels missing {ch}"
                                         for s, (m, c, ch) in cover.items())}
    current = engine_digests
    sealed = {s: res.load("s0_gate_receipt")["policies"] for s, res in results.items()}
    same = all(v == current for v in sealed.values())
    out["PRE-04"] = {"ok": same, "detail": "every seed sealed the digests of the policy folder" if same else
                     f"sealed digests differ from the policy folder for seeds {[s for s, v in sealed.items() if v != current]}"}
    required = gates_policy["lanes"]["certify"]
    if lane == gates_policy["certifying_lane"]:
        missing = [s for s in required if s not in seeds]
        out["PRE-05"] = {"ok": not missing, "detail": f"required seeds {required}; missing {missing or 'none'}"}
    else:
        out["PRE-05"] = {"ok": True, "detail": f"{lane} lane is provisional; completeness applies to the certify lane"}
    return out
