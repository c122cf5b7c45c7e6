"""The data flow of one seed: world -> roster -> S0 -> S1 ... S8, as engine/stages.py declares it.

    world    (world_policy)                      -> merchants, site_locations, site_timezones, 1B bundle
    roster   (merchants, site_timezones)         -> s5_arrival_roster
    S0 gate  (1B bundle, table digests, policies) -> s0_gate_receipt, sealed_inputs
    S1       (site_locations, site_timezones)    -> s1_site_weights
    S2       (s1_site_weights)                   -> s2_alias_index + s2_alias_blob
    S3       (merchants, site_timezones)         -> s3_day_effects
    S4       (s1, site_timezones, s3)            -> s4_group_weights
    S5       (roster, s4, s1, site_timezones)    -> group/site event logs, trace
    S6       (roster, merchants)                 -> edge event log, trace
    S7       (everything above)                  -> s7_audit_report
    S8       (receipt, sealed inputs, S7)        -> validation bundle + _passed.flag

States are pure functions; this module does all I/O. For each stage spec (engine/states/spec.py)
it decides skip / reuse / run from the stage's input key (code, policies, input dataset digests,
run facts, extras), loads inputs under the contract table and re-checks them against S0's seal,
resolves the extras the spec declares from one table of providers (EXTRAS), runs the state whole
or over shards on the executor, publishes the outputs with the publish law, writes the receipt,
and records wall time and rows per stage in a run report outside the datasets. It knows no stage
by name: whatever a stage needs beyond its datasets is declared in its spec.

Memory: the roster and S3..S7 run over merchant shards (engine/shards.py): their big inputs are
read one shard at a time and their big outputs streamed to disk shard by shard, so peak memory
follows the shard size (--shard-merchants), not the world. Outputs are the same bytes whatever
the shard size, which is why it is not part of a run's identity.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contracts, preflight
from .context import Context
from .datasets import check_footer, decode, digest, encode
from .errors import EngineError, from_os_error
from .executors import LocalExecutor, ShardJob
from .identity import (
    UPSTREAM_TABLES,
    canonical_json,
    file_sha256,
    folder_files,
    manifest_fingerprint,
    parameter_hash,
    run_id,
    sha256_hex,
    upstream_identity,
)
from .policies import DEFAULT_POLICY_DIR, Policy, check_sealed, load_policies, overlay_dir
from .progress import hooks_of
from .publish import (
    IDENTICAL,
    Staged,
    drop_workspace,
    new_workspace,
    publish_group,
    replace_file,
    sweep_siblings,
    sweep_workspaces,
)
from .receipts import (
    code_version,
    context_facts,
    find_reusable,
    library_versions,
    outputs_intact,
    stage_reused,
)
from .shards import DEFAULT_SHARD_MERCHANTS, SHARDED_TABLES, ShardPlan, ShardReader, drop_splits
from .stages import ENGINE_POLICIES, STAGE_NAMES, STAGES, stages_for
from .states import upstream_import
from .states.spec import StateOutputs, StateSpec

OPTIONAL_OUTPUTS = {"s5_selection_log", "s6_edge_log"}
IO_THREADS = 2


@dataclass
class StageRecord:
    name: str
    status: str  # ran | skipped | reused (outputs of the same input key, published under another manifest)
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)  # dataset id -> written | identical
    report: dict = field(default_factory=dict)


@dataclass
class RunResult:
    ctx: Context
    runs_root: Path
    policy_dir: Path
    stages: list[StageRecord]
    seconds: float
    _loaded: dict = field(default_factory=dict, repr=False)

    def path(self, dataset_id: str) -> Path:
        return dataset_path(dataset_id, self.runs_root, self.ctx)

    def load(self, dataset_id: str, cache: bool = True):
        """A published dataset under its contract (kept in memory for repeated readers)."""
        if not cache:
            return decode(dataset_id, self.path(dataset_id), partition_of(dataset_id, self.ctx))
        if dataset_id not in self._loaded:
            self._loaded[dataset_id] = decode(dataset_id, self.path(dataset_id), partition_of(dataset_id, self.ctx))
        return self._loaded[dataset_id]

    def forget(self) -> None:
        self._loaded.clear()

    @property
    def replay_identical(self) -> bool:
        return all(st == IDENTICAL for rec in self.stages for st in rec.published.values())


def dataset_path(dataset_id: str, runs_root: Path, ctx: Context) -> Path:
    return contracts.get(dataset_id).path(runs_root, seed=ctx.seed, mf=ctx.mf, ph=ctx.parameter_hash, run_id=ctx.run_id)


def partition_of(dataset_id: str, ctx: Context) -> str | None:
    """The content stamp a dataset must carry; None for tables imported verbatim from a user's upstream."""
    if ctx.upstream_verbatim and dataset_id in upstream_import.TABLES:
        return None
    return contracts.get(dataset_id).stamp(ctx.seed)


