"""Bad inputs are refused cleanly: exit 2, one line naming file / field / rule, no traceback, and
not one byte of the runs root (or of anything next to it) changed.

Each kind starts from a copy of a root where the small world's seed 42 ran completely, so a
rejection that withdrew, replaced or added anything would show in the tree's digests. The kinds
cover the command line, policies, the world policy, a user upstream and a user roster.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pyarrow.parquet as pq
import pytest

from engine import contracts
from engine.bundle import make_bundle
from engine.cli import main
from engine.identity import canonical_json, sha256_hex
from engine.pipeline import Pipeline, dataset_path
from tests.helpers import small_policies, tree_state

SEED = 42
TABLES = ("merchants", "site_locations", "site_timezones")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_inputs")
    pdir = small_policies(base)
    root = base / "runs"
    assert main(["run", "--seed", str(SEED), "--runs-root", str(root), "--policies", str(pdir), "--quiet"]) == 0
    ctx = Pipeline(SEED, root, pdir).ctx
    upstream = base / "upstream"
    upstream.mkdir()
    for name in TABLES:
        shutil.copy(dataset_path(name, root, ctx), upstream / f"{name}.parquet")
    shutil.copytree(dataset_path("validation_bundle_1B", root, ctx), upstream / "validation")
    roster = base / "roster.parquet"
    shutil.copy(dataset_path("s5_arrival_roster", root, ctx), roster)
    return SimpleNamespace(base=base, policies=pdir, root=root, ctx=ctx, upstream=upstream, roster=roster)


# ---------------------------------------------------------------------------------------------
# helpers that make a bad input next to the runs root


def run_args(root: Path, *extra: str, seed: str = str(SEED), policies: Path | None = None) -> list[str]:
    args = ["run", "--seed", seed, "--runs-root", str(root), "--quiet", *extra]
    return args + ["--policies", str(policies)] if policies else args


def edited_policies(w, tmp: Path, name: str, text_edit=None, data_edit=None) -> Path:
    """A copy of the small world's policy folder with one policy file edited (as text or as data)."""
    pdir = tmp / "pol"
    shutil.copytree(w.policies, pdir)
    path = pdir / f"{name}.json"
    if data_edit is not None:
        data = json.loads(path.read_text())
        data_edit(data)
        path.write_text(json.dumps(data, indent=1))
    if text_edit is not None:
        path.write_bytes(text_edit(path.read_bytes()))
    return pdir


def policy_case(name, expect, text_edit=None, data_edit=None):
    def case(w, tmp, root):
        return run_args(root, policies=edited_policies(w, tmp, name, text_edit, data_edit)), expect
    return case


def world_policy_file(w, tmp: Path, text_edit=None, data_edit=None) -> Path:
    path = tmp / "my_world.json"
    raw = (w.policies / "world_policy_v1.json").read_bytes()
    if data_edit is not None:
        data = json.loads(raw)
        data_edit(data)
        raw = json.dumps(data, indent=1).encode()
    path.write_bytes(text_edit(raw) if text_edit else raw)
    return path


def world_case(expect, text_edit=None, data_edit=None):
    def case(w, tmp, root):
        wp = world_policy_file(w, tmp, text_edit, data_edit)
        return run_args(root, "--world-policy", str(wp), policies=w.policies), expect
    return case


def sub(pattern: bytes, repl: bytes, count: int = 1):
    return lambda raw: re.sub(pattern, repl, raw, count=count)


def parquet_bytes(df: pl.DataFrame, dataset_id: str | None = None) -> bytes:
    table = contracts.conform(dataset_id, df) if dataset_id else df.to_arrow()
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def upstream_copy(w, tmp: Path, tables: dict | None = None, reseal: bool = True, bundle_edit=None) -> Path:
    """A copy of the exported upstream with tables replaced (bytes) and, by default, its 1B bundle
    resealed over the new digests, so the gate passes and the tables themselves are judged."""
    up = tmp / "upstream"
    shutil.copytree(w.upstream, up)
    for name, data in (tables or {}).items():
        (up / f"{name}.parquet").write_bytes(data)
    if tables and reseal:
        manifest = json.loads((up / "validation" / "upstream_manifest.json").read_bytes())
        for name in TABLES:
            manifest["datasets"][name]["sha256_hex"] = sha256_hex((up / f"{name}.parquet").read_bytes())
        shutil.rmtree(up / "validation")
        (up / "validation").mkdir()
        for rel, data in make_bundle({"upstream_manifest.json": canonical_json(manifest)}).items():
            (up / "validation" / rel).write_bytes(data)
    if bundle_edit:
        bundle_edit(up / "validation")
    return up


def table(w, name: str) -> pl.DataFrame:
    return pl.read_parquet(w.upstream / f"{name}.parquet")


