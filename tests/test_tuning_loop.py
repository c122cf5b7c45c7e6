"""The tuning loop's laws: common random numbers, reuse across manifests, code versions.

* A policy edit changes only what its consumers compute: every stage that neither reads the edited
  policy nor reads what a consumer wrote is reused from the parent run, byte for byte (the RNG keys
  hang off the upstream identity, never policy bytes).
* Reused outputs are the same bytes, they verify (S8 bundle, contract check) under the new manifest.
* A stage's code version covers every engine module it runs, found from the import statements.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import contracts
from engine import receipts as RC
from engine.bundle import verify_bundle
from engine.datasets import check_table, digest
from engine.pipeline import ENGINE_POLICIES, STAGES, Pipeline, partition_of
from tests.helpers import policy_variant, private_root, world_size

SMALL_MERCHANTS = 150
SEED = 42


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A small world run once, world..S8: the parent every edit below starts from (each in its own
    copy of the parent's root, so no edit sees another's manifests)."""
    tmp = tmp_path_factory.mktemp("tuning")
    pol = policy_variant(tmp, {"world_policy_v1": world_size(SMALL_MERCHANTS)})
    root = tmp / "runs"
    result = Pipeline(SEED, root, pol).run()
    return tmp, pol, root, result


def _affected(policy: str) -> set[str]:
    """Stages that must rerun after an edit of `policy`: its consumers, S0 (it seals every policy)
    and every stage that reads what those wrote, transitively."""
    hit = {s.name for s in STAGES if policy in s.module.POLICIES and s.name != "world"} | {"S0"}
    if policy == "world_policy_v1":
        hit.add("world")
    changed = True
    while changed:
        written = {d for s in STAGES if s.name in hit for d in s.writes}
        more = {s.name for s in STAGES if s.name not in hit and set(s.reads) & written}
        changed = bool(more)
        hit |= more
    return hit | {"S7", "S8"}  # the audit reads every policy; the bundle seals the receipt


def _outputs(result) -> dict[str, str]:
    return {d: digest(result.path(d)) for s in STAGES for d in s.writes if result.path(d).exists()}


def _run_edit(parent, tmp_path, policy: str, fn):
    """The parent's policies with `policy` edited by `fn`, run in a private copy of the parent's root."""
    _, pol, root, base = parent
    edited = policy_variant(tmp_path, {policy: fn}, base=pol)
    return base, Pipeline(SEED, private_root(root, tmp_path), edited).run()


def _bump_version(data):
    major, minor, patch = data["version_tag"].split(".")
    data["version_tag"] = f"{major}.{minor}.{int(patch) + 1}"


@pytest.mark.parametrize("policy", ENGINE_POLICIES)
def test_byte_edit_reuses_everything_upstream_of_the_first_consumer(parent, tmp_path, policy):
    base, run = _run_edit(parent, tmp_path, policy, _bump_version)
    assert run.ctx.mf != base.ctx.mf, "a policy edit is a new run identity"
    status = {r.name: r.status for r in run.stages}
    affected = _affected(policy)
    reused = {n for n, st in status.items() if st == "reused"}
    assert set(status) - affected <= reused, status
    # the consumers and the seal rerun; what they feed reruns too unless their bytes did not change
    assert all(status[s.name] == "ran" for s in STAGES if policy in s.module.POLICIES), status
    before, after = _outputs(base), _outputs(run)
    for stage in STAGES:
        if stage.name not in affected:
            for d in stage.writes:
                if d in before:
                    assert after[d] == before[d], (policy, d)


SEMANTIC = {
    "roster_policy_v1": lambda d: d["rate"].__setitem__("rate_scale", 1.1),
    "day_effect_policy_v1": lambda d: d["sigma_gamma_policy_v2"]["sigma_base_by_segment"].__setitem__("grocery", 0.09),
    "group_mix_regularizer_v1": lambda d: d.update(mode="power"),
    "virtual_edge_policy_v1": lambda d: d["default_edges"][0].__setitem__("weight", d["default_edges"][0]["weight"] + 5),
    "alias_layout_policy_v1": lambda d: d["profile_mixture_v2"]["mixture_weights"]["small"].update(
        hub_spoke=0.55, heavy_tail=0.2),
}
CONSUMER_OUTPUT = {
    "roster_policy_v1": "s5_arrival_roster",
    "day_effect_policy_v1": "s3_day_effects",
    "group_mix_regularizer_v1": "s4_group_weights",
    "virtual_edge_policy_v1": "rng_event_cdn_edge_pick",
    "alias_layout_policy_v1": "s1_site_weights",
}


@pytest.mark.parametrize("policy", sorted(SEMANTIC))
def test_semantic_edit_changes_only_its_consumers_and_what_they_feed(parent, tmp_path, policy):
    base, run = _run_edit(parent, tmp_path, policy, SEMANTIC[policy])
    status = {r.name: r.status for r in run.stages}
    affected = _affected(policy)
    assert all(status[n] == "reused" for n in set(status) - affected), status
    before, after = _outputs(base), _outputs(run)
    assert after[CONSUMER_OUTPUT[policy]] != before[CONSUMER_OUTPUT[policy]], "the knob must reach its consumer"
    untouched = [d for s in STAGES if s.name not in affected for d in s.writes if d in before]
    assert untouched and all(after[d] == before[d] for d in untouched)


