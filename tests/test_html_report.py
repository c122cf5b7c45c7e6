"""`report.html` (certification/html) and `summary.md` (certification/summary.py).

The page is rendered from a small synthetic lane record (two seeds, realism and veto gates under a
reduced policy, built by the real `build_record` like tests/test_report.py does, plus trade-off,
what-if and comparison entries shaped like the lanes write them) and from real fast-lane records:
the default world's (the session's `fast_lane`), and two small-world lanes run through the command
line with `--summary-to`. The browser check (certification/browser_check.py) needs Chromium and is
run by `nox -s browser` and `.ci/run`, not here.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from certification import gates as G
from certification.compare import against_references
from certification.html import GATE_PLOTS, load_plots, render_lane_html, write_lane_html
from certification.plot_series import plot_series
from certification.record import build_record, write_json
from certification.report import PLOTS, fmt, write_pack
from certification.scoring import SeedScore
from certification.summary import MAX_LINES, render_summary, write_summary
from tests.helpers import policy_variant, world_size

SEEDS = [42, 7]
POLICY = {
    "realism_gates": {
        "T-S1-01": [{"metric": "s1_residual_median", "op": ">=", "B": 0.003, "B+": 0.006}],
        "T-S3-01": [{"metric": "s3_std_median", "op": ">=", "B": 0.03, "B+": 0.04},
                    {"metric": "s3_std_p90_over_p50", "op": ">=", "B": None, "B+": 1.25}],
        "T-S4-01": [{"metric": "s4_max_p_median", "op": "<=", "B": 0.85, "B+": 0.78}],
    },
    "veto_gates": {"T-S4-V1": [{"metric": "veto_slope_min_band_median", "op": ">=", "B": 0.5, "B+": 0.7}]},
    "floor_attributed_gates": ["T-S4-01"],
    "cross_seed": {"cv_gates": {"T-S1-01": "s1_residual_median", "T-S4-01": "s4_max_p_median"},
                   "cv_max": {"B": 0.25, "B+": 0.15}, "s3_drift_metric": "s3_std_median", "s3_drift_cv_max": 0.25},
}
METRICS = {
    42: {"s1_residual_median": 0.0071, "s3_std_median": 0.035, "s3_std_p90_over_p50": 1.4, "s4_max_p_median": 0.70,
         "s3_holiday_log_effect": -0.18, "r_holiday_log_effect": -0.12,
         "veto_slope_min_band_median": 0.97},
    7: {"s1_residual_median": 0.0065, "s3_std_median": 0.045, "s3_std_p90_over_p50": 1.3, "s4_max_p_median": 0.9123,
        "s3_holiday_log_effect": -0.16, "r_holiday_log_effect": -0.11,
        "veto_slope_min_band_median": 0.61},
}
FLOOR = {42: {"s4_max_p_median": 0.5}, 7: {"s4_max_p_median": 0.8765}}
DATA = {42: {"s4_max_p_median": 0.70}, 7: {"s4_max_p_median": 0.9123}}
HOSTILE = '<script>alert("pwned")</script>'
SECTIONS = ("matrix", "veto", "attribution", "cross-seed", "cohorts", "structural", "comparisons", "tradeoff", "what-if",
            "cards", "runtime", "plots", "provenance")


def _frames(shift: float):
    import polars as pl

    s1 = pl.DataFrame({"merchant_id": [1, 2, 2, 3, 3, 3], "p_weight": [1.0, 0.6 + shift, 0.4 - shift, 0.5, 0.3, 0.2]})
    s3 = pl.DataFrame({"merchant_id": [1, 1, 2, 2, 2, 2], "utc_day": ["d1", "d2"] * 3,
                       "tz_group_id": ["A", "A", "A", "A", "B", "B"], "gamma": [1.0, 1.1, 0.9, 1.05, 1.2 + shift, 0.8]})
    s4 = pl.DataFrame({"merchant_id": [1, 1, 2, 2, 2, 2], "utc_day": ["d1", "d2", "d1", "d1", "d2", "d2"],
                       "tz_group_id": ["A", "A", "A", "B", "A", "B"], "p_group": [1.0, 1.0, 0.6 + shift, 0.4 - shift, 0.5, 0.5]})
    return s1, s3, s4


def _tradeoff(seed: int) -> list[dict]:
    return [{"label": "off (the data)", "strength": 0.0, "mode": "off",
             "gates": {"T-S4-01": {"band": "B+" if seed == 42 else "FAIL",
                                   "values": {"s4_max_p_median": DATA[seed]["s4_max_p_median"]}},
                       "T-S4-V1": {"band": "B+", "values": {"veto_slope_min_band_median": 1.0}}}},
            {"label": "soft cap", "strength": 0.6, "mode": "soft_cap_blend",
             "gates": {"T-S4-01": {"band": "B+", "values": {"s4_max_p_median": 0.7612}},
                       "T-S4-V1": {"band": "FAIL", "values": {"veto_slope_min_band_median": 0.05}}}}]


def _score(seed: int) -> SeedScore:
    s1, s3, s4 = _frames(0.05 if seed == 7 else 0.0)
    return SeedScore(
        seed=seed, metrics=METRICS[seed], floor_metrics=FLOOR[seed], group_shares={"1": 0.4, "2": 0.35, "3+": 0.25},
        cohorts={"S1": [{"cohort_kind": "tz_topology", "cohort": "single_tz", "merchants": 3, "T-S1-01": 0.012345678}],
                 "S3_S4": [{"cohort_kind": "size_bucket", "cohort": "small", "merchant_days": 6, "s4_max_p_median": 0.987654,
                            "band": "FAIL"}]},
        structural={"T-STR-01": {"ok": True, "detail": "max |p_hat - p_weight| = 1.0e-08"},
                    "T-STR-03": {"ok": seed == 42, "detail": "sha256_hex = abc" if seed == 42 else HOSTILE}},
        roster_facts={"horizon_days": 28}, s8_flag="ab" * 32 if seed == 42 else None,
        world_card={"card": "world_card", "seed": seed, "n_merchants": 3,
                    "calibration": [{"metric": "n_merchants", "target": 3.0, "accept_lo": 3.0, "accept_hi": 3.0,
                                     "measured": 3.0, "applies": True, "pass": True}]},
        roster_card={"merchants": 3, "horizon": {"days": 28}},
        runtime={"S1": 0.0123, "S3": 0.0456, "S4": 0.1209 if seed == 42 else 0.0859},
        plot_data={**plot_series(s1, s3, s4), "veto_dominance": [0.55, 0.7, 0.95], "veto_slope": [1.0, 0.98, 1.02],
                   "veto_abs_log_ratio": [0.0, 0.01, 0.02], "r_arrivals_per_merchant": [900.0, 120.0, 40.0],
                   "s3_acf1": [0.35, 0.42, 0.5], "s5_local_hour_far": [1] * 6 + [5] * 18,
                   "s5_local_hour_main": [1] * 6 + [5] * 18},
        data_metrics=DATA[seed], tradeoff=_tradeoff(seed),
        veto_bands=[{"band": "[0.0, 0.5)", "graded": True, "median_slope": 0.99, "merchants": 12},
                    {"band": "[0.9, 1.0]", "graded": False, "median_slope": 0.4, "merchants": 2}],
    )


def _comparison(label: str) -> dict:
    return {"label": label,
            "a": {"label": label, "lane": "witness", "seeds": ["42", "7"], "verdict": "PASS_B", "parameter_hash": "e" * 64,
                  "evidence_pack": f"evidence/witness/20261101T000000Z-{label[:4]}"},
            "b": {"label": "this run", "lane": "witness", "seeds": ["42", "7"], "verdict": "FAIL_REALISM",
                  "parameter_hash": "1234abcd" * 8, "evidence_pack": None},
            "notes": [],
            "shared_seeds": ["42", "7"],
            "gates": [{"seed": "7", "gate": "T-S4-01", "metric": "s4_max_p_median", "value_a": 0.8345, "value_b": 0.9123,
                       "delta": 0.9123 - 0.8345, "band_a": "B", "band_b": "FAIL", "band_change": -1, "attribution_b": "x"},
                      {"seed": "42", "gate": "T-S1-01", "metric": "s1_residual_median", "value_a": 0.0071, "value_b": 0.0071,
                       "delta": 0.0, "band_a": "B+", "band_b": "B+", "band_change": 0, "attribution_b": None}],
            "policy_differences": [{"policy": "group_mix_regularizer_v1", "pointer": "/mode", "old": "off",
                                    "new": "soft_cap_blend"}],
            "stages": {"42": {"changed": ["S4"], "reused": ["world", "S1"], "ran": ["S4", "S5"]}}}


def synthetic_record() -> tuple[dict, SimpleNamespace]:
    scores = {s: _score(s) for s in SEEDS}
    gate_results = {s: G.evaluate_seed(POLICY, scores[s].metrics, scores[s].floor_metrics, s, scores[s].data_metrics)
                    for s in SEEDS}
    xseed = G.cross_seed(POLICY, {s: scores[s].metrics for s in SEEDS})
    structural = {s: {k: v["ok"] for k, v in scores[s].structural.items()} for s in SEEDS}
    verdict = G.verdict({"PRE-01": True}, structural, gate_results, xseed, full_grid=True, certifying=False)
    record = build_record(lane="witness", seeds=SEEDS, verdict=verdict,
                          preconditions={"PRE-01": {"ok": True, "detail": "horizon 28 days"}},
                          gates=gate_results, scores=scores, xseed=xseed,
                          policy_fingerprints={"certification_gates_v1": "f" * 64},
                          parameter_hash="1234abcd" * 8, manifest_fingerprint="9" * 64, wall_seconds=1.5,
                          policy_documents={"certification_gates_v1": {"rationale": {"T-S4-V1": "keeps the data's contrasts"}}})
    record["per_seed"]["7"]["gates"]["T-S1-01"]["attribution"] = "<b>S1</b>"  # markup in a gate detail
    record["what_if"] = [
        {"world": "today", "share": None,
         "seeds": {str(s): {"multi_tz_share": 0.53, "calibration_pass": True, "group_shares": {"1": 0.47, "2": 0.12, "3+": 0.41},
                            "gates": {"T-S4-01": {"data": DATA[s]["s4_max_p_median"], "data_band": "B+" if s == 42 else "FAIL",
                                                  "floor": FLOOR[s]["s4_max_p_median"], "floor_band": "B+"}}} for s in SEEDS}},
        {"world": "multi-tz share 0.8", "share": 0.8,
         "seeds": {str(s): {"multi_tz_share": 0.7997, "calibration_pass": False, "group_shares": {"1": 0.2, "2": 0.4, "3+": 0.4},
                            "gates": {"T-S4-01": {"data": 0.7111, "data_band": "B+", "floor": 0.5, "floor_band": "B+"}}}
                   for s in SEEDS}}]
    record["comparisons"] = {"last_good": _comparison("last good candidate"), "baseline": _comparison("baseline")}
    record["evidence_pack"] = "evidence/witness/20261130T000000Z-1234abcd"
    record["full_grid"], record["grid_days"] = True, 28
    return record, SimpleNamespace(record=record, results={}, scores=scores)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    record, outcome = synthetic_record()
    folder = tmp_path_factory.mktemp("html_pack")
    write_pack(folder, record, outcome)
    write_json(folder / "certification_record.json", record)
    write_lane_html(folder)
    write_summary(folder, record)
    return folder, json.loads((folder / "certification_record.json").read_text())


def page_of(folder: Path) -> str:
    return (folder / "report.html").read_text(encoding="utf-8")


def panel(page: str, gate: str, seed) -> str:
    """The text of one matrix cell's panel (from its id to the end of its <details>)."""
    start = page.index(f'id="g-{gate}-{seed}"')
    return page[start:page.index("</details>", start)]


