"""`report.html`: one self-contained page per evidence pack, rendered from the pack's record.

`write_lane_html(pack)` reads `certification_record.json` and the PNGs under `plots/` (drawn by
`certification/report.py`) and writes `report.html` beside them; `render_lane_html(record, plots)`
returns the page as text. The page never reads the Markdown report: every number on it comes from
the record, formatted by the same `fmt` the Markdown uses.

Properties the tests and the browser check hold it to:

- self-contained: CSS inline, plots as base64 `data:` URIs, no script, and a Content-Security-Policy
  that forbids the browser any fetch other than `data:` images. Each plot's bytes appear once, as a
  class of the page's stylesheet: the plots section and every matrix cell that shows the plot use
  that class, so a plot shared by several gates and seeds does not multiply the page's size;
- readable with JavaScript off: sections are plain HTML, every matrix cell opens with
  `<details>`/`<summary>`;
- escaped: Jinja2 autoescape is on, so a detail string holding markup is shown as text;
- deterministic: the same record and plot bytes give the same page bytes (the record is
  normalised through JSON first, so an in-memory record and its file render alike; nothing on the
  page is read from the clock).
"""
from .lane import GATE_PLOTS, fix_sentence, lane_view, render_lane_html, write_lane_html
from .page import PAGE, RECORD, Plot, environment, load_plots, normalise
from .sweep import SWEEP_RECORD, render_sweep_html, sweep_view, write_sweep_html

__all__ = [
    "GATE_PLOTS", "PAGE", "RECORD", "SWEEP_RECORD", "Plot", "environment", "fix_sentence", "lane_view",
    "load_plots", "normalise", "render_lane_html", "render_sweep_html", "sweep_view", "write_lane_html",
    "write_sweep_html",
]
