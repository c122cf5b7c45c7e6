"""Sweeps: every point of a policy grid scored on the same draws, in one pack.

`seg2b sweep --lane fast --set POLICY_ID:/json/pointer=v1,v2,... [--set ...]` builds the full grid
of the values given (plus the baseline point: today's policies), validates every candidate policy
against its schema before anything runs, then scores each point with the lane's seeds in one runs
root. Common random numbers make this cheap and meaningful: a point reruns only the consumers of
the knobs it moves (everything else is reused), and the differences between points are the knobs'
effects, not fresh noise. The replay (T-STR-05) is off by default in a sweep (`--replay` turns it on);
a point's verdict says so.

The pack (`<evidence root>/sweep/<stamp>-<hash>/`): `sweep_record.json` (every gate value of every
point and seed, the points' verdicts, which states each point reran or reused), `sweep_report.md`
(the points ranked so the best honest candidate stands first, then one table per gate against the
knobs) and `plots/<gate>_<metric>.png` (each gate's metric against the first knob, one line per seed and
combination of the other knobs, with the B and B+ thresholds drawn).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError
from engine.identity import sha256_hex
from engine.policies import DEFAULT_POLICY_DIR, POLICY_NAMES, load_policy, parse_policy_bytes

from . import gates as G
from .record import write_json

VERDICT_RANK = {G.PASS_BPLUS: 3, G.PASS_B: 2, G.FAIL_REALISM: 1, G.INVALID: 0}


@dataclass(frozen=True)
class Knob:
    policy: str
    pointer: str
    values: tuple

    @property
    def label(self) -> str:
        return f"{self.policy}:{self.pointer}"


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string value (e.g. a mode name)


def _split_values(text: str) -> list[str]:
    """Comma-separated values; commas inside [] or {} belong to a JSON value."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _resolve(doc, pointer: str, flag: str):
    """(parent container, key) of a JSON pointer that names an existing location of `doc`."""
    if not pointer.startswith("/"):
        raise EngineError("--set", flag, f"pointer {pointer!r} must start with '/' (a JSON pointer, RFC 6901)")
    parts = [_unescape(p) for p in pointer[1:].split("/")]
    node = doc
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, dict) and part in node:
            if last:
                return node, part
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            if last:
                return node, int(part)
            node = node[int(part)]
        else:
            where = "/" + "/".join(parts[: depth + 1])
            raise EngineError("--set", flag, f"pointer {pointer!r} names nothing in the policy (no {where!r})")
    raise EngineError("--set", flag, "empty pointer")


def parse_set(text: str, policy_dir: Path) -> Knob:
    """`POLICY_ID:/json/pointer=v1,v2,...` -> a knob; every error names the flag and the rule."""
    head, sep, values = text.partition("=")
    policy, colon, pointer = head.partition(":")
    if not sep or not colon:
        raise EngineError("--set", text, "expected POLICY_ID:/json/pointer=v1,v2,...")
    if policy not in POLICY_NAMES or policy == "certification_gates_v1":
        raise EngineError("--set", text, f"unknown policy id {policy!r}; choose one of "
                          f"{', '.join(n for n in POLICY_NAMES if n != 'certification_gates_v1')}")
    raw = [v for v in _split_values(values) if v != ""]
    if not raw:
        raise EngineError("--set", text, "empty value list: give at least one value after '='")
    _resolve(load_policy(policy, policy_dir).data, pointer, text)
    parsed = tuple(_parse_value(v) for v in raw)
    if len(set(map(json.dumps, parsed))) != len(parsed):
        raise EngineError("--set", text, "a value is listed twice")
    return Knob(policy, pointer, parsed)


@dataclass
class Point:
    name: str
    settings: dict  # knob label -> value (empty for the baseline)
    policy_dir: Path


def plan_grid(knobs: list[Knob], policy_dir: Path) -> list[tuple[dict, dict[str, bytes]]]:
    """Every grid point as (settings, {policy: candidate bytes}), each candidate validated against
    its schema: nothing is written until the whole grid is known to be valid."""
    policy_dir = Path(policy_dir)
    labels = [k.label for k in knobs]
    if len(set(labels)) != len(labels):
        raise EngineError("--set", labels[0], "the same policy pointer is set twice")
    base_docs = {k.policy: load_policy(k.policy, policy_dir).data for k in knobs}
    candidates = []
    for values in itertools.product(*(k.values for k in knobs)):
        docs = copy.deepcopy(base_docs)
        for knob, value in zip(knobs, values):
            parent, key = _resolve(docs[knob.policy], knob.pointer, knob.label)
            parent[key] = value
        files = {}
        for name, doc in docs.items():
            if doc == base_docs[name]:
                continue  # the baseline's own bytes: same digest, nothing reruns for it
            raw = (json.dumps(doc, indent=2) + "\n").encode()
            parse_policy_bytes(name, raw, f"--set {', '.join(labels)} = {list(values)} ({name})", DEFAULT_POLICY_DIR)
            files[name] = raw
        candidates.append((dict(zip(labels, values)), files))
    return candidates