def upstream_case(expect, edit=None, reseal=True, bundle_edit=None):
    def case(w, tmp, root):
        up = upstream_copy(w, tmp, edit(w) if edit else None, reseal, bundle_edit)
        return run_args(root, "--upstream", str(up), policies=w.policies), expect
    return case


def roster_case(expect, edit=None, raw=None):
    def case(w, tmp, root):
        path = tmp / "my_roster.parquet"
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_bytes(edit(pl.read_parquet(w.roster)))
        return run_args(root, "--roster", str(path), policies=w.policies), expect
    return case


def with_row(df: pl.DataFrame, row: int, **values) -> pl.DataFrame:
    idx = pl.int_range(pl.len())
    return df.with_columns(**{c: pl.when(idx == row).then(pl.lit(v, dtype=df.schema[c])).otherwise(pl.col(c))
                              for c, v in values.items()})


def row_edit(name: str, row: int, **values):
    """An upstream edit: table `name` with one row's values changed (`with_row`), as its Parquet bytes."""
    return lambda w: {name: parquet_bytes(with_row(table(w, name), row, **values), name)}


def plant_link(at: Path, target: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    os.symlink(target, at)


def _deep(raw: bytes) -> bytes:
    return raw.replace(b'"version_tag"', b'"deep": ' + b"[" * 200_000 + b"]" * 200_000 + b', "version_tag"', 1)


def _schemas_loosened(w, tmp, root):
    pdir = edited_policies(w, tmp, "group_mix_regularizer_v1", data_edit=lambda d: d.update(surprise=1))
    (pdir / "schemas").mkdir(exist_ok=True)
    (pdir / "schemas" / "group_mix_regularizer_v1.schema.json").write_text("{}")
    return run_args(root, policies=pdir), r"group_mix_regularizer_v1\.json: \(document root\): schema rule 'additionalProperties'"


def _policy_is_folder(w, tmp, root):
    pdir = edited_policies(w, tmp, "route_rng_policy_v1")
    (pdir / "route_rng_policy_v1.json").unlink()
    (pdir / "route_rng_policy_v1.json").mkdir()
    return run_args(root, policies=pdir), r"route_rng_policy_v1\.json: \(file\): policy route_rng_policy_v1 is not a regular file"


def _policy_missing(w, tmp, root):
    pdir = edited_policies(w, tmp, "route_rng_policy_v1")
    (pdir / "virtual_edge_policy_v1.json").unlink()
    return run_args(root, policies=pdir), r"virtual_edge_policy_v1\.json: \(file\): policy virtual_edge_policy_v1 not found"


def _policy_link(w, tmp, root):
    pdir = edited_policies(w, tmp, "route_rng_policy_v1")
    (tmp / "elsewhere.json").write_bytes((pdir / "route_rng_policy_v1.json").read_bytes())
    (pdir / "route_rng_policy_v1.json").unlink()
    os.symlink(tmp / "elsewhere.json", pdir / "route_rng_policy_v1.json")
    return run_args(root, policies=pdir), r"route_rng_policy_v1\.json: \(file\): .*symbolic link"


def _root_is_file(w, tmp, root):
    f = tmp / "a_file"
    f.write_bytes(b"not a folder")
    return run_args(f, policies=w.policies), r"a_file: \(runs root\): is a file"


def _root_parent_is_file(w, tmp, root):
    f = tmp / "a_file"
    f.write_bytes(b"not a folder")
    return run_args(f / "runs", policies=w.policies), r"a_file: \(runs root\): a parent of the runs root is a file"


def _link_leaves_root(w, tmp, root):
    # seed 43 has not run: its world partition is a link to a folder outside the root
    plant_link(root / "data/layer1/1A/merchants/seed=43", tmp / "outside")
    return run_args(root, seed="43", policies=w.policies), r"seed=43: \(link\): symbolic link inside the runs root"


def _link_replaces_published(w, tmp, root):
    target = dataset_path("s7_audit_report", root, w.ctx).parent
    shutil.move(str(target), str(tmp / "moved"))
    os.symlink(tmp / "moved", target)
    return run_args(root, policies=w.policies), r"manifest_fingerprint=[0-9a-f]{64}: \(link\): symbolic link inside the runs root"


def _link_tmp(w, tmp, root):
    plant_link(root / "tmp", tmp / "outside_tmp")
    return run_args(root, policies=w.policies), r"tmp: \(link\): symbolic link inside the runs root"


def _upstream_link(name):
    def edit_bundle(vdir):
        (vdir.parent / "real").mkdir()
        shutil.move(str(vdir / name), str(vdir.parent / "real" / name))
        os.symlink(vdir.parent / "real" / name, vdir / name)
    return upstream_case(r"upstream_manifest\.json: \(file\): symbolic link in an input folder", bundle_edit=edit_bundle)


def _upstream_table_link(w, tmp, root):
    up = upstream_copy(w, tmp)
    shutil.move(str(up / "merchants.parquet"), str(tmp / "m.parquet"))
    os.symlink(tmp / "m.parquet", up / "merchants.parquet")
    expect = r"merchants\.parquet: \(file\): symbolic link in an input folder"
    return run_args(root, "--upstream", str(up), policies=w.policies), expect


def _upstream_same_flag_changed_table(w):
    df = table(w, "site_locations")
    return {"site_locations": parquet_bytes(with_row(df, 0, lat_deg=df["lat_deg"][0] + 0.5), "site_locations")}


def _world_policy_missing(w, tmp, root):
    expect = r"nope\.json: \(file\): policy world_policy_v1 not found"
    return run_args(root, "--world-policy", str(tmp / "nope.json"), policies=w.policies), expect


def _world_policy_folder(w, tmp, root):
    (tmp / "wp").mkdir()
    expect = r"wp: \(file\): policy world_policy_v1 is not a regular file"
    return run_args(root, "--world-policy", str(tmp / "wp"), policies=w.policies), expect


def _roster_missing(w, tmp, root):
    expect = r"nope\.parquet: \(file\): roster file not found"
    return run_args(root, "--roster", str(tmp / "nope.parquet"), policies=w.policies), expect


def _roster_folder(w, tmp, root):
    (tmp / "r.parquet").mkdir()
    expect = r"r\.parquet: \(file\): roster is not a regular file"
    return run_args(root, "--roster", str(tmp / "r.parquet"), policies=w.policies), expect


def _upstream_missing(w, tmp, root):
    expect = r"nope: \(folder\): user-supplied upstream folder missing"
    return run_args(root, "--upstream", str(tmp / "nope"), policies=w.policies), expect


def _upstream_file(w, tmp, root):
    (tmp / "up").write_bytes(b"x")
    return run_args(root, "--upstream", str(tmp / "up"), policies=w.policies), r"up: \(folder\): not a folder"


def _policies_missing(w, tmp, root):
    expect = r"nope/alias_layout_policy_v1\.json: \(file\): policy alias_layout_policy_v1 not found"
    return run_args(root, policies=tmp / "nope"), expect


def _policies_file(w, tmp, root):
    (tmp / "pf").write_bytes(b"x")
    return run_args(root, policies=tmp / "pf"), r"pf: \(folder\): the policy folder is a file"


def _cli(*args, expect):
    def case(w, tmp, root):
        return [a.replace("{root}", str(root)).replace("{pol}", str(w.policies)) for a in args], expect
    return case


def _day_range(start, end):
    return lambda d: d.update(day_range={"start": start, "end": end})


def _set(path: str, value):
    def fn(d):
        node, keys = d, path.split("/")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[keys[-1]] = value
    return fn


def _s6_dup_edge(d):
    d["default_edges"].append(copy.deepcopy(d["default_edges"][0]))


def _s6_dup_override(d):
    edge = copy.deepcopy(d["default_edges"][0])
    d["merchant_overrides"] = [{"merchant_id": 7, "edges": [edge]}, {"merchant_id": 7, "edges": [edge]}]


def _dup_class_profile(d):
    d["class_profiles"].append(copy.deepcopy(d["class_profiles"][0]))


def _unsorted_sites(w):
    df = table(w, "site_locations")
    return {"site_locations": parquet_bytes(pl.concat([df.slice(1, 1), df.slice(0, 1), df.slice(2)]), "site_locations")}


def _dup_site(w):
    loc, tz = table(w, "site_locations"), table(w, "site_timezones")
    return {"site_locations": parquet_bytes(pl.concat([loc.head(1), loc]), "site_locations"),
            "site_timezones": parquet_bytes(pl.concat([tz.head(1), tz]), "site_timezones")}


def _tz_keys_differ(w):
    tz = table(w, "site_timezones")
    return {"site_timezones": parquet_bytes(tz.slice(1), "site_timezones")}


def _unknown_merchant_site(w):
    loc, tz = table(w, "site_locations"), table(w, "site_timezones")
    last = int(loc["merchant_id"].max()) + 1
    extra = loc.tail(1).with_columns(pl.lit(last, dtype=pl.UInt64).alias("merchant_id"))
    extra_tz = tz.tail(1).with_columns(pl.lit(last, dtype=pl.UInt64).alias("merchant_id"))
    return {"site_locations": parquet_bytes(pl.concat([loc, extra]), "site_locations"),
            "site_timezones": parquet_bytes(pl.concat([tz, extra_tz]), "site_timezones")}


def _merchant_without_sites(w):
    m = table(w, "merchants")
    extra = m.tail(1).with_columns(pl.lit(int(m["merchant_id"].max()) + 1, dtype=pl.UInt64).alias("merchant_id"))
    return {"merchants": parquet_bytes(pl.concat([m, extra]), "merchants")}


def _extra_column(w):
    return {"merchants": parquet_bytes(table(w, "merchants").with_columns(pl.lit(1).alias("surprise")))}


def _flag(edit):
    return lambda vdir: (vdir / "_passed.flag").write_bytes(edit((vdir / "_passed.flag").read_bytes()))


def _bad_index(vdir):
    (vdir / "index.json").write_bytes(json.dumps([{"path": "../merchants.parquet", "sha256_hex": "0" * 64}]).encode())


def _unlisted(vdir):
    (vdir / "notes.txt").write_bytes(b"unsealed")


def _roster_unsorted(df):
    return parquet_bytes(pl.concat([df.slice(1, 1), df.slice(0, 1), df.slice(2)]))


def _roster_null_ts(df):
    return parquet_bytes(df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("utc_timestamp"))
                                         .alias("utc_timestamp")))


