"""The declared state protocol (engine/states/spec.py, engine/stages.py): the pipeline knows no
stage by name, every spec declares only contract datasets and extras it can be given, and every
extra resolves and fits the state's signature, on the built-in path and on both alternatives."""

from __future__ import annotations

import ast
import inspect
import shutil
from pathlib import Path

import pytest

from engine import contracts
from engine.pipeline import EXTRAS, Pipeline
from engine.stages import ALTERNATIVES, STAGE_NAMES, STAGES, stages_for
from engine.states import arrival_roster, s3_day_effects, upstream_import
from engine.states.spec import EXTRA_NAMES, PART, REPORT, StateOutputs, StateSpec
from tests.helpers import small_policies

PIPELINE = Path(__file__).resolve().parents[1] / "engine" / "pipeline.py"
ALL_SPECS = STAGES + ALTERNATIVES


def test_pipeline_names_no_stage():
    tree = ast.parse(PIPELINE.read_text())
    named = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in STAGE_NAMES})
    assert named == [], f"engine/pipeline.py spells stage names {named}: declare the behaviour in the spec"
    # Nor does it tell states apart by module identity (`stage.module is s8_bundle`).
    state_modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                     and n.module == "states" for a in n.names}
    compared = {side.id for n in ast.walk(tree) if isinstance(n, ast.Compare)
                for side in (n.left, *n.comparators) if isinstance(side, ast.Name)}
    assert not compared & state_modules


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: f"{s.name}:{s.module.__name__.rsplit('.', 1)[1]}")
def test_a_spec_declares_contract_datasets_and_known_extras(spec):
    for d in (*spec.reads, *spec.writes, *spec.seals, *([spec.bundle] if spec.bundle else [])):
        assert d in contracts.DATASETS, f"{spec.name}: {d} is not a contract dataset"
    assert set(spec.extras) <= set(EXTRAS)
    # What the state's `run` takes beyond (inputs, policies, ctx) is exactly what the spec declares.
    params = inspect.signature(spec.run).parameters.values()
    assert {p.name for p in params if p.kind is p.KEYWORD_ONLY} == set(spec.extras)
    if "bundle_path" in spec.extras:
        assert spec.bundle and contracts.get(spec.bundle).kind == "folder"
    if "assets" in spec.extras:
        assert spec.seals


def test_every_extra_has_a_provider_and_every_provider_a_user():
    assert set(EXTRAS) == set(EXTRA_NAMES)
    assert {e for s in ALL_SPECS for e in s.extras} == set(EXTRA_NAMES)


def test_the_module_declarations_are_the_specs():
    for spec in ALL_SPECS:
        assert spec.writes == tuple(spec.module.WRITES) and spec.reads == tuple(spec.module.READS)
    assert [s.name for s in STAGES] == list(STAGE_NAMES)
    assert [s.name for s in stages_for(set())] == list(STAGE_NAMES)


def test_alternatives_replace_their_stage_when_the_run_supplies_their_extras():
    assert stages_for(set()) == STAGES
    user = stages_for({"user_roster"})
    roster = user[STAGE_NAMES.index("roster")]
    assert roster.run is arrival_roster.run_user and not roster.sharded
    assert [s for s in user if s is not roster] == [s for s in STAGES if s.name != "roster"]
    both = stages_for({"user_roster", "upstream_files"})
    assert both[0].module is upstream_import and both[1] is roster and both[2:] == STAGES[2:]


def test_a_spec_refuses_what_executors_could_not_honour():
    with pytest.raises(ValueError, match="no provider"):
        StateSpec.of("S3", s3_day_effects, extras=("nonsense",))
    with pytest.raises(ValueError, match="shard hooks take no extras"):
        StateSpec.of("S3", s3_day_effects, extras=("assets",))
    with pytest.raises(ValueError, match="module's own"):
        StateSpec.of("S3", s3_day_effects, finish=lambda *a: {})


def test_state_outputs_take_the_executors_keys_apart():
    out = StateOutputs.of({"s3_day_effects": "frame", REPORT: {"rows": 3}, PART: {"p": 1}})
    assert (out.tables, out.report, out.part) == ({"s3_day_effects": "frame"}, {"rows": 3}, {"p": 1})
    assert StateOutputs.of({"x": 1}).report == {}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocol")
    result = Pipeline(11, tmp / "runs", small_policies(tmp)).run()
    return tmp, result


def _resolved(pipe: Pipeline) -> dict[str, dict]:
    """Every stage's extras as the pipeline would pass them, checked against the state's signature."""
    out = {}
    for spec in pipe.stages:
        extras = {name: EXTRAS[name].value(pipe, spec) for name in spec.extras}
        inspect.signature(spec.run).bind({}, {}, pipe.ctx, **extras)
        assert all(v is not None for v in extras.values()), spec.name
        out[spec.name] = extras
    return out


def test_the_pipeline_resolves_every_declared_extra(small_run):
    tmp, result = small_run
    extras = _resolved(Pipeline(11, result.runs_root, result.policy_dir))
    assert [a["asset_id"] for a in extras["S0"]["assets"]] == list(STAGES[2].seals)
    assert extras["S0"]["bundle_path"] == result.path("validation_bundle_1B").relative_to(result.runs_root).as_posix()
    published = {o["dataset_id"] for o in extras["S8"]["published"]}
    assert "s5_arrival_roster" in published and "validation_bundle_2B" not in published


def test_the_alternatives_extras_resolve_too(small_run, tmp_path):
    _, result = small_run
    up = tmp_path / "upstream"
    (up / "validation").mkdir(parents=True)
    for t in upstream_import.TABLES:
        shutil.copy(result.path(t), up / f"{t}.parquet")
    shutil.copytree(result.path("validation_bundle_1B"), up / "validation", dirs_exist_ok=True)
    roster = tmp_path / "roster.parquet"
    shutil.copy(result.path("s5_arrival_roster"), roster)
    pipe = Pipeline(11, tmp_path / "runs", result.policy_dir, upstream=up, roster_file=roster)
    done = pipe.run()  # S0's and S8's extras need the outputs of the stages before them
    assert done.load("s5_arrival_roster").equals(result.load("s5_arrival_roster"))
    assert done.load("roster_card")["source"] == "user"
    extras = _resolved(pipe)
    assert extras["roster"]["user_roster"] == roster
    assert set(extras["world"]["upstream_files"]) >= {f"{t}.parquet" for t in upstream_import.TABLES}