def write_points(candidates: list[tuple[dict, dict[str, bytes]]], policy_dir: Path, work: Path) -> list[Point]:
    """The baseline plus one policy folder per grid point that differs from it."""
    points = [Point("baseline", {}, Path(policy_dir))]
    for i, (settings, files) in enumerate(candidates, 1):
        if not files:
            points[0].settings = settings  # the grid holds today's values: that point is the baseline
            continue
        folder = work / f"point-{i:03d}"
        shutil.copytree(policy_dir, folder, dirs_exist_ok=True)
        for name, raw in files.items():
            (folder / f"{name}.json").write_bytes(raw)
        points.append(Point(f"p{i:03d}", settings, folder))
    return points


def _rank_key(entry: dict):
    """Best first: no structural or veto failure (an honest candidate), then the verdict, then fewer
    FAILs, fewer Bs."""
    bands = [g["band"] for s in entry["per_seed"].values() for g in s.values()]
    return (-(entry["structural_failures"] == 0), -VERDICT_RANK.get(entry["verdict"], -1),
            bands.count("FAIL"), bands.count("B"))


def run_sweep(lane: str, sets: list[str], runs_root: Path, policy_dir: Path | None = None,
              evidence_root: Path = Path("evidence"), replay: bool = False, quiet: bool = False) -> Path:
    from engine.progress import StageProgress

    from .lanes import score_lane

    t0 = time.perf_counter()
    policy_dir = Path(policy_dir or DEFAULT_POLICY_DIR)
    runs_root, evidence_root = Path(runs_root), Path(evidence_root)
    knobs = [parse_set(s, policy_dir) for s in sets]
    grid = plan_grid(knobs, policy_dir)  # every candidate validated before anything is written
    sweep_id = sha256_hex(json.dumps([lane, sets, str(policy_dir.resolve())]).encode())[:12]
    work = runs_root / "sweeps" / sweep_id
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    points = write_points(grid, policy_dir, work)
    entries = []
    for point in points:
        if not quiet:
            print(f"sweep point {point.name}: {point.settings or 'today policies'}", flush=True)
        p0 = time.perf_counter()
        try:
            outcome = score_lane(lane, runs_root, point.policy_dir, progress=StageProgress(quiet), replay=replay)
        except EngineError as exc:
            entries.append({"name": point.name, "settings": point.settings, "verdict": "REJECTED", "error": str(exc),
                            "per_seed": {}, "structural_failures": -1, "seconds": round(time.perf_counter() - p0, 3)})
            continue
        rec = outcome.record
        entries.append({
            "name": point.name, "settings": point.settings, "verdict": rec["verdict"],
            # honest = no structural check and no anti-artifact veto gate failed
            "structural_failures": len(rec["reasons"]["structural_failed"]) + len(rec["reasons"].get("veto_failed", [])),
            "reasons": rec["reasons"], "parameter_hash": rec["parameter_hash"],
            "per_seed": {s: {g: {"band": r["band"], "values": r["values"], "attribution": r.get("attribution")}
                             for g, r in d["gates"].items()} for s, d in rec["per_seed"].items()},
            "stages": {s: {n: st["status"] for n, st in d.get("stages", {}).items()} for s, d in rec["per_seed"].items()},
            "seconds": round(time.perf_counter() - p0, 3),
        })
    gates_policy = load_policy("certification_gates_v1", policy_dir).data
    ranked = sorted((e for e in entries if e["verdict"] != "REJECTED"), key=_rank_key)
    best = next((e["name"] for e in ranked if e["structural_failures"] == 0), None)
    record = {"lane": lane, "knobs": [{"label": k.label, "values": list(k.values)} for k in knobs],
              "replay": replay, "points": entries, "ranking": [e["name"] for e in ranked], "best_honest": best,
              "thresholds": gates_policy["realism_gates"], "wall_seconds": round(time.perf_counter() - t0, 3)}
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    pack = evidence_root / "sweep" / f"{stamp}-{sweep_id}"
    pack.mkdir(parents=True, exist_ok=True)
    write_json(pack / "sweep_record.json", record)
    from .sweep_report import write_sweep_pack

    write_sweep_pack(pack, record)
    if not quiet:
        print(f"sweep: {len(entries)} points in {record['wall_seconds']:.1f} s; best honest: {best}; pack: {pack}")
    return pack