# --------------------------------------------------------------------------------------------
# the page from a synthetic record


def test_verdict_and_reasons_come_first(pack):
    folder, record = pack
    page = page_of(folder)
    assert record["verdict"] == G.FAIL_REALISM
    head = page[:page.index('<section id="matrix">')]
    assert f'<span class="verdict-text">{record["verdict"]}</span>' in head and "provisional" in head
    # every failing reason is named above the matrix, with the gates below B+ and their attribution
    for item in record["reasons"]["realism_failed"] + record["reasons"]["structural_failed"] + record["reasons"]["veto_failed"]:
        assert item in head
    assert 'href="#g-T-S4-01-7">7: FAIL</a>' in head and "structural: upstream topology" in head


def test_every_section_is_present_when_its_data_is(pack):
    page = page_of(pack[0])
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
        assert f'href="#{section}"' in page, section  # and the navigation links to it


def test_sections_without_data_are_left_out(pack, tmp_path):
    folder, record = pack
    bare = copy.deepcopy(record)
    for s in bare["per_seed"].values():
        s["tradeoff"] = []
        s["gates"] = {g: r for g, r in s["gates"].items() if r["family"] != "veto"}
    del bare["what_if"], bare["comparisons"]
    page = render_lane_html(bare, {})
    for gone in ("veto", "tradeoff", "what-if", "comparisons"):
        assert f'id="{gone}"' not in page and f'href="#{gone}"' not in page, gone
    for kept in ("matrix", "attribution", "cross-seed", "cohorts", "structural", "cards", "runtime", "plots"):
        assert f'<section id="{kept}">' in page, kept
    assert "No plot data for:" in page