def receipts_dir(runs_root: Path, ctx: Context) -> Path:
    return Path(runs_root) / f"reports/layer1/2B/receipts/seed={ctx.seed}/manifest_fingerprint={ctx.mf}"


def receipt_path(runs_root: Path, ctx: Context, stage: str) -> Path:
    return receipts_dir(runs_root, ctx) / f"{stage}.json"


def run_report_path(runs_root: Path, ctx: Context) -> Path:
    return Path(runs_root) / f"reports/layer1/2B/run_report/seed={ctx.seed}/manifest_fingerprint={ctx.mf}/run_report.json"


def code_digest(stage: StateSpec) -> str:
    """The stage's code version: every engine module it runs (receipts.code_version)."""
    return code_version(stage.module)


@dataclass(frozen=True)
class Extra:
    """How the pipeline provides an extra a spec declares (engine/states/spec.py): its value for
    the state, and, when the value is not already covered by the key, the input-key entry it adds."""

    value: Callable[[Pipeline, StateSpec], Any]
    key: str | None = None
    fact: Callable[[Any], Any] | None = None


EXTRAS = {
    "assets": Extra(lambda p, s: p._seal_rows(s.seals)),  # their digests are in the key's datasets
    "bundle_path": Extra(lambda p, s: p._rel(s.bundle)),
    "published": Extra(lambda p, s: p._published_outputs(), "published",
                       lambda v: {o["path"]: o["sha256_hex"] for o in v}),
    "upstream_files": Extra(lambda p, s: p._upstream_files, "upstream", lambda v: {n: sha256_hex(b) for n, b in v.items()}),
    "user_roster": Extra(lambda p, s: p.roster_file, "user_roster", digest),
}


def make_context(seed: int, policies: dict[str, Policy], upstream: Path | None = None,
                 roster_digest: str | None = None) -> Context:
    """Identity of a run: the upstream manifest (built-in world or the user's flag) plus the
    policies, plus the user roster's digest when there is one (a different roster is a different
    manifest, so its run-scoped and seed-scoped outputs land at their own paths)."""
    from .identity import parse_flag
    from .world import world_fingerprint

    engine = {name: policies[name] for name in ENGINE_POLICIES}
    # Keyed by the policy's canonical file name, whatever file a --world-policy came from.
    ph = parameter_hash({f"{p.name}.json": p.sha256 for p in engine.values()})
    if upstream is None:
        upstream_digest = world_fingerprint(policies["world_policy_v1"].sha256)
    else:
        flag_file = Path(upstream) / "validation" / "_passed.flag"
        upstream_digest = parse_flag(flag_file.read_bytes()) if flag_file.is_file() else None
        if upstream_digest is None:
            raise EngineError(flag_file, "(file)", "user-supplied upstream needs a well-formed _passed.flag")
    mf = manifest_fingerprint(upstream_digest, ph, roster_digest)
    return Context(seed=seed, manifest_fingerprint=mf, parameter_hash=ph, run_id=run_id(seed, mf, ph),
                   created_utc=policies["world_policy_v1"].data["as_of_utc"], upstream_verbatim=upstream is not None)


