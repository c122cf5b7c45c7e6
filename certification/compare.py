"""Comparing two candidates: gate by gate, policy by policy, stage by stage.

Two certification records (from evidence packs, or the lane's record in memory) are compared on
what they share: per seed and gate the values, bands and deltas; the policy differences that
separate them (JSON pointer, old -> new); which states' outputs changed and which the second run
reused. Because every draw is keyed by the upstream identity and never by policy bytes (common
random numbers), a delta between two candidates on the same world is the effect of their policy
difference, not fresh noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import EngineError

from .gates import band_rank

RECORD = "certification_record.json"


def load_pack(pack: Path, flag: str = "PACK") -> dict:
    """The record of an evidence pack folder; one clear error naming what is wrong otherwise."""
    pack = Path(pack)
    path = pack / RECORD
    if not pack.is_dir():
        raise EngineError(pack, flag, "not a folder: give an evidence pack folder (evidence/<lane>/<stamp>-<hash>)")
    if not path.is_file():
        raise EngineError(pack, flag, f"not an evidence pack: no {RECORD}")
    try:
        record = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise EngineError(path, "(document)", f"malformed JSON: {exc}") from None
    if not isinstance(record, dict) or not {"lane", "seeds", "per_seed", "verdict"} <= set(record):
        raise EngineError(path, "(document)", "not a certification record (needs lane, seeds, per_seed, verdict)")
    return record


# --------------------------------------------------------------------------- policy differences


def _flatten(node, pointer: str = "") -> dict[str, object]:
    """JSON pointer -> leaf value (lists and objects are walked; '~' and '/' escaped per RFC 6901)."""
    if isinstance(node, dict):
        out = {}
        for key in sorted(node):
            out.update(_flatten(node[key], f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"))
        return out or {pointer: {}}
    if isinstance(node, list):
        out = {}
        for i, item in enumerate(node):
            out.update(_flatten(item, f"{pointer}/{i}"))
        return out or {pointer: []}
    return {pointer: node}


_ABSENT = "(absent)"


def policy_differences(a: dict, b: dict) -> list[dict]:
    """[{policy, pointer, old, new}] for every leaf that differs between two {policy: document} maps."""
    out = []
    for name in sorted(set(a) | set(b)):
        fa, fb = _flatten(a.get(name, {})), _flatten(b.get(name, {}))
        for ptr in sorted(set(fa) | set(fb)):
            old, new = fa.get(ptr, _ABSENT), fb.get(ptr, _ABSENT)
            if old != new:
                out.append({"policy": name, "pointer": ptr or "/", "old": old, "new": new})
    return out


# --------------------------------------------------------------------------- records


def _delta(x, y):
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool) and not isinstance(y, bool):
        return y - x
    return None


def compare_records(a: dict, b: dict, label_a: str = "A", label_b: str = "B") -> dict:
    """Everything two records share, side by side (B relative to A)."""
    notes = []
    if a.get("lane") != b.get("lane"):
        notes.append(f"different lanes: {label_a} is {a.get('lane')}, {label_b} is {b.get('lane')}")
    seeds_a, seeds_b = [str(s) for s in a["seeds"]], [str(s) for s in b["seeds"]]
    shared = [s for s in seeds_a if s in seeds_b]
    if seeds_a != seeds_b:
        notes.append(f"different seeds: {label_a} {seeds_a}, {label_b} {seeds_b}; compared on the shared {shared}")
    other_world = [s for s in shared if a["per_seed"][s].get("upstream_identity") != b["per_seed"][s].get("upstream_identity")]
    if other_world:
        notes.append(f"different upstream worlds on seeds {other_world}: deltas there include the world's difference, "
                     "not only the policies'")
    gates = []
    for s in shared:
        ga, gb = a["per_seed"][s]["gates"], b["per_seed"][s]["gates"]
        for g in [g for g in ga if g in gb]:
            ra, rb = ga[g], gb[g]
            for metric in ra["values"]:
                va, vb = ra["values"].get(metric), rb["values"].get(metric)
                gates.append({"seed": s, "gate": g, "metric": metric, "value_a": va, "value_b": vb,
                              "delta": _delta(va, vb), "band_a": ra["band"], "band_b": rb["band"],
                              "band_change": band_rank(rb["band"]) - band_rank(ra["band"]),
                              "attribution_b": rb.get("attribution")})
    stages = {}
    for s in shared:
        sa, sb = a["per_seed"][s].get("stages") or {}, b["per_seed"][s].get("stages") or {}
        changed = [n for n in sb if n in sa and sa[n].get("outputs") != sb[n].get("outputs")]
        stages[s] = {"changed": changed,
                     "reused": [n for n, st in sb.items() if st.get("status") == "reused"],
                     "ran": [n for n, st in sb.items() if st.get("status") == "ran"]}
    return {
        "a": {"label": label_a, "lane": a.get("lane"), "seeds": seeds_a, "verdict": a.get("verdict"),
              "parameter_hash": a.get("parameter_hash"), "evidence_pack": a.get("evidence_pack")},
        "b": {"label": label_b, "lane": b.get("lane"), "seeds": seeds_b, "verdict": b.get("verdict"),
              "parameter_hash": b.get("parameter_hash"), "evidence_pack": b.get("evidence_pack")},
        "notes": notes,
        "shared_seeds": shared,
        "gates": gates,
        "policy_differences": policy_differences(a.get("policy_documents") or {}, b.get("policy_documents") or {}),
        "stages": stages,
    }


REFERENCES = (("last_good", "last good candidate"), ("baseline", "baseline"))


def against_references(pointers: dict, record: dict) -> dict:
    """The record compared with the runs root's last good candidate and baseline (retention
    pointers), where their packs are still on disk; otherwise a line saying why not."""
    out = {}
    for key, label in REFERENCES:
        entry = pointers.get(key)
        pack = entry.get("evidence_pack") if entry else None
        if not pack:
            out[key] = {"label": label, "missing": f"no {label} in this runs root yet"}
            continue
        try:
            ref = load_pack(Path(pack))
        except EngineError as exc:
            out[key] = {"label": label, "missing": f"{label} pack not readable: {exc}"}
            continue
        out[key] = {"label": label, **compare_records(ref, record, label_a=label, label_b="this run")}
    return out


# --------------------------------------------------------------------------- rendering


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))[:60]
    return str(v)


def _signed(v) -> str:
    return "-" if v is None else f"{v:+.3g}"


def render_markdown(cmp: dict, changed_only: bool = False, heading: str = "##") -> list[str]:
    """Markdown lines of a comparison (B against A). `changed_only` keeps the gate rows whose band or
    value moved, for the lane report's short section."""
    a, b = cmp["a"], cmp["b"]
    lines = [f"{heading} {b['label']} against {a['label']}", "",
             f"- {a['label']}: {a['lane']} lane, seeds {', '.join(a['seeds'])}, verdict **{a['verdict']}**"
             + (f", pack `{a['evidence_pack']}`" if a.get("evidence_pack") else ""),
             f"- {b['label']}: {b['lane']} lane, seeds {', '.join(b['seeds'])}, verdict **{b['verdict']}**"
             + (f", pack `{b['evidence_pack']}`" if b.get("evidence_pack") else "")]
    lines += [f"- note: {n}" for n in cmp["notes"]]
    lines.append("")
    diffs = cmp["policy_differences"]
    lines += [f"{heading}# Policy differences", ""]
    if diffs:
        lines += ["| policy | pointer | old | new |", "|---|---|---|---|"]
        lines += [f"| {d['policy']} | `{d['pointer']}` | {_fmt(d['old'])} | {_fmt(d['new'])} |" for d in diffs]
    else:
        lines.append("None: the two candidates ran the same policies.")
    lines.append("")
    rows = [g for g in cmp["gates"] if not changed_only or g["band_change"] or (g["delta"] not in (None, 0))]
    lines += [f"{heading}# Gates", ""]
    if rows:
        lines += [f"| seed | gate | metric | {a['label']} | {b['label']} | delta | band |", "|---|---|---|---:|---:|---:|---|"]
        for g in rows:
            band = g["band_b"] if not g["band_change"] else f"{g['band_a']} -> {g['band_b']}"
            lines.append(f"| {g['seed']} | {g['gate']} | {g['metric']} | {_fmt(g['value_a'])} | {_fmt(g['value_b'])} | "
                         f"{_signed(g['delta'])} | {band} |")
    else:
        lines.append("No gate value or band differs." if changed_only else "No shared gates.")
    lines.append("")
    lines += [f"{heading}# States", ""]
    if any(cmp["stages"].values()):
        lines += [f"| seed | outputs changed | reused by {b['label']} | rerun by {b['label']} |", "|---|---|---|---|"]
        for s, st in cmp["stages"].items():
            lines.append(f"| {s} | {', '.join(st['changed']) or 'none'} | {', '.join(st['reused']) or 'none'} | "
                         f"{', '.join(st['ran']) or 'none'} |")
    else:
        lines.append("Stage digests are not recorded in one of the records.")
    return lines + [""]
