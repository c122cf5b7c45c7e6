"""The page machinery shared by lane and sweep pages: plots as data URIs, the Jinja2 environment
(autoescape on, strict undefined), the record normalised through JSON, and the write of
`report.html` beside its record."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..formatting import fmt
from ..plots import PLOTS

RECORD = "certification_record.json"
PAGE = "report.html"

BAND_CLASS = {"B+": "bplus", "B": "b", "FAIL": "fail"}
VERDICT_CLASS = {"PASS_BPLUS": "bplus", "PASS_B": "b", "FAIL_REALISM": "fail", "INVALID_FOR_GRADING": "invalid"}


@dataclass(frozen=True)
class Plot:
    name: str
    caption: str
    uri: str
    width: int
    height: int

    @property
    def anchor(self) -> str:
        return "plot-" + self.name.removesuffix(".png").replace("_", "-")

    @property
    def css(self) -> str:
        return "pl-" + self.name.removesuffix(".png").replace("_", "-")


def _png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def load_plots(folder: Path, captions: dict[str, str] | None = None) -> dict[str, Plot]:
    """Every PNG of `folder` as a data URI: known plots in the report's order, then any other by name."""
    folder = Path(folder)
    captions = PLOTS if captions is None else captions
    present = sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []
    order = [n for n in captions if n in present] + [n for n in present if n not in captions]
    out = {}
    for name in order:
        data = (folder / name).read_bytes()
        try:
            width, height = _png_size(data)
        except ValueError:
            continue  # a truncated or foreign file is left out rather than shown broken
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        out[name] = Plot(name, captions.get(name, name.removesuffix(".png")), uri, width, height)
    return out


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("certification.html", "templates"),
        autoescape=True,  # every template is HTML; record strings are never trusted as markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["band_class"] = lambda b: BAND_CLASS.get(b, "na")
    env.filters["ok_class"] = lambda ok: "na" if ok is None else "bplus" if ok else "fail"
    env.filters["ok_text"] = lambda ok: "n/a" if ok is None else "pass" if ok else "fail"
    return env


_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV


def normalise(record: dict) -> dict:
    """The record as its JSON file holds it (string keys, lists, sorted keys)."""
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def _write_page(pack: Path, record_name: str, render, captions: dict | None = None) -> Path:
    """Render `pack/report.html` from the pack's record and its `plots/`."""
    pack = Path(pack)
    record = json.loads((pack / record_name).read_text(encoding="utf-8"))
    plots = load_plots(pack / "plots") if captions is None else load_plots(pack / "plots", captions=captions)
    out = pack / PAGE
    out.write_text(render(record, plots), encoding="utf-8")
    return out