def test_reused_outputs_are_the_same_bytes_and_verify(parent, tmp_path):
    base, run = _run_edit(parent, tmp_path, "group_mix_regularizer_v1", lambda d: d["soft_cap_blend"].__setitem__("cap", 0.82))
    reused = [r for r in run.stages if r.status == "reused"]
    assert {r.name for r in reused} >= {"world", "roster", "S1", "S2", "S3", "S6"}
    for rec in reused:
        for d in rec.published:
            assert digest(run.path(d)) == digest(base.path(d))
            if contracts.get(d).kind == "parquet":
                check_table(d, run.path(d), partition_of(d, run.ctx))  # the stamp names no manifest
    verify_bundle(run.path("validation_bundle_2B"))
    again = Pipeline(SEED, run.runs_root, run.policy_dir).run()
    assert {r.status for r in again.stages} == {"skipped"}


def test_reuse_rechecks_the_source_digest(parent, tmp_path):
    """A source whose bytes no longer match its receipt is never reused: the stage runs instead."""
    _, pol, root, _ = parent
    work = private_root(root, tmp_path)
    victims = sorted((work / "data/layer1/2B/s1_site_weights").rglob("*.parquet"))
    for victim in victims:  # every published copy, under every manifest of the root
        data = victim.read_bytes()
        victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    edited = policy_variant(tmp_path, {"group_mix_regularizer_v1": lambda d: d["soft_cap_blend"].__setitem__("cap", 0.83)},
                            folder="pol", base=pol)
    run = Pipeline(SEED, work, edited).run(until="S1")
    assert {r.name: r.status for r in run.stages}["S1"] == "ran"


def test_upstream_identity_keys_the_draws_not_the_policies(parent, tmp_path):
    _, _, _, base = parent
    _, run = _run_edit(parent, tmp_path, "group_mix_regularizer_v1", _bump_version)
    assert run.ctx.upstream_identity == base.ctx.upstream_identity != ""
    assert run.ctx.mf != base.ctx.mf


# --------------------------------------------------------------------------- code versions


def _stage(name):
    return next(s for s in STAGES if s.name == name)


def _rel(paths):
    return {p.relative_to(RC.ENGINE_DIR).as_posix() for p in paths}


def test_code_version_follows_imports_transitively():
    s6 = _rel(RC.code_files(_stage("S6").module, *RC.ENCODERS))
    assert {"states/s6_edge_router.py", "states/s5_router.py", "publish.py", "shards.py", "datasets.py"} <= s6
    s1 = _rel(RC.code_files(_stage("S1").module, *RC.ENCODERS))
    assert "states/s5_router.py" not in s1 and "world/build.py" not in s1
    assert {"world/__init__.py", "world/build.py", "world/card.py", "world/sampling.py"} <= _rel(
        RC.code_files(_stage("world").module))


def test_code_files_cover_what_python_really_imports(tmp_path):
    """The static closure holds every engine module the interpreter loads for a stage module."""
    import subprocess
    import sys

    for stage in STAGES:
        out = subprocess.run([sys.executable, "-c", f"import sys, {stage.module.__name__}; "
                              "print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
                              "if (n == 'engine' or n.startswith('engine.')) and getattr(m, '__file__', None)))"],
                             capture_output=True, text=True, check=True, cwd=RC.ENGINE_DIR.parent)
        loaded = {Path(line).resolve() for line in out.stdout.split()}
        assert loaded <= set(RC.code_files(stage.module)), (stage.name, loaded - set(RC.code_files(stage.module)))


@pytest.mark.parametrize("edited", ["publish.py", "shards.py", "states/s5_router.py", "world/sampling.py", "rng.py"])
def test_editing_a_file_reruns_exactly_the_stages_that_run_it(parent, tmp_path, monkeypatch, edited):
    _, pol, root, base = parent
    work = private_root(root, tmp_path)
    engine_copy = tmp_path / "engine"
    shutil.copytree(RC.ENGINE_DIR, engine_copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s.name: RC.code_version(s.module) for s in STAGES}
    monkeypatch.setattr(RC, "ENGINE_DIR", engine_copy)
    assert {s.name: RC.code_version(s.module) for s in STAGES} == before, "a copy of the same code has the same versions"
    target = engine_copy / edited
    target.write_bytes(target.read_bytes() + b"\n# an edit that changes no behaviour\n")
    runs_it = {s.name for s in STAGES if target in RC.code_files(s.module, *RC.ENCODERS)}
    assert runs_it, edited
    rerun = Pipeline(SEED, work, pol).run()
    status = {r.name: r.status for r in rerun.stages}
    assert {n for n, st in status.items() if st == "ran"} == runs_it
    assert _outputs(rerun) == _outputs(base), "an edit that changes no behaviour changes no byte"