def _roster_outside_grid(df):
    last = df.tail(1).with_columns(pl.lit("2026-02-01T10:00:00.000000Z").alias("utc_timestamp"),
                                   pl.lit("2026-02-01").alias("utc_day"))
    return parquet_bytes(pl.concat([df, last]))


def _roster_dup(df):
    return parquet_bytes(pl.concat([df.head(1), df]))


def _roster_unknown_merchant(df):
    return parquet_bytes(with_row(df, 0, merchant_id=12345))


def _roster_virtual_flip(df):
    return parquet_bytes(with_row(df, 2, is_virtual=not df["is_virtual"][2]))


def _roster_bad_ts(df):
    return parquet_bytes(with_row(df, 1, utc_timestamp=df["utc_timestamp"][1][:19] + "Z"))


def _roster_missing_column(df):
    return parquet_bytes(df.drop("channel"))


def _roster_empty(df):
    return parquet_bytes(df.head(0))


CASES = {
    # command line
    "cli-seed-negative": _cli("run", "--seed", "-1", "--runs-root", "{root}", expect=r"--seed: .*-1 is outside 0 \.\. 2\^64 - 1"),
    "cli-seed-2^64": _cli(
        "run", "--seed", str(1 << 64), "--runs-root", "{root}", expect=r"--seed: 18446744073709551616 is outside"),
    "cli-seed-not-integer": _cli(
        "run", "--seed", "4.2", "--runs-root", "{root}", expect=r"--seed: '4\.2' is not a decimal integer"),
    "cli-seed-exponent": _cli("run", "--seed", "1e3", "--runs-root", "{root}", expect=r"--seed: '1e3' is not a decimal integer"),
    "cli-world-seed-negative": _cli("world", "--seed", "-7", "--runs-root", "{root}", expect=r"--seed: .*-7 is outside"),
    "cli-shard-zero": _cli(
        "run", "--seed", "42", "--runs-root", "{root}", "--shard-merchants", "0", expect=r"--shard-merchants: 0 is below 1"),
    "cli-shard-negative": _cli("run", "--seed", "42", "--runs-root", "{root}", "--shard-merchants", "-3",
                               expect=r"--shard-merchants: -3 is below 1"),
    "cli-until-unknown": _cli("run", "--seed", "42", "--runs-root", "{root}", "--policies", "{pol}", "--until", "S9",
                              expect=r"--until: S9: unknown state"),
    "cli-unknown-option": _cli(
        "run", "--seed", "42", "--runs-root", "{root}", "--frobnicate", expect=r"unrecognized arguments: --frobnicate"),
    "cli-runs-root-is-file": _root_is_file,
    "cli-runs-root-parent-is-file": _root_parent_is_file,
    "cli-roster-missing": _roster_missing,
    "cli-roster-is-folder": _roster_folder,
    "cli-world-policy-missing": _world_policy_missing,
    "cli-world-policy-is-folder": _world_policy_folder,
    "cli-upstream-missing": _upstream_missing,
    "cli-upstream-is-file": _upstream_file,
    "cli-policies-missing": _policies_missing,
    "cli-policies-is-file": _policies_file,
    "cli-verify-missing-bundle": _cli("verify", "{root}/nope", expect=r"nope: \(folder\): bundle folder missing"),
    "root-link-leaves-root": _link_leaves_root,
    "root-link-replaces-published-folder": _link_replaces_published,
    "root-tmp-is-link": _link_tmp,
    # policies
    "policy-malformed-json": policy_case("alias_layout_policy_v1", r"alias_layout_policy_v1\.json: \(document\): malformed JSON",
                                         text_edit=lambda r: r[:-20]),
    "policy-duplicate-key": policy_case("group_mix_regularizer_v1", r"group_mix_regularizer_v1\.json: key 'mode': duplicate key",
                                        text_edit=sub(rb"\{", b'{"mode": "off", ')),
    "policy-nan": policy_case("day_effect_policy_v1", r"day_effect_policy_v1\.json: \(number\): non-finite number NaN",
                              text_edit=sub(rb'"sigma_gamma_scalar": [0-9.]+', b'"sigma_gamma_scalar": NaN')),
    "policy-1e400": policy_case("day_effect_policy_v1", r"day_effect_policy_v1\.json: \(number\): number 1e400 is not finite",
                                text_edit=sub(rb'"sigma_gamma_scalar": [0-9.]+', b'"sigma_gamma_scalar": 1e400')),
    "policy-minus-infinity": policy_case("roster_policy_v1", r"roster_policy_v1\.json: \(number\): non-finite number -Infinity",
                                         text_edit=sub(rb'"size_exponent": [0-9.]+', b'"size_exponent": -Infinity')),
    "policy-huge-integer": policy_case(
        "roster_policy_v1", r"roster_policy_v1\.json: \(number\): integer 9{24}\.\.\. is out of range",
        text_edit=sub(rb'"min_active_days": [0-9]+', b'"min_active_days": ' + b"9" * 40)),
    "policy-nested-200k": policy_case(
        "route_rng_policy_v1", r"route_rng_policy_v1\.json: \(document\): nested deeper than 64 levels",
        text_edit=_deep),
    "policy-not-utf8": policy_case("route_rng_policy_v1", r"route_rng_policy_v1\.json: \(document\): not UTF-8 text",
                                   text_edit=lambda r: r.replace(b"philox", b"phil\xffox")),
    "policy-lone-surrogate": policy_case(
        "virtual_edge_policy_v1", r"virtual_edge_policy_v1\.json: \(document\): string holds a lone surrogate",
        text_edit=sub(rb'"Amsterdam"', rb'"Amst\\ud800erdam"')),
    "policy-unknown-field": policy_case(
        "alias_layout_policy_v1", r"alias_layout_policy_v1\.json: \(document root\): schema rule 'additionalProperties'",
        data_edit=lambda d: d.update(surprise=True)),
    "policy-wrong-type": policy_case("roster_policy_v1", r"roster_policy_v1\.json: /min_active_days: schema rule 'type'",
                                     data_edit=_set("min_active_days", "28")),
    "policy-own-schemas-ignored": _schemas_loosened,
    "policy-file-missing": _policy_missing,
    "policy-file-is-folder": _policy_is_folder,
    "policy-file-is-link": _policy_link,
    "policy-day-range-reversed": policy_case("day_effect_policy_v1", r"day_effect_policy_v1: /day_range: empty or reversed range",
                                             data_edit=_day_range("2026-01-11", "2026-01-05")),
    "policy-day-range-no-such-date": policy_case(
        "day_effect_policy_v1", r"day_effect_policy_v1: /day_range: start '2026-02-30' is not a calendar date",
        data_edit=_day_range("2026-02-30", "2026-03-05")),
    "policy-roster-horizon-off-grid": policy_case(
        "roster_policy_v1", r"roster_policy_v1: /horizon: horizon .* leaves the day grid",
        data_edit=_set("horizon", {"start": "2026-01-01", "end": "2026-01-06"})),
    "policy-roster-min-active-days-1000": policy_case(
        "roster_policy_v1", r"roster_policy_v1: /min_active_days: 1000 active days .* cannot fit the 7-day grid",
        data_edit=_set("min_active_days", 1000)),
    "policy-roster-duplicate-profile": policy_case(
        "roster_policy_v1", r"roster_policy_v1: /class_profiles: merchant_class listed more than once",
        data_edit=_dup_class_profile),
    "policy-roster-intraday-zero": policy_case(
        "roster_policy_v1", r"roster_policy_v1: /default_profile/intraday_weights: intraday weights sum to zero",
        data_edit=_set("default_profile/intraday_weights", [0] * 24)),
    "policy-s1-mixture-sum": policy_case(
        "alias_layout_policy_v1", r"alias_layout_policy_v1: /profile_mixture_v2/mixture_weights/small: .*sum to 1",
        data_edit=_set("profile_mixture_v2/mixture_weights/small/hub_spoke", 0.99)),
    "policy-s1-tail-range": policy_case(
        "alias_layout_policy_v1", r"/profile_mixture_v2/tail_exponent_range/mid: high must not be below low",
        data_edit=_set("profile_mixture_v2/tail_exponent_range/mid", {"low": 1.5, "high": 1.2})),
    "policy-s1-cap-headroom": policy_case(
        "alias_layout_policy_v1", r"/profile_mixture_v2/top1_soft_cap_by_bucket: cap \+ min_secondary_mass",
        data_edit=_set("profile_mixture_v2/top1_soft_cap_by_bucket/large", 0.95)),
    "policy-s1-buckets": policy_case(
        "alias_layout_policy_v1", r"/profile_mixture_v2/merchant_size_buckets: small_max_sites must be below",
        data_edit=_set("profile_mixture_v2/merchant_size_buckets", {"small_max_sites": 20, "mid_max_sites": 10})),
    "policy-s3-sigma-bounds": policy_case(
        "day_effect_policy_v1", r"/sigma_gamma_policy_v2/sigma_min: sigma_min 0\.5 > sigma_max 0\.2",
        data_edit=lambda d: d["sigma_gamma_policy_v2"].update(sigma_min=0.5, sigma_max=0.2)),
    "policy-s3-gamma-clip": policy_case("day_effect_policy_v1", r"/sigma_gamma_policy_v2/gamma_clip: gamma_clip must satisfy",
                                        data_edit=_set("sigma_gamma_policy_v2/gamma_clip", {"min": 3.0, "max": 0.5})),
    "policy-s3-regime-shares": policy_case(
        "day_effect_policy_v1", r"/sigma_gamma_policy_v2/regimes: shares must be >= 0 and sum to 1",
        data_edit=_set("sigma_gamma_policy_v2/regimes/0/share", 0.01)),
    "policy-s4-knee-above-cap": policy_case(
        "group_mix_regularizer_v1", r"group_mix_regularizer_v1: /soft_cap_blend/knee: need 0\.5 <= knee < cap",
        data_edit=lambda d: d["soft_cap_blend"].update(knee=0.9, cap=0.8)),
    "policy-s6-duplicate-edge": policy_case(
        "virtual_edge_policy_v1", r"virtual_edge_policy_v1: /default_edges: duplicate edge_id",
        data_edit=_s6_dup_edge),
    "policy-s6-duplicate-override": policy_case(
        "virtual_edge_policy_v1", r"/merchant_overrides/1: merchant_id 7 has more than one override",
        data_edit=_s6_dup_override),
    "policy-world-class-shares": policy_case(
        "world_policy_v1", r"world_policy_v1: /merchant_classes/\*/share: shares must sum to 1",
        data_edit=_set("merchant_classes/0/share", 0.5)),
    # world policy given as a file
    "world-1e400": world_case(r"my_world\.json: \(number\): number 1e400 is not finite",
                              text_edit=sub(rb'"jitter_km": [0-9.]+', b'"jitter_km": 1e400')),
    "world-nan": world_case(
        r"my_world\.json: \(number\): non-finite number NaN", text_edit=sub(rb'"size_tilt": [0-9.]+', b'"size_tilt": NaN')),
    "world-duplicate-key": world_case(r"my_world\.json: key 'n_merchants': duplicate key",
                                      text_edit=sub(rb'"n_merchants": ', b'"n_merchants": 5, "n_merchants": ')),
    "world-schema-n-merchants-0": world_case(
        r"my_world\.json: /n_merchants: schema rule 'minimum'", data_edit=_set("n_merchants", 0)),
    "world-knots-decreasing": world_case(
        r"world_policy_v1: /sites_per_merchant/quantile_knots: sites must be >= 1 and non-decreasing",
        data_edit=_set("sites_per_merchant/quantile_knots/2/sites", 1)),
    "world-tail-cap": world_case(r"world_policy_v1: /sites_per_merchant/tail/cap: cap must exceed the last knot",
                                 data_edit=_set("sites_per_merchant/tail/cap", 100)),
    "world-unknown-country": world_case(r"world_policy_v1: /home_country/market_tiers/0/countries: XX is not a country",
                                        data_edit=lambda d: d["home_country"]["market_tiers"][0]["countries"].append("XX")),
    "world-population-exponent-overflow": world_case(
        r"world_policy_v1: /home_country/population_exponent: the weights it gives overflow",
        data_edit=_set("home_country/population_exponent", 1e300)),
    "world-channel-sum": world_case(r"world_policy_v1: /merchant_classes/0/channel: channel probabilities must sum to 1",
                                    data_edit=_set("merchant_classes/0/channel/omni", 0.5)),
    "world-duplicate-mcc": world_case(
        r"world_policy_v1: /merchant_classes/1/mcc: duplicate MCC code",
        data_edit=lambda d: d["merchant_classes"][1]["mcc"].append(dict(d["merchant_classes"][1]["mcc"][0]))),
    # user upstream
    "upstream-changed-table-same-flag": upstream_case(
        r"site_locations\.parquet: sha256_hex: bytes differ from the digest the 1B bundle certifies",
        edit=_upstream_same_flag_changed_table, reseal=False),
    "upstream-flag-missing": upstream_case(r"_passed\.flag: \(file\): user-supplied upstream needs a well-formed _passed\.flag",
                                           bundle_edit=lambda v: (v / "_passed.flag").unlink()),
    "upstream-flag-malformed": upstream_case(r"_passed\.flag: \(file\): user-supplied upstream needs a well-formed",
                                             bundle_edit=_flag(lambda b: b.replace(b"sha256_hex", b"sha256"))),
    "upstream-flag-wrong-digest": upstream_case(
        r"_passed\.flag: sha256_hex: flag digest [0-9a-f]{12} does not match members",
        bundle_edit=_flag(lambda b: b[:13] + (b"0" if b[13:14] != b"0" else b"1") + b[14:])),
    "upstream-unsafe-index-path": upstream_case(
        r"index\.json: \[0\]\.path: path must not contain '\.\.'", bundle_edit=_bad_index),
    "upstream-unlisted-member": upstream_case(
        r"notes\.txt: \(file\): file in bundle not listed in index\.json", bundle_edit=_unlisted),
    "upstream-manifest-link": _upstream_link("upstream_manifest.json"),
    "upstream-table-link": _upstream_table_link,
    "upstream-lat-200": upstream_case(
        r"site_locations\.parquet: row 0 lat_deg: latitude must be finite, in \[-90, 90\] \(got 200\.0\)",
        edit=row_edit("site_locations", 0, lat_deg=200.0)),
    "upstream-lon-nan": upstream_case(r"site_locations\.parquet: row 3 lon_deg: longitude must be finite",
                                      edit=row_edit("site_locations", 3, lon_deg=float("nan"))),
    "upstream-lat-infinite": upstream_case(r"site_locations\.parquet: row 1 lat_deg: latitude must be finite",
                                           edit=row_edit("site_locations", 1, lat_deg=float("-inf"))),
    "upstream-unsorted-sites": upstream_case(r"site_locations\.parquet: row 1: rows not sorted", edit=_unsorted_sites),
    "upstream-duplicate-site": upstream_case(r"site_locations\.parquet: row \d+: duplicate primary key", edit=_dup_site),
    "upstream-timezone-keys-differ": upstream_case(
        r"site_timezones\.parquet: .*must hold exactly the sites of site_locations", edit=_tz_keys_differ),
    "upstream-unknown-tzid": upstream_case(r"site_timezones\.parquet: row 0 tzid: not an IANA time zone",
                                           edit=row_edit("site_timezones", 0, tzid="Mars/Olympus")),
    "upstream-site-of-unknown-merchant": upstream_case(
        r"site_locations\.parquet: row \d+ merchant_id: merchant not in merchants\.parquet",
        edit=_unknown_merchant_site),
    "upstream-merchant-without-sites": upstream_case(
        r"merchants\.parquet: row \d+ merchant_id: merchant has no site", edit=_merchant_without_sites),
    "upstream-bad-channel": upstream_case(r"merchants\.parquet: row 2 channel: must be one of",
                                          edit=row_edit("merchants", 2, channel="telepathy")),
    "upstream-bad-country-code": upstream_case(r"merchants\.parquet: row 0 home_country_iso: must be an ISO 3166 alpha-2 code",
                                               edit=row_edit("merchants", 0, home_country_iso="usa")),
    "upstream-extra-column": upstream_case(r"merchants\.parquet: surprise: columns differ from the contract", edit=_extra_column),
    "upstream-not-parquet": upstream_case(
        r"merchants\.parquet: merchants: unreadable Parquet", edit=lambda w: {"merchants": b"PAR1 not really"}),
    # user roster
    "roster-unsorted": roster_case(r"my_roster\.parquet: row 1: rows not sorted", edit=_roster_unsorted),
    "roster-unknown-merchant": roster_case(
        r"my_roster\.parquet: row 0: merchant_id 12345 not in the merchants table", edit=_roster_unknown_merchant),
    "roster-null-timestamp": roster_case(r"my_roster\.parquet: utc_timestamp: 1 null value\(s\)", edit=_roster_null_ts),
    "roster-zero-rows": roster_case(r"my_roster\.parquet: \(rows\): roster has no arrivals", edit=_roster_empty),
    "roster-day-outside-grid": roster_case(
        r"my_roster\.parquet: row \d+: utc_day '2026-02-01' outside the day grid", edit=_roster_outside_grid),
    "roster-duplicate-arrival": roster_case(
        r"my_roster\.parquet: row 1: duplicate \(merchant_id, utc_timestamp\)", edit=_roster_dup),
    "roster-virtual-flag-differs": roster_case(
        r"my_roster\.parquet: row 2: merchant \d+: \(is_virtual, merchant_class, channel\)", edit=_roster_virtual_flip),
    "roster-timestamp-format": roster_case(r"my_roster\.parquet: row 1: utc_timestamp .* is not RFC 3339", edit=_roster_bad_ts),
    "roster-missing-column": roster_case(r"my_roster\.parquet: channel: missing column", edit=_roster_missing_column),
    "roster-not-parquet": roster_case(
        r"my_roster\.parquet: \(file\): not a readable Parquet file", raw=b"merchant_id,utc_timestamp\n1,2\n"),
}


