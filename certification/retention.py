"""Run retention (plan section 4): keep the baseline, the current candidate, the last good
candidate and the active evidence pack; prune superseded run folders before a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

POINTERS = "pointers.json"


def read_pointers(runs_root: Path) -> dict:
    p = Path(runs_root) / POINTERS
    return json.loads(p.read_text()) if p.exists() else {}


def _entry(record: dict) -> dict:
    return {"manifest_fingerprint": record["manifest_fingerprint"], "parameter_hash": record["parameter_hash"],
            "verdict": record["verdict"], "lane": record["lane"], "seeds": record["seeds"],
            "evidence_pack": record.get("evidence_pack")}


def update_pointers(runs_root: Path, record: dict) -> dict:
    pointers = read_pointers(runs_root)
    entry = _entry(record)
    pointers.setdefault("baseline", entry)
    pointers["current"] = entry
    if record["verdict"] in ("PASS_B", "PASS_BPLUS"):
        pointers["last_good"] = entry
    pointers["active_pack"] = record.get("evidence_pack")
    Path(runs_root).mkdir(parents=True, exist_ok=True)
    (Path(runs_root) / POINTERS).write_text(json.dumps(pointers, indent=2, sort_keys=True) + "\n")
    return pointers


def kept_identities(pointers: dict) -> tuple[set[str], set[str]]:
    mfs, phs = set(), set()
    for key in ("baseline", "current", "last_good"):
        if key in pointers:
            mfs.add(pointers[key]["manifest_fingerprint"])
            phs.add(pointers[key]["parameter_hash"])
    return mfs, phs


def prune_runs(runs_root: Path) -> list[Path]:
    """Remove partitions of manifests no pointer keeps (superseded candidates). Returns what went."""
    runs_root = Path(runs_root)
    pointers = read_pointers(runs_root)
    if not pointers:
        return []
    keep_mf, keep_ph = kept_identities(pointers)
    gone = []
    for pattern, keep, prefix in (("manifest_fingerprint=*", keep_mf, "manifest_fingerprint="),
                                  ("parameter_hash=*", keep_ph, "parameter_hash=")):
        for d in sorted(runs_root.rglob(pattern)):
            if d.is_dir() and d.name[len(prefix):] not in keep:
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d)
    return gone


def prune_packs(lane_dir: Path, keep: Path, last_good: bool, pointers: dict | None = None) -> None:
    """Keep the active pack, the most recent passing pack of the lane and the packs the runs root's
    pointers name (baseline, last good: the lane report compares with them); drop the rest."""
    lane_dir = Path(lane_dir)
    marker = lane_dir / "LAST_GOOD"
    if last_good:
        marker.write_text(keep.name + "\n")
    good = marker.read_text().strip() if marker.exists() else None
    named = {Path(e["evidence_pack"]).resolve() for e in (pointers or {}).values()
             if isinstance(e, dict) and e.get("evidence_pack")}
    for d in lane_dir.iterdir():
        if d.is_dir() and d != keep and d.name != good and d.resolve() not in named:
            shutil.rmtree(d, ignore_errors=True)