def test_matrix_cell_per_seed_and_gate_with_values_thresholds_references_and_plot(pack):
    folder, record = pack
    page = page_of(folder)
    plots = load_plots(folder / "plots")
    for s, d in record["per_seed"].items():
        for g, r in d["gates"].items():
            body = panel(page, g, s)
            band_class = {"B+": "bplus", "B": "b", "FAIL": "fail"}[r["band"]]
            assert f'<td class="cell {band_class}"><details>' in page[:page.index(f'id="g-{g}-{s}"')][-2000:]
            for c in r["thresholds"]:
                assert f"<code>{c['metric']}</code>" in body
            for m, v in r["values"].items():
                assert fmt(v) in body, (g, s, m)
            for name in GATE_PLOTS.get(g, ()):
                assert f'class="plot {plots[name].css}"' in body
    failing = panel(page, "T-S4-01", 7)
    # the three references: floor, data, published, with bands
    assert re.search(r"FAIL</span> 0\.8765</td><td>.*FAIL</span> 0\.9123</td><td>.*FAIL</span> 0\.9123</td>", failing)
    assert "even the topology floor" in failing and "structural: upstream topology" in failing
    assert "0.85</td>" in failing and "0.78</td>" in failing  # thresholds as the policy states them


def test_veto_cross_seed_tradeoff_what_if_and_comparisons_show_record_numbers(pack):
    folder, record = pack
    page = page_of(folder)
    veto = page[page.index('<section id="veto">'):page.index('<section id="attribution">')]
    assert "keeps the data&#39;s contrasts" in veto and "0.4 (2, not graded)" in veto
    xs = page[page.index('<section id="cross-seed">'):page.index('<section id="cohorts">')]
    assert fmt(record["cross_seed"]["cv"]["T-S1-01"]) in xs
    trade = page[page.index('<section id="tradeoff">'):page.index('<section id="what-if">')]
    assert "soft cap" in trade and "veto FAIL" in trade and "0.7612" in trade
    what_if = page[page.index('<section id="what-if">'):page.index('<section id="cards">')]
    assert "multi-tz share 0.8" in what_if and "0.7997" in what_if and "0.7111" in what_if
    comps = page[page.index('<section id="comparisons">'):page.index('<section id="tradeoff">')]
    assert comps.index("last good candidate") < comps.index("baseline")
    assert "+0.0778" in comps and "/mode" in comps and "soft_cap_blend" in comps
    assert "s1_residual_median" not in comps  # an unchanged gate metric is not listed