def _invoke(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input_is_refused_cleanly(kind, world, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(world.root, root, symlinks=True)
    argv, expect = CASES[kind](world, tmp_path, root)
    before = tree_state(tmp_path)
    capsys.readouterr()
    rc = _invoke(argv)
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert rc == 2, out.err
    assert len(lines) == 1 and lines[0].startswith("seg2b: error: "), out.err
    assert "Traceback" not in out.err + out.out
    assert re.search(expect, lines[0]), lines[0]
    assert tree_state(tmp_path) == before, "a rejected input changed files"


def test_at_least_sixty_kinds_over_every_input():
    families = {k.split("-")[0] for k in CASES}
    assert len(CASES) >= 60 and {"cli", "policy", "world", "upstream", "roster", "root"} <= families


# ---------------------------------------------------------------------------------------------
# the same through the real top level (a fresh interpreter): one line, no traceback


REAL = ["cli-seed-negative", "cli-seed-2^64", "policy-nested-200k", "world-1e400", "roster-null-timestamp",
        "upstream-lon-nan", "cli-runs-root-is-file"]


def test_real_processes_print_one_line(world, tmp_path):
    procs = []
    for kind in REAL:
        tmp = tmp_path / kind.replace("^", "")
        tmp.mkdir()
        root = tmp / "runs"
        shutil.copytree(world.root, root, symlinks=True)
        argv, expect = CASES[kind](world, tmp, root)
        procs.append((kind, expect, tmp, tree_state(tmp),
                      subprocess.Popen([sys.executable, "-m", "engine.cli", *argv], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)))
    for kind, expect, tmp, before, proc in procs:
        out, err = proc.communicate(timeout=120)
        lines = err.splitlines()
        assert proc.returncode == 2, (kind, err)
        assert len(lines) == 1 and re.search(expect, lines[0]) and "Traceback" not in err + out, (kind, err)
        assert tree_state(tmp) == before, kind


def test_world_command_runs(world, tmp_path):
    """`seg2b world` (shown in the README) writes the upstream and stops."""
    argv = ["world", "--seed", "5", "--runs-root", str(tmp_path / "runs"), "--policies", str(world.policies), "--quiet"]
    assert main(argv) == 0
    assert list((tmp_path / "runs/data/layer1/1A/merchants").glob("seed=5/*/part-00000.parquet"))
    assert not (tmp_path / "runs/data/layer1/2B").exists()


def test_policy_without_day_range_takes_the_default_everywhere(world, tmp_path):
    """Schema-valid without day_range: the roster and S3 read the same default grid."""
    from engine.calendar import DEFAULT_DAY_RANGE

    late_horizon = {"start": "2026-03-25", "end": "2026-03-31"}
    pdir = small_policies(tmp_path, {"day_effect_policy_v1": lambda d: d.pop("day_range"),
                                     "roster_policy_v1": lambda d: d.update(horizon=late_horizon)})
    result = Pipeline(SEED, tmp_path / "runs", pdir).run(until="S3")
    days = result.load("s3_day_effects")["utc_day"]
    assert (days.min(), days.max()) == DEFAULT_DAY_RANGE
    assert result.load("s5_arrival_roster")["utc_day"].min() >= "2026-03-25"


def test_a_different_roster_is_a_different_run(world, tmp_path):
    """A user roster is part of the identity: two rosters never publish at the same paths."""
    root = tmp_path / "runs"
    shutil.copytree(world.root, root, symlinks=True)
    other = tmp_path / "other.parquet"
    df = pl.read_parquet(world.roster)
    other.write_bytes(parquet_bytes(df.head(df.height - 5)))
    a = Pipeline(SEED, root, world.policies, roster_file=world.roster)
    b = Pipeline(SEED, root, world.policies, roster_file=other)
    assert len({world.ctx.mf, a.ctx.mf, b.ctx.mf}) == 3 and a.ctx.run_id != b.ctx.run_id
    before = tree_state(world.root)
    a.run()
    b.run()
    after = tree_state(root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing published before changed
    for pipe in (a, b):
        assert main(["verify", str(dataset_path("validation_bundle_2B", root, pipe.ctx))]) == 0