class Pipeline:
    """Runs the stages for one seed under one runs root."""

    def __init__(self, seed: int, runs_root: Path, policy_dir: Path | None = None, *,
                 roster_file: Path | None = None, upstream: Path | None = None, force: bool = False, progress=None,
                 report_path: Path | None = None, shard_merchants: int = DEFAULT_SHARD_MERCHANTS,
                 policy_overrides: dict[str, Path] | None = None, executor=None, policies: dict | None = None):
        self.seed = preflight.check_seed(seed)
        self.shard_merchants = preflight.check_shard_merchants(shard_merchants)
        self.runs_root = Path(runs_root)
        preflight.check_runs_root(self.runs_root)
        self.policy_dir = Path(policy_dir or DEFAULT_POLICY_DIR)
        # Policy files that replace the folder's (--world-policy): read from where they are, and
        # copied into an overlay folder under the runs root only once the run has passed preflight.
        self.policy_overrides = {n: Path(p) for n, p in (policy_overrides or {}).items()}
        self.roster_file = Path(roster_file) if roster_file else None
        self.upstream = Path(upstream) if upstream else None
        self.force = force
        self.report_path = Path(report_path) if report_path else None
        self.hooks = hooks_of(progress)
        # A caller running several seeds (a lane) loads the policies once and passes them here;
        # they must be what `policy_dir` and `policy_overrides` hold.
        self.policies = (policies if policies is not None
                         else load_policies(self.policy_dir, ENGINE_POLICIES, self.policy_overrides))
        self._upstream_files = upstream_import.read_folder(self.upstream) if self.upstream else None
        # The run's options decide which declared alternatives replace a stage (engine/stages.py).
        self.stages = stages_for({n for n, v in (("upstream_files", self.upstream), ("user_roster", self.roster_file)) if v})
        roster_digest = preflight.user_roster_digest(self.roster_file) if self.roster_file else None
        self.ctx = make_context(self.seed, self.policies, self.upstream, roster_digest)
        self._digests: dict[Path, str] = {}
        self._plan: ShardPlan | None = None
        self._ws: Path | None = None  # this run's private folder for temporaries (publish.new_workspace)
        # Where shards are computed (engine/executors.py); not part of the run's identity: same bytes.
        self.executor = executor or LocalExecutor()
        self.notes: list[str] = []

    # -- digests ---------------------------------------------------------------------------
    def _digest(self, dataset_id: str) -> str:
        path = self._path(dataset_id)
        if path not in self._digests:
            if not path.exists():
                raise EngineError(path, dataset_id, "input dataset missing (its producing stage has not run)")
            self._digests[path] = digest(path)
        return self._digests[path]

    def _input_key(self, stage: StateSpec, extras: dict) -> dict:
        key = {
            "code": code_digest(stage),
            "libraries": library_versions(),
            "context": context_facts(self.ctx, stage.context),
            "policies": {n: self.policies[n].sha256 for n in stage.policies},
            "datasets": {d: self._digest(d) for d in stage.reads + stage.seals
                         if self._exists(d) or d not in OPTIONAL_OUTPUTS},
        }
        for name, value in extras.items():
            extra = EXTRAS[name]
            if extra.key is not None and extra.fact is not None:
                key[extra.key] = extra.fact(value)
        return key

    def _exists(self, dataset_id: str) -> bool:
        return self._path(dataset_id).exists()

    # -- one stage -------------------------------------------------------------------------
    def _outputs_intact(self, receipt: dict) -> bool:
        return outputs_intact(self.runs_root, receipt, {d: self._path(d) for d in receipt.get("outputs", {})})

    def _know_upstream(self) -> None:
        """Once the upstream tables are in place, the identity every 2B draw is keyed by."""
        if not self.ctx.upstream_identity and all(self._exists(t) for t in UPSTREAM_TABLES):
            self.ctx = dataclasses.replace(self.ctx, upstream_identity=upstream_identity(
                {t: self._digest(t) for t in UPSTREAM_TABLES}))

    def _sealed(self) -> tuple[dict[str, str], dict[str, str]]:
        receipt = decode("s0_gate_receipt", dataset_path("s0_gate_receipt", self.runs_root, self.ctx), "")
        sealed = decode("sealed_inputs", dataset_path("sealed_inputs", self.runs_root, self.ctx), "")
        return receipt["policies"], {r["asset_id"]: r["sha256_hex"] for r in sealed}

    def _path(self, dataset_id: str) -> Path:
        return dataset_path(dataset_id, self.runs_root, self.ctx)

    def _shard_plan(self) -> ShardPlan:
        if self._plan is None:
            merchants = decode("merchants", self._path("merchants"), partition_of("merchants", self.ctx))
            self._plan = ShardPlan.of(merchants["merchant_id"].to_numpy(), self.shard_merchants)
        return self._plan

    def _load_inputs(self, stage: StateSpec, defer: frozenset = frozenset()) -> dict:
        if stage.checks_seal:
            sealed_policies, sealed_assets = self._sealed()
            for name in stage.policies:
                check_sealed(self.policies[name], sealed_policies)
            for d in stage.reads:
                if d in sealed_assets and self._digest(d) != sealed_assets[d]:
                    raise EngineError(self._path(d), "sha256_hex",
                                      "input bytes differ from the digest S0 sealed")
        wanted = [d for d in stage.reads
                  if (d not in OPTIONAL_OUTPUTS or self._path(d).exists()) and d not in defer]
        # Parquet decoding releases the GIL: two readers keep both cores busy on big inputs.
        with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
            decoded = pool.map(lambda d: decode(d, self._path(d), partition_of(d, self.ctx)), wanted)
            return dict(zip(wanted, decoded))

    def _seal_rows(self, datasets: tuple[str, ...]) -> list[dict]:
        """S0's seal row of each dataset: what it is, its digest and where it was read."""
        label = {"seed": self.ctx.seed, "mf": self.ctx.mf, "ph": self.ctx.parameter_hash, "run_id": self.ctx.run_id}
        return [{"asset_id": d, "version_tag": contracts.get(d).template.split("/")[2], "sha256_hex": self._digest(d),
                 "path": self._rel(d), "partition": contracts.get(d).partition_label(**label)} for d in datasets]

    def _rel(self, dataset_id: str) -> str:
        return self._path(dataset_id).relative_to(self.runs_root).as_posix()

    def _published_outputs(self) -> list[dict]:
        """Path and digest of every output the stages before S8 published for this seed (folders
        file by file), from the digests the receipts already hold: what the S8 bundle vouches for."""
        out = []
        for stage in self.stages:
            if "published" in stage.extras:  # the stage that vouches for the others' outputs
                continue
            for d in stage.writes:
                path = self._path(d)
                if d in OPTIONAL_OUTPUTS and not path.exists():
                    continue
                if path.is_dir():
                    out += [{"dataset_id": d, "path": f"{self._rel(d)}/{rel}", "sha256_hex": file_sha256(path / rel)}
                            for rel in folder_files(path)]
                else:
                    out.append({"dataset_id": d, "path": self._rel(d), "sha256_hex": self._digest(d)})
        return out

    def run_stage(self, stage: StateSpec) -> StageRecord:
        t0 = time.perf_counter()
        if not set(UPSTREAM_TABLES) & set(stage.writes):  # their writer must not key anything by their old bytes
            self._know_upstream()
        rpath = receipt_path(self.runs_root, self.ctx, stage.name)
        extras = {name: EXTRAS[name].value(self, stage) for name in stage.extras}
        key = self._input_key(stage, extras)
        receipt = _read_receipt(rpath)
        if receipt and not self.force and receipt["inputs"] == key and self._outputs_intact(receipt):
            return StageRecord(stage.name, "skipped", time.perf_counter() - t0, receipt.get("rows", {}))
        superseded = self._superseded(receipt, key)
        if not self.force:
            source = find_reusable(self.runs_root, self.seed, stage.name, key, exclude=rpath)
            if source is not None:
                return self._reuse(stage, key, source, rpath, superseded, t0)
        return self._publish(stage, key, self._compute(stage, extras), rpath, superseded, t0)

    def _compute(self, stage: StateSpec, extras: dict) -> StateOutputs:
        policies = {n: self.policies[n] for n in stage.policies}
        if stage.sharded:
            big = frozenset(d for d in stage.reads if d in SHARDED_TABLES)
            return self._run_shards(stage, self._load_inputs(stage, defer=big), big, policies)
        return StateOutputs.of(stage.run(self._load_inputs(stage), policies, self.ctx, **extras))

    def _publish(self, stage: StateSpec, key: dict, result: StateOutputs, rpath: Path, superseded: dict,
                 t0: float) -> StageRecord:
        outputs = result.tables
        try:
            unknown = set(outputs) - set(stage.writes)
            if unknown:
                raise EngineError(stage.name, ",".join(sorted(unknown)), "state returned outputs it does not declare")
            missing = [d for d in stage.writes if d not in outputs and d not in OPTIONAL_OUTPUTS]
            if missing:
                raise EngineError(stage.name, ",".join(missing), "state did not produce a declared output")
            produced = [d for d in stage.writes if d in outputs]
            in_memory = [d for d in produced if not isinstance(outputs[d], Staged)]
            with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
                encoded = dict(zip(in_memory, pool.map(lambda d: encode(d, outputs[d], partition_of(d, self.ctx)), in_memory)))
        except BaseException:
            _discard_staged(outputs)
            raise
        encoded = {d: encoded.get(d, outputs[d]) for d in produced}
        rows = {d: (outputs[d].rows if isinstance(outputs[d], Staged) else outputs[d].height)
                for d in produced if hasattr(outputs[d], "height") or isinstance(outputs[d], Staged)}
        items = [(self._path(d), data) for d, data in encoded.items()]
        statuses = publish_group(items, replace=superseded.values(), workspace=self._workspace(), lock=self.runs_root,
                                 withdraw=[p for d, p in superseded.items() if d not in encoded])
        for path in superseded.values():
            self._digests.pop(path, None)
        out_digests = {}
        for (d, data), (path, _) in zip(encoded.items(), items):
            self._digests.pop(path, None)
            if isinstance(data, Staged):
                out_digests[d] = data.sha256
            else:
                out_digests[d] = digest(path) if isinstance(data, dict) else sha256_hex(data)
            self._digests[path] = out_digests[d]
        self._write_receipt(rpath, stage, key, out_digests, rows)
        return StageRecord(stage.name, "ran", time.perf_counter() - t0, rows,
                           dict(zip(encoded, statuses)), result.report)

    def _write_receipt(self, rpath: Path, stage: StateSpec, key: dict, out_digests: dict, rows: dict) -> None:
        paths = {d: self._rel(d) for d in out_digests}
        replace_file(rpath, canonical_json({"stage": stage.name, "inputs": key, "outputs": out_digests,
                                            "paths": paths, "rows": rows}), self._workspace())

    def _reuse(self, stage: StateSpec, key: dict, source: dict, rpath: Path, superseded: dict, t0: float) -> StageRecord:
        """Publish the outputs another manifest's run made from the same input key (common random
        numbers make that the normal case after a policy edit that does not concern this stage)."""
        items, staged = [], []
        try:
            for d, sha in source["outputs"].items():
                data = stage_reused(self.runs_root / source["paths"][d], self._path(d), sha, self._workspace())
                if isinstance(data, Staged):
                    staged.append(data)
                items.append((self._path(d), data))
            statuses = publish_group(items, replace=superseded.values(), workspace=self._workspace(), lock=self.runs_root,
                                     withdraw=[p for d, p in superseded.items() if d not in source["outputs"]])
        except BaseException:
            for data in staged:
                Path(data.path).unlink(missing_ok=True)
            raise
        for path in superseded.values():
            self._digests.pop(path, None)
        for d, sha in source["outputs"].items():
            self._digests[self._path(d)] = sha
        self._write_receipt(rpath, stage, key, dict(source["outputs"]), source.get("rows", {}))
        return StageRecord(stage.name, "reused", time.perf_counter() - t0, source.get("rows", {}),
                           dict(zip(source["outputs"], statuses)), {"reused_from": source["paths"]})

    def _superseded(self, receipt: dict | None, key: dict) -> dict[str, Path]:
        """Published outputs this stage may replace: those of a receipt of other inputs (bytes that
        merely differ from their receipt are damage, and the publish law refuses to overwrite them).
        They are swapped out only when their replacement group publishes, so a stage that fails
        before leaves them in place."""
        if not receipt or receipt.get("inputs") == key:
            return {}
        return {d: self._path(d) for d in receipt.get("outputs", {})}

    def _workspace(self) -> Path:
        """This run's private folder for temporaries (created on first use, so a run that writes
        nothing, e.g. on a read-only root, creates nothing)."""
        if self._ws is None:
            self._ws = new_workspace(self.runs_root)
        return self._ws

    def _run_shards(self, stage: StateSpec, inputs: dict, big: frozenset, policies: dict) -> StateOutputs:
        """Run a sharded state over merchant shards on the run's executor (engine/executors.py):
        small inputs restricted per shard, big ones read per shard (the roster split once per
        run, under the workspace), big outputs staged, the rest merged by `finish`."""
        plan = self._shard_plan()
        for d in big:
            check_footer(d, self._path(d), partition_of(d, self.ctx))
        splits = self._workspace() / "splits"
        job = ShardJob(stage.name, stage.module, stage.writes, policies, self.ctx, plan, inputs,
                       [ShardReader(d, self._path(d), plan, splits, self._digest(d)) for d in sorted(big)],
                       {d: (self._path(d), partition_of(d, self.ctx)) for d in stage.writes if d in SHARDED_TABLES},
                       self._workspace(), lambda done, total: self.hooks.shards_done(self.seed, stage.name, done, total),
                       splits)
        outputs, executed = self.executor.run_shards(job)
        result = StateOutputs.of(outputs)
        result.report = {**result.report, "executor": executed}
        return result

    # -- the run ---------------------------------------------------------------------------
    def run(self, until: str | None = None, only: tuple[str, ...] | None = None) -> RunResult:
        if until is not None and until not in STAGE_NAMES:
            raise EngineError("--until", until, f"unknown state; choose one of {', '.join(STAGE_NAMES)}")
        stop = STAGE_NAMES.index(until) if until else len(STAGES) - 1
        t0 = time.perf_counter()
        records = []
        try:
            self.check()
            self._sweep()
            self._place_overlay()
            for stage in self.stages[: stop + 1]:
                if only and stage.name not in only:
                    continue
                self.hooks.stage_started(self.seed, stage.name)
                rec = self.run_stage(stage)
                records.append(rec)
                if self._ws is not None:  # splits hold a copy of their table: kept while a later stage reads it
                    later = self.stages[self.stages.index(stage) + 1:]
                    drop_splits(self._ws / "splits", {d for st in later for d in st.reads})
                self.hooks.stage_finished(self.seed, stage.name, rec)
            self._know_upstream()
            result = RunResult(self.ctx, self.runs_root, self.policy_dir, records, time.perf_counter() - t0)
            self._write_run_report(result)
        except OSError as exc:  # a full disk, a read-only or foreign-owned root: one line, not a traceback
            raise from_os_error(exc, self.runs_root) from None
        finally:
            drop_workspace(self._ws)
            self._ws = None
        return result

    def check(self) -> None:
        """Every input checked before the runs root may change (engine/preflight.py)."""
        preflight.check_inputs(self.stages, self.policies, self.seed, self._upstream_files, self.upstream, self.roster_file)
        paths = [self._path(d) for d in contracts.DATASETS]
        paths += [receipt_path(self.runs_root, self.ctx, stage.name) for stage in self.stages]
        paths += [run_report_path(self.runs_root, self.ctx),
                  self.runs_root / "tmp" / "x", self.runs_root / "policy_overlays" / "x"]
        preflight.check_no_links(self.runs_root, paths)

    def _sweep(self) -> None:
        """Temporaries of dead writers: their workspaces, and any left next to this run's outputs
        (by writes without a workspace, or by engines from before workspaces existed)."""
        sweep_workspaces(self.runs_root)
        sweep_siblings({self._path(d).parent for d in contracts.DATASETS}
                       | {receipts_dir(self.runs_root, self.ctx), run_report_path(self.runs_root, self.ctx).parent})

    def _place_overlay(self) -> None:
        """Policy overrides move into a content-addressed folder under the runs root (one folder
        for every later reader, and what check_sealed re-reads), now that the run is accepted."""
        if not self.policy_overrides:
            return
        folder = overlay_dir(self.policy_dir, self.policy_overrides, self.runs_root)
        placed = load_policies(folder, ENGINE_POLICIES)
        if {n: p.sha256 for n, p in placed.items()} != {n: p.sha256 for n, p in self.policies.items()}:
            raise EngineError(folder, "(folder)", "policy bytes changed while the run started")
        self.policy_dir, self.policies, self.policy_overrides = folder, placed, {}

    def _write_run_report(self, result: RunResult, path: Path | None = None) -> None:
        report = {
            "seed": self.seed,
            "manifest_fingerprint": self.ctx.mf,
            "parameter_hash": self.ctx.parameter_hash,
            "run_id": self.ctx.run_id,
            "total_seconds": round(result.seconds, 4),
            "stages": [{"stage": r.name, "status": r.status, "seconds": round(r.seconds, 4), "rows": r.rows,
                        "published": r.published, "report": r.report} for r in result.stages],
        }
        data = json.dumps(report, indent=2, sort_keys=True, default=str).encode()
        if path or self.report_path:
            replace_file(path or self.report_path, data)
            return
        try:
            replace_file(run_report_path(self.runs_root, self.ctx), data, self._workspace())
        except OSError as exc:
            # Timings are not outputs: a root that cannot take them (read-only, full) still reran.
            self.notes.append(f"run report not written ({from_os_error(exc)})")


def _read_receipt(path: Path) -> dict | None:
    """A stage receipt, or None when there is none or it is not one (receipts are replaced
    atomically, so a damaged one was edited by hand: the stage then reruns and the publish law
    judges its outputs)."""
    if not path.is_file():
        return None
    try:
        receipt = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return None
    return receipt if isinstance(receipt, dict) and isinstance(receipt.get("inputs"), dict) else None


def _discard_staged(outputs: dict) -> None:
    for value in outputs.values():
        if isinstance(value, Staged) and Path(value.path).exists():
            Path(value.path).unlink()