def test_page_is_self_contained(pack):
    page = page_of(pack[0])
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert all(v.startswith("data:") for v in re.findall(r'\bsrc="([^"]*)"', page))
    assert all(v.startswith("data:image/png;base64,") for v in re.findall(r'url\("([^"]*)"\)', page))
    assert all(v.startswith("#") for v in re.findall(r'\bhref="([^"]*)"', page))
    assert "default-src 'none'; img-src data:" in page  # the browser is told to fetch nothing else
    # one copy of each plot's bytes, however many cells show it
    uris = re.findall(r'url\("(data:[^"]*)"\)', page)
    assert len(uris) == len(set(uris)) == len(list((pack[0] / "plots").glob("*.png"))) == len(PLOTS)


def test_record_strings_are_escaped(pack):
    page = page_of(pack[0])
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page
    assert "&lt;b&gt;S1&lt;/b&gt;" in page and "<b>S1</b>" not in page
    assert "<script" not in page


def test_same_record_and_plots_same_bytes(pack, tmp_path):
    folder, record = pack
    first = page_of(folder)
    plots = load_plots(folder / "plots")
    in_memory, _ = synthetic_record()
    assert render_lane_html(record, plots) == first
    assert render_lane_html(in_memory, plots) == first  # before and after its JSON round trip
    shutil.copytree(folder, tmp_path / "again")
    (tmp_path / "again" / "report.html").unlink()
    write_lane_html(tmp_path / "again")
    assert (tmp_path / "again" / "report.html").read_bytes() == (folder / "report.html").read_bytes()


