"""`seg2b compare` and `seg2b sweep`: what they report, and the bad inputs they refuse cleanly."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certification.compare import compare_records, load_pack, policy_differences, render_markdown
from certification.sweep import parse_set, plan_grid, run_sweep
from engine.errors import EngineError
from engine.policies import DEFAULT_POLICY_DIR
from tests.helpers import policy_variant, world_size

ROOT = Path(__file__).resolve().parent.parent


def _record(lane="fast", seeds=(42,), value=0.75, band="B+", cap=0.8, s4_digest="aa", status="ran"):
    gate = {"band": band, "values": {"s4_max_p_median": value}, "attribution": None}
    return {
        "lane": lane, "verdict": "PASS_B", "seeds": list(seeds),
        "per_seed": {str(s): {"gates": {"T-S4-01": gate},
                              "upstream_identity": "11" * 32,
                              "stages": {"S3": {"status": "reused", "outputs": {"s3_day_effects": "33"}},
                                         "S4": {"status": status, "outputs": {"s4_group_weights": s4_digest}}}}
                     for s in seeds},
        "policy_documents": {"group_mix_regularizer_v1": {"soft_cap_blend": {"cap": cap, "knee": 0.55}}},
    }


def test_compare_reports_deltas_bands_policy_pointers_and_stages():
    cmp = compare_records(_record(), _record(value=0.80, band="B", cap=0.85, s4_digest="bb"))
    (row,) = cmp["gates"]
    assert row["delta"] == pytest.approx(0.05) and row["band_change"] == -1
    assert cmp["policy_differences"] == [{"policy": "group_mix_regularizer_v1", "pointer": "/soft_cap_blend/cap",
                                          "old": 0.8, "new": 0.85}]
    assert cmp["stages"]["42"] == {"changed": ["S4"], "reused": ["S3"], "ran": ["S4"]}
    text = "\n".join(render_markdown(cmp))
    assert "`/soft_cap_blend/cap` | 0.8 | 0.85" in text and "B+ -> B" in text


def test_compare_says_when_lanes_or_seeds_differ_and_compares_what_they_share():
    cmp = compare_records(_record(lane="fast", seeds=(42,)), _record(lane="witness", seeds=(42, 7)))
    assert any("different lanes" in n for n in cmp["notes"])
    assert any("different seeds" in n and "['42']" in n for n in cmp["notes"])
    assert [g["seed"] for g in cmp["gates"]] == ["42"]


def test_changed_only_hides_gates_that_did_not_move():
    text = "\n".join(render_markdown(compare_records(_record(), _record()), changed_only=True))
    assert "No gate value or band differs." in text and "None: the two candidates ran the same policies." in text


json_leaf = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3), st.booleans())
json_doc = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                          st.dictionaries(st.text(min_size=1, max_size=3), kids, max_size=3)),
                        max_leaves=12)


@given(st.dictionaries(st.text(min_size=1, max_size=3), json_doc, min_size=1, max_size=3))
def test_policy_differences_of_a_document_with_itself_are_empty(doc):
    assert policy_differences({"p": doc}, {"p": copy.deepcopy(doc)}) == []


@given(st.dictionaries(st.sampled_from(["a", "b/c", "d~e"]), st.integers(0, 9), min_size=1), st.integers(10, 20))
def test_policy_differences_name_exactly_the_leaf_that_moved(doc, new):
    key = sorted(doc)[0]
    edited = {**doc, key: new}
    (diff,) = policy_differences({"p": doc}, {"p": edited})
    assert diff["pointer"] == "/" + key.replace("~", "~0").replace("/", "~1")
    assert (diff["old"], diff["new"]) == (doc[key], new)


@pytest.mark.parametrize("make, rule", [
    (lambda p: p / "missing", "not a folder"),
    (lambda p: p, "no certification_record.json"),
    (lambda p: (p / "certification_record.json").write_text("{oops") and p, "malformed JSON"),
    (lambda p: (p / "certification_record.json").write_text("[]") and p, "not a certification record"),
])
def test_load_pack_refuses_what_is_not_a_pack(tmp_path, make, rule):
    with pytest.raises(EngineError, match=rule):
        load_pack(make(tmp_path))


def test_cli_compare_of_a_non_pack_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "engine.cli", "compare", str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "PACK_A" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("spec, rule", [
    ("nope:/x=1", "unknown policy id"),
    ("certification_gates_v1:/lanes=1", "unknown policy id"),
    ("group_mix_regularizer_v1:/soft_cap_blend/nope=1", "names nothing"),
    ("group_mix_regularizer_v1:soft_cap_blend/cap=1", "must start with '/'"),
    ("group_mix_regularizer_v1:/soft_cap_blend/cap=", "empty value list"),
    ("group_mix_regularizer_v1:/soft_cap_blend/cap=0.8,0.8", "listed twice"),
    ("group_mix_regularizer_v1/soft_cap_blend/cap=0.8", "expected POLICY_ID"),
])
def test_parse_set_refuses_bad_knobs(spec, rule):
    with pytest.raises(EngineError, match=rule):
        parse_set(spec, DEFAULT_POLICY_DIR)


def test_a_value_the_schema_rejects_stops_the_sweep_before_anything_is_written(tmp_path):
    with pytest.raises(EngineError, match="schema rule 'maximum'"):
        run_sweep("fast", ["group_mix_regularizer_v1:/soft_cap_blend/cap=0.9,7"], tmp_path / "runs",
                  evidence_root=tmp_path / "evidence", quiet=True)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "evidence").exists()


def test_grid_is_the_full_product_and_today_values_are_the_baseline():
    knobs = [parse_set("group_mix_regularizer_v1:/soft_cap_blend/cap=0.8,0.9", DEFAULT_POLICY_DIR),
             parse_set("group_mix_regularizer_v1:/mode=soft_cap_blend,off", DEFAULT_POLICY_DIR)]
    grid = plan_grid(knobs, DEFAULT_POLICY_DIR)
    assert len(grid) == 4
    today = [settings for settings, files in grid if not files]
    assert today == [{"group_mix_regularizer_v1:/soft_cap_blend/cap": 0.8, "group_mix_regularizer_v1:/mode": "off"}]


def test_sweep_on_a_small_world_reuses_upstream_states_and_ranks_points(tmp_path):
    pol = policy_variant(tmp_path, {"world_policy_v1": world_size(120)})
    pack = run_sweep("fast", ["group_mix_regularizer_v1:/soft_cap_blend/cap=0.8,0.9",
                              "group_mix_regularizer_v1:/mode=soft_cap_blend,off"],
                     tmp_path / "runs", pol, tmp_path / "evidence", quiet=True)
    rec = json.loads((pack / "sweep_record.json").read_text())
    names = [p["name"] for p in rec["points"]]
    assert names[0] == "baseline" and len(names) == 4  # 4 grid points, one of them today's policies
    assert sorted(rec["ranking"]) == sorted(names) and rec["best_honest"] in names
    for point in rec["points"][1:]:
        statuses = point["stages"]["42"]
        assert {n for n, s in statuses.items() if s == "reused"} >= {"world", "roster", "S1", "S2", "S3", "S6"}
    assert (pack / "sweep_report.md").read_text().count("### T-S4-01") == 1
    assert (pack / "plots" / "T-S4-01_s4_max_p_median.png").stat().st_size > 0
