"""The evidence pack's plots: fixed names (`PLOTS`), one line, box or bar set per seed, drawn
off-screen with matplotlib's Agg canvas. Series come from `SeedScore.plot_data` (see report.py's
docstring for their shapes) and, for the trade-off and holiday plots, from the record itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The explicit Agg canvas renders off-screen without switching the process-wide pyplot backend
# (`matplotlib.use`), so importing this module never changes an interactive session's plotting.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .formatting import union_keys

# file name -> caption; the order is the order of the report's plot section.
PLOTS = {
    "s1_hhi_hist.png": "S1: HHI per merchant",
    "s1_top1_vs_top2.png": "S1: top1 vs top2 site weight",
    "s3_merchant_std_hist.png": "S3: std(gamma) per merchant",
    "s3_gamma_by_tz_group.png": "S3: gamma by the largest tz groups",
    "s4_max_p_group_hist.png": "S4: max p_group per merchant-day",
    "s4_entropy_hist.png": "S4: entropy per merchant-day",
    "s4_groups_per_merchant_day.png": "S4: merchant-days by number of tz groups",
    "veto_slope_vs_dominance.png": "T-S4-V1: per-merchant slope of published on raw log-contrast, by dominance",
    "veto_share_ratio_hist.png": "T-S4-V2: |ln(mean p_group / mean raw share)| per (merchant, tz group)",
    "s4_tradeoff.png": "Trade-off: S4 and veto gates against regulariser strength (same draws)",
    "r_lorenz.png": "T-R-01: concentration of arrivals across merchants (Lorenz curve)",
    "s3_acf1_hist.png": "T-S3-04: lag-1 autocorrelation of day effects per (merchant, tz group)",
    "holiday_effects.png": "T-S3-05 / T-R-02: mean log effect of public holidays (S3 mix, roster volume)",
    "s5_local_hour.png": "T-S5-01: local hour of arrivals routed >= 6 h from the main group vs at the main group",
}


# --------------------------------------------------------------------------------------------
# plots


def _color(index: int) -> str:
    # Colour by the seed's position in the lane, so a seed keeps its colour across every plot.
    return f"C{index % 10}"


def _figure(ncols: int = 1, width: float = 7.0, sharey: bool = True) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False, sharey=sharey)[0]
    return fig, list(axes)


def _save(fig: Figure, path: Path) -> None:
    # No "Software" tag: the bytes then depend on the data (and renderer) only.
    fig.savefig(path, format="png", metadata={"Software": None})


def _finite_array(values) -> np.ndarray:
    a = np.asarray(values if values is not None else [], dtype=np.float64)
    return a[np.isfinite(a)]


def _overlaid_hist(path: Path, series: dict[str, list], title: str, xlabel: str, unit: str,
                   value_range: tuple[float, float] | None = None, bins: int = 40, vlines: dict | None = None) -> bool:
    """Step histograms on shared bins, each seed normalised to shares so unequal sizes compare."""
    present = {s: _finite_array(v) for s, v in series.items()}
    order = {s: i for i, s in enumerate(series)}
    present = {s: a for s, a in present.items() if a.size}
    if not present:
        return False
    every = np.concatenate(list(present.values()))
    lo, hi = value_range or (float(every.min()), float(every.max()))
    if hi <= lo:  # one distinct value: give the bin some width
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig, (ax,) = _figure()
    for s, a in present.items():
        ax.hist(a, bins=edges, weights=np.full(a.size, 1.0 / a.size), histtype="step", linewidth=1.5,
                color=_color(order[s]), label=f"seed {s} (n={a.size})")
    for band, style in (("B", "--"), ("B+", ":")):
        if vlines and vlines.get(band) is not None:
            ax.axvline(vlines[band], color="grey", linestyle=style, linewidth=0.9, label=f"{band} threshold {vlines[band]:.3g}")
    ax.set(title=title, xlabel=xlabel, ylabel=f"share of {unit}")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _top1_vs_top2(path: Path, data: dict[str, dict]) -> bool:
    fig, (ax,) = _figure(width=6.0)
    drawn = False
    for i, (s, d) in enumerate(data.items()):
        x, y = np.asarray(d.get("s1_top1") or [], float), np.asarray(d.get("s1_top2") or [], float)
        if x.size == 0 or x.size != y.size:
            continue
        ax.scatter(x, y, s=6, alpha=0.5, color=_color(i), label=f"seed {s}", linewidths=0)
        drawn = True
    if not drawn:
        return False
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="top2 = top1")
    ax.plot([0, 1], [1, 0], linestyle=":", color="grey", linewidth=0.8, label="top1 + top2 = 1")
    ax.set(title="S1: top1 vs top2 p_weight per merchant\n(merchants with >= 2 sites)",
           xlabel="top1 p_weight", ylabel="top2 p_weight", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _gamma_by_group(path: Path, data: dict[str, dict]) -> bool:
    """One panel per seed (each world has its own largest tz groups), a box per group."""
    panels = [(i, s, d.get("s3_gamma_by_group") or {}) for i, (s, d) in enumerate(data.items())]
    panels = [(i, s, {tz: _finite_array(v) for tz, v in groups.items() if len(v)}) for i, s, groups in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        return False
    fig, axes = _figure(ncols=len(panels), width=max(7.0, 3.6 * len(panels)))
    for ax, (i, s, groups) in zip(axes, panels):
        box = ax.boxplot(list(groups.values()), showfliers=False, patch_artist=True,
                         medianprops={"color": "black"})  # the default orange vanishes on seed 2's boxes
        for patch in box["boxes"]:
            patch.set(facecolor=_color(i), alpha=0.35)
        ax.set_xticks(range(1, len(groups) + 1), list(groups), rotation=40, ha="right", fontsize=7)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(f"seed {s}", fontsize=9)
    axes[0].set_ylabel("gamma (box: quartiles; whiskers: 1.5 IQR)")
    fig.suptitle("S3: gamma by the largest tz groups (sampled every k-th row)")
    _save(fig, path)
    return True


def _groups_per_day(path: Path, data: dict[str, dict]) -> bool:
    shares = {s: d.get("s4_groups_per_day") or {} for s, d in data.items()}
    buckets = union_keys(shares.values())
    present = [(i, s) for i, s in enumerate(shares) if shares[s]]
    if not buckets or not present:
        return False
    fig, (ax,) = _figure()
    width = 0.8 / len(present)
    x = np.arange(len(buckets))
    for j, (i, s) in enumerate(present):
        bars = ax.bar(x + (j - (len(present) - 1) / 2) * width, [shares[s].get(b, 0.0) for b in buckets], width,
                      color=_color(i), label=f"seed {s}")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, [f"{b} group(s)" for b in buckets])
    ax.set(title="S4: merchant-days by number of tz groups", ylabel="share of merchant-days", ylim=(0, 1.08))
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _slope_vs_dominance(path: Path, data: dict[str, dict], thresholds: dict) -> bool:
    fig, (ax,) = _figure()
    drawn = False
    for i, (s, d) in enumerate(data.items()):
        x, y = np.asarray(d.get("veto_dominance") or [], float), np.asarray(d.get("veto_slope") or [], float)
        if x.size == 0 or x.size != y.size:
            continue
        ax.scatter(x, np.clip(y, -0.1, 1.5), s=6, alpha=0.5, color=_color(i), label=f"seed {s} (n={x.size})", linewidths=0)
        drawn = True
    if not drawn:
        return False
    for band, style in (("B", "--"), ("B+", ":")):
        if thresholds.get(band) is not None:
            ax.axhline(thresholds[band], color="grey", linestyle=style, linewidth=0.9,
                       label=f"{band}: band median >= {thresholds[band]}")
    ax.axhline(1.0, color="black", linewidth=0.6, alpha=0.5)
    ax.set(title="T-S4-V1: slope of ln(p1/p2) on ln(r1/r2) per multi-tz merchant\n"
                 "(1 = the data's contrasts kept; clipped to [-0.1, 1.5])",
           xlabel="dominance: top group's mean raw share", ylabel="slope", xlim=(0, 1), ylim=(-0.15, 1.55))
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _tradeoff_plot(path: Path, record: dict, seeds: list[str]) -> bool:
    per_seed = record["per_seed"]
    points = {s: per_seed[s].get("tradeoff") or [] for s in seeds}
    gates = [g for g in ("T-S4-01", "T-S4-05", "T-S4-V1", "T-S4-V2")
             if any(g in p["gates"] for v in points.values() for p in v)]
    if not gates:
        return False
    fig, axes = _figure(ncols=len(gates), width=3.2 * len(gates), sharey=False)
    for ax, g in zip(axes, gates):
        thresholds = next((per_seed[s]["gates"][g]["thresholds"][0] for s in seeds if g in per_seed[s]["gates"]), {})
        for i, s in enumerate(seeds):
            smooth = [(p["strength"], next(iter(p["gates"][g]["values"].values()))) for p in points[s]
                      if p["mode"] in ("off", "power") and g in p["gates"]]
            caps = [(p["strength"], next(iter(p["gates"][g]["values"].values())), p["label"]) for p in points[s]
                    if p["mode"] not in ("off", "power") and g in p["gates"]]
            if smooth:
                xs, ys = zip(*sorted(smooth))
                ax.plot(xs, ys, marker="o", markersize=3, color=_color(i), label=f"seed {s}" if g == gates[0] else None)
            for x, y, lab in caps:
                ax.scatter([x], [y], marker="x", color=_color(i))
                if i == 0:
                    ax.annotate(lab.split(" (")[0], (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        for band, style in (("B", "--"), ("B+", ":")):
            if thresholds.get(band) is not None:
                ax.axhline(thresholds[band], color="grey", linestyle=style, linewidth=0.9)
        ax.set_title(g, fontsize=9)
        ax.set_xlabel("strength (power: 1 - tau; x: caps)", fontsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle("S4 settings on the same draws: lines = off/power family, x = cap controls; dashed B, dotted B+")
    _save(fig, path)
    return True


def _lorenz(path: Path, data: dict[str, dict]) -> bool:
    fig, (ax,) = _figure(width=6.0)
    drawn = False
    for i, (s, d) in enumerate(data.items()):
        x = np.sort(np.asarray(d.get("r_arrivals_per_merchant") or [], float))
        if x.size == 0 or x.sum() <= 0:
            continue
        cum = np.r_[0.0, np.cumsum(x) / x.sum()]
        ax.plot(np.linspace(0, 1, cum.size), cum, color=_color(i), label=f"seed {s} (n={x.size})")
        drawn = True
    if not drawn:
        return False
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="equal volume")
    ax.set(title="T-R-01: Lorenz curve of arrivals per merchant", xlabel="share of merchants (smallest first)",
           ylabel="share of arrivals", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _holiday_bars(path: Path, record: dict | None, seeds: list[str]) -> bool:
    if not record:
        return False
    keys = (("s3_holiday_log_effect", "S3 mix"), ("r_holiday_log_effect", "roster volume"))
    values = {s: [record["per_seed"][s]["metrics"].get(k) for k, _ in keys] for s in seeds}
    if all(v is None for vals in values.values() for v in vals):
        return False
    fig, (ax,) = _figure()
    width = 0.8 / len(seeds)
    x = np.arange(len(keys))
    for j, s in enumerate(seeds):
        ax.bar(x + (j - (len(seeds) - 1) / 2) * width, [v if v is not None else 0.0 for v in values[s]], width,
               color=_color(j), label=f"seed {s}")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x, [label for _, label in keys])
    ax.set(title="Mean log effect of a public holiday (holidays package, local date)", ylabel="mean log effect")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _local_hours(path: Path, data: dict[str, dict]) -> bool:
    fig, (ax,) = _figure()
    drawn = False
    for i, (s, d) in enumerate(data.items()):
        for key, style, what in (("s5_local_hour_far", "-", ">= 6 h from main"), ("s5_local_hour_main", ":", "main group")):
            h = np.asarray(d.get(key) or [], float)
            if h.size != 24 or h.sum() <= 0:
                continue
            ax.plot(np.arange(24), h / h.sum(), linestyle=style, color=_color(i), label=f"seed {s}: {what}")
            drawn = True
    if not drawn:
        return False
    ax.axvspan(0, 6, color="grey", alpha=0.12, label="00:00-05:59 local")
    ax.set(title="T-S5-01: local hour of routed arrivals, at the site's own clock", xlabel="local hour",
           ylabel="share of arrivals", xlim=(0, 23))
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def write_plots(folder: Path, seeds: list[str], data: dict[str, dict], veto_thresholds: dict | None = None,
                record: dict | None = None) -> list[str]:
    """Draw every plot some seed has data for; returns the file names written, in `PLOTS` order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {s: data.get(s) or {} for s in seeds}  # lane order fixes the colours

    def series(key):
        return {s: d.get(key) for s, d in data.items()}

    makers = {
        "s1_hhi_hist.png": lambda p: _overlaid_hist(p, series("s1_hhi"), "S1: HHI = sum p_weight^2 per merchant",
                                                    "HHI", "merchants", (0.0, 1.0)),
        "s1_top1_vs_top2.png": lambda p: _top1_vs_top2(p, data),
        "s3_merchant_std_hist.png": lambda p: _overlaid_hist(p, series("s3_merchant_std"),
                                                             "S3: std(gamma) per merchant (ddof = 1)", "std(gamma)",
                                                             "merchants"),
        "s3_gamma_by_tz_group.png": lambda p: _gamma_by_group(p, data),
        "s4_max_p_group_hist.png": lambda p: _overlaid_hist(p, series("s4_max_p"), "S4: max p_group per merchant-day",
                                                            "max p_group", "merchant-days", (0.0, 1.0)),
        "s4_entropy_hist.png": lambda p: _overlaid_hist(p, series("s4_entropy"),
                                                        "S4: entropy -sum p ln p per merchant-day", "entropy (nats)",
                                                        "merchant-days"),
        "s4_groups_per_merchant_day.png": lambda p: _groups_per_day(p, data),
        "veto_slope_vs_dominance.png": lambda p: _slope_vs_dominance(p, data, (veto_thresholds or {}).get("T-S4-V1", {})),
        "veto_share_ratio_hist.png": lambda p: _overlaid_hist(
            p, series("veto_abs_log_ratio"), "T-S4-V2: |ln(mean p_group / mean raw share)| per (merchant, group)",
            "|log ratio| (ln 2 = 0.69: a factor 2)", "(merchant, group) pairs",
            vlines=(veto_thresholds or {}).get("T-S4-V2")),
        "s4_tradeoff.png": lambda p: record is not None and _tradeoff_plot(p, record, seeds),
        "r_lorenz.png": lambda p: _lorenz(p, data),
        "s3_acf1_hist.png": lambda p: _overlaid_hist(p, series("s3_acf1"), "T-S3-04: lag-1 autocorrelation of log gamma "
                                                     "net of weekday means", "lag-1 autocorrelation",
                                                     "(merchant, tz group) pairs", (-1.0, 1.0)),
        "holiday_effects.png": lambda p: _holiday_bars(p, record, seeds),
        "s5_local_hour.png": lambda p: _local_hours(p, data),
    }
    written = []
    for name in PLOTS:
        path = folder / name
        if makers[name](path):
            written.append(name)
        elif path.exists():
            path.unlink()  # a rewrite of the pack must not keep a plot of data that is gone
    return written