def test_every_number_comes_from_the_record(pack):
    _, record = pack
    edited = copy.deepcopy(record)
    edited["per_seed"]["7"]["gates"]["T-S4-01"]["values"]["s4_max_p_median"] = 0.93579
    edited["runtime"]["lane_wall_seconds"] = 123.456
    edited["verdict"] = "PASS_B"
    page = render_lane_html(edited, {})
    assert "0.9358" in panel(page, "T-S4-01", 7) and "123.5" in page
    assert '<span class="verdict-text">PASS_B</span>' in page and 'class="verdict b"' in page


# --------------------------------------------------------------------------------------------
# summary.md


def test_summary_names_verdict_failures_attribution_deltas_and_pack(pack):
    folder, record = pack
    text = (folder / "summary.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES
    assert record["verdict"] in lines[0] and "witness" in lines[0]
    assert "| T-S4-01 | 7 FAIL 0.9123 | structural: upstream topology |" in text
    assert "seed=7:T-STR-03" in text
    assert "**Against last good** (`evidence/witness/20261101T000000Z-last`): verdict PASS_B → FAIL_REALISM" in text
    assert "| 7 | T-S4-01 | `s4_max_p_median` | 0.8345 | 0.9123 | +0.0778 | B → FAIL |" in text
    assert "`group_mix_regularizer_v1/mode`: `off` → `soft_cap_blend`" in text
    assert record["evidence_pack"] in text
    hostile = copy.deepcopy(record)
    hostile["per_seed"]["7"]["gates"]["T-S4-01"]["attribution"] = "a | b " + HOSTILE
    text = render_summary(hostile)
    assert "<script" not in text and "| a \\| b &lt;script>alert" in text  # no raw HTML, no split cell


def test_summary_stays_within_its_lines_on_a_large_record(pack):
    _, record = pack
    big = copy.deepcopy(record)
    big["seeds"] = list(range(1, 9))
    one = big["per_seed"]["7"]
    big["per_seed"] = {}
    for s in big["seeds"]:
        gates = {f"T-Z-{i:02d}": {**one["gates"]["T-S4-01"], "gate": f"T-Z-{i:02d}"} for i in range(30)}
        big["per_seed"][str(s)] = {**one, "gates": gates}
    many = [{**_comparison("x")["gates"][0], "gate": f"T-Z-{i:02d}", "delta": i / 100} for i in range(40)]
    big["comparisons"]["last_good"]["gates"] = many
    big["comparisons"]["last_good"]["policy_differences"] *= 9
    big["reasons"]["realism_failed"] = [f"seed={s}:T-Z-{i:02d}" for s in big["seeds"] for i in range(30)]
    lines = render_summary(big).splitlines()
    assert len(lines) <= MAX_LINES
    assert any("more gate(s) below B+ in report.html" in line for line in lines)
    assert any("more moved gate metric(s) in report.html" in line for line in lines)


# --------------------------------------------------------------------------------------------
# real fast-lane records


def test_page_from_the_default_world_fast_lane(fast_lane, tmp_path):
    record = copy.deepcopy(fast_lane.record)
    record["comparisons"] = against_references({}, record)
    record["evidence_pack"] = str(tmp_path)
    write_pack(tmp_path, record, fast_lane)
    write_json(tmp_path / "certification_record.json", record)
    write_lane_html(tmp_path)
    page = page_of(tmp_path)
    stored = json.loads((tmp_path / "certification_record.json").read_text())
    assert f'<span class="verdict-text">{stored["verdict"]}</span>' in page
    for s, d in stored["per_seed"].items():
        for g, r in d["gates"].items():
            assert f'id="g-{g}-{s}"' in page
            assert all(fmt(v) in panel(page, g, s) for v in r["values"].values())
    for section in ("matrix", "veto", "attribution", "cross-seed", "cohorts", "structural", "comparisons", "cards", "runtime",
                    "plots"):
        assert f'<section id="{section}">' in page, section
    assert "no last good candidate in this runs root yet" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert len(re.findall(r'url\("data:image/png;base64,', page)) == len(list((tmp_path / "plots").glob("*.png")))
    assert render_lane_html(stored, load_plots(tmp_path / "plots")) == page


@pytest.fixture(scope="module")
def cli_lanes(tmp_path_factory):
    """Two small-world fast lanes through the command line, the trade-off and what-if switched on for
    the fast lane; both append their summary to one file. The second compares with the first."""
    from engine.cli import main

    tmp = tmp_path_factory.mktemp("cli_lanes")
    pol = policy_variant(tmp, {"world_policy_v1": world_size(150),
                               "certification_gates_v1": lambda gp: (gp["tradeoff"]["lanes"].append("fast"),
                                                                     gp["what_if"]["lanes"].append("fast"))})
    target = tmp / "step_summary.md"
    target.write_text("# CI job\n")
    args = ["certify", "--lane", "fast", "--policies", str(pol), "--runs-root", str(tmp / "runs"),
            "--evidence-root", str(tmp / "evidence"), "--quiet", "--summary-to", str(target)]
    packs = []
    for _ in range(2):
        assert main(args) == 0
        new = [p for p in sorted((tmp / "evidence" / "fast").iterdir()) if p not in packs]
        packs += new
    return packs, target


def test_cli_lanes_write_page_and_summary_and_append_to_the_summary_file(cli_lanes):
    packs, target = cli_lanes
    assert len(packs) == 2
    text = target.read_text()
    assert text.startswith("# CI job\n")  # appended, never overwritten
    for p in packs:
        summary = (p / "summary.md").read_text()
        assert summary in text and len(summary.splitlines()) <= MAX_LINES and str(p) in summary
    assert text.count("### ") == 2
    second = json.loads((packs[1] / "certification_record.json").read_text())
    assert "missing" not in second["comparisons"]["baseline"]
    assert f"**Against baseline** (`{packs[0]}`)" in (packs[1] / "summary.md").read_text()
    page = page_of(packs[1])
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert f'<span class="verdict-text">{second["verdict"]}</span>' in page
    assert fmt(second["runtime"]["lane_wall_seconds_with_evidence"]) in page  # rendered from the final record
    # the gate suite read the record through its pipe: every gate test ran, none errored
    junit = (packs[1] / "junit.xml").read_text()
    assert 'errors="0"' in junit and junit.count("<testcase") > len(second["per_seed"]["42"]["gates"])
    assert "test_gate[seed=42-T-S1-01]" in junit
    assert render_lane_html(second, load_plots(packs[1] / "plots")) == page


# --------------------------------------------------------------------------------------------
# the sweep page


def test_sweep_page_ranks_points_shows_gate_tables_and_plots(tmp_path):
    from certification.html import write_sweep_html
    from certification.sweep_report import write_plots

    knob = "group_mix_regularizer_v1:/power/tau"
    points = []
    for name, tau, value, band in (("baseline", None, 0.88, "FAIL"), ("p001", 0.8, 0.81, "B"), ("p002", 0.6, 0.75, "B+")):
        points.append({"name": name, "settings": {} if tau is None else {knob: tau}, "verdict": "FAIL_REALISM",
                       "structural_failures": 1 if name == "p002" else 0, "seconds": 1.25,
                       "per_seed": {"42": {"T-S4-01": {"band": band, "values": {"s4_max_p_median": value},
                                                       "attribution": HOSTILE if name == "p001" else None}}},
                       "stages": {"42": {"S4": "ran", "S1": "reused"}}})
    record = {"lane": "fast", "knobs": [{"label": knob, "values": [0.8, 0.6]}], "replay": False, "points": points,
              "ranking": ["p001", "baseline", "p002"], "best_honest": "p001",
              "thresholds": {"T-S4-01": POLICY["realism_gates"]["T-S4-01"]}, "wall_seconds": 9.5}
    write_json(tmp_path / "sweep_record.json", record)
    assert write_plots(tmp_path / "plots", record) == ["T-S4-01_s4_max_p_median.png"]
    page = write_sweep_html(tmp_path).read_text()
    assert '<span class="verdict-text">Best honest candidate: p001</span>' in page
    ranking = page[page.index('<section id="ranking">'):page.index('<section id="gates">')]
    assert ranking.index(">p001<") < ranking.index(">baseline<") < ranking.index(">p002<")
    assert "B 0.81" in page and "B+ 0.75" in page and "FAIL 0.88" in page
    assert "&lt;script&gt;" in page and "<script" not in page and "https://" not in page
    assert len(re.findall(r'url\("data:image/png;base64,', page)) == 1
    assert write_sweep_html(tmp_path).read_text() == page
