"""The sweep pack's report and plots, drawn from `sweep_record.json` alone."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BAND_MARK = {"B+": "B+", "B": "B", "FAIL": "FAIL"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _settings(entry: dict, knobs: list[dict]) -> list[str]:
    return [_fmt(entry["settings"].get(k["label"], "today")) for k in knobs]


def _gate_ids(record: dict) -> list[str]:
    return list(record["thresholds"])


def render_markdown(record: dict, plots: list[str]) -> str:
    knobs = record["knobs"]
    by_name = {e["name"]: e for e in record["points"]}
    lines = [f"# Sweep: {record['lane']} lane, {len(record['points'])} points", ""]
    lines += [f"- knob `{k['label']}`: {', '.join(_fmt(v) for v in k['values'])}" for k in knobs]
    lines += [f"- replay (T-STR-05): {'run' if record['replay'] else 'not run (a point verdict ignores it)'}",
              f"- wall time: {record['wall_seconds']:.1f} s", ""]
    best = record.get("best_honest")
    if best:
        where = ", ".join(f"{k['label']} = {v}" for k, v in zip(knobs, _settings(by_name[best], knobs)))
        lines += [f"**Best honest candidate: {best}** ({where})", ""]
    else:
        lines += ["**No candidate passes every structural check and veto gate.**", ""]
    lines += ["Ranking: no structural or veto-gate failure first (an honest candidate), then the verdict, "
              "then the fewest gates at FAIL, then at B. "
              "Every point ran on the same draws (common random numbers), so differences between points are the "
              "knobs' effects.", ""]
    head = ["rank", "point", *[k["label"] for k in knobs], "verdict", "FAIL", "B", "rerun", "seconds"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = [by_name[n] for n in record["ranking"]] + [e for e in record["points"] if e["name"] not in record["ranking"]]
    for i, e in enumerate(ranked, 1):
        bands = [g["band"] for s in e["per_seed"].values() for g in s.values()]
        rerun = sorted({n for s in e.get("stages", {}).values() for n, st in s.items() if st == "ran"})
        verdict = e["verdict"] if "error" not in e else f"REJECTED: {e['error']}"
        lines.append("| " + " | ".join([str(i) if "error" not in e else "-", e["name"], *_settings(e, knobs), verdict,
                                        str(bands.count("FAIL")), str(bands.count("B")), ", ".join(rerun) or "none",
                                        f"{e['seconds']:.1f}"]) + " |")
    lines.append("")
    lines += ["## Gate values per point", ""]
    seeds = sorted({s for e in record["points"] for s in e["per_seed"]}, key=int)
    for gate in _gate_ids(record):
        conds = record["thresholds"][gate]
        thr = "; ".join(f"{c['metric']} {c['op']} B {c['B']} / B+ {c['B+']}" for c in conds)
        lines += [f"### {gate} ({thr})", ""]
        head = ["point", *[k["label"] for k in knobs], *[f"seed {s}" for s in seeds]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for e in record["points"]:
            cells = []
            for s in seeds:
                g = e["per_seed"].get(s, {}).get(gate)
                cells.append("-" if g is None
                             else ", ".join(_fmt(v) for v in g["values"].values()) + f" ({BAND_MARK[g['band']]})")
            lines.append("| " + " | ".join([e["name"], *_settings(e, knobs), *cells]) + " |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    return "\n".join(lines)


def write_plots(folder: Path, record: dict) -> list[str]:
    """One plot per gate metric against the first knob (baseline included where it sits on the grid)."""
    knobs = record["knobs"]
    if not knobs:
        return []
    first = knobs[0]["label"]
    base_value = next((e["settings"].get(first) for e in record["points"] if e["name"] == "baseline"), None)
    points = [e for e in record["points"] if e["per_seed"] and first in e["settings"]]
    if not points:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    others = [k["label"] for k in knobs[1:]]
    for gate, conds in record["thresholds"].items():
        for c in conds:
            fig = Figure(figsize=(6.4, 3.8))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            drawn = False
            series: dict[tuple, list] = {}
            for e in points:
                combo = tuple(_fmt(e["settings"].get(o)) for o in others)
                for s, gates in e["per_seed"].items():
                    v = gates.get(gate, {}).get("values", {}).get(c["metric"])
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        series.setdefault((s, combo), []).append((e["settings"][first], float(v)))
            uniq = list({json.dumps(x): x for pts in series.values() for x, _ in pts}.values())
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in uniq)
            if numeric:
                uniq.sort()
            else:  # the knob's declared order, values it does not declare last
                declared = {json.dumps(v): i for i, v in enumerate(knobs[0]["values"])}
                uniq.sort(key=lambda v: declared.get(json.dumps(v), len(declared)))  # noqa: B023 (used at once)
            pos = [float(v) for v in uniq] if numeric else list(range(len(uniq)))
            ticks = None if numeric else [_fmt(v) for v in uniq]
            place = {json.dumps(v): x for v, x in zip(uniq, pos)}
            for (s, combo), pts in sorted(series.items()):
                pts = sorted(pts, key=lambda p: place[json.dumps(p[0])])
                label = f"seed {s}" + (f" ({', '.join(f'{o}={v}' for o, v in zip(others, combo))})" if others else "")
                ax.plot([place[json.dumps(x)] for x, _ in pts], [y for _, y in pts], marker="o", label=label)
                drawn = True
            if not drawn:
                continue
            for band, style in (("B", "--"), ("B+", ":")):
                if c.get(band) is not None:
                    ax.axhline(c[band], linestyle=style, color="grey", linewidth=1)
                    ax.annotate(f"{band} {c['op']} {c[band]}", (1.0, c[band]), xycoords=("axes fraction", "data"),
                                ha="right", va="bottom", fontsize=7, color="grey")
            if base_value is not None and json.dumps(base_value) in place:
                ax.axvline(place[json.dumps(base_value)], color="black", linewidth=0.6, alpha=0.4)
            if ticks:
                ax.set_xticks(pos, ticks)
            ax.set_xlabel(first)
            ax.set_ylabel(c["metric"])
            ax.set_title(f"{gate}: {c['metric']}", fontsize=10)
            ax.legend(fontsize=7)
            fig.tight_layout()
            name = f"{gate}_{c['metric']}.png"
            fig.savefig(folder / name, dpi=90)
            written.append(name)
    return written


def write_sweep_pack(pack: Path, record: dict) -> None:
    from .html import write_sweep_html

    plots = write_plots(pack / "plots", record)
    (pack / "sweep_report.md").write_text(render_markdown(record, plots), encoding="utf-8")
    write_sweep_html(pack)  # from sweep_record.json, which the sweep wrote before calling this
