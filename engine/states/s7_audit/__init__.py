"""S7 audit: an RNG-free, full (never sampled) re-check of S2..S6 against their laws.

Every check is recomputed from the published datasets alone and reported as {id, status, detail};
the report is written whether it passes or fails, because a FAIL report is evidence too. A check
whose input is malformed fails with the reason instead of stopping the audit, so one bad dataset
cannot hide the verdict of the others. Only an input that is missing or of the wrong kind (the
pipeline could not read it) raises.

Each check is declared where it is implemented (see registry.py for how), grouped by what it
looks at:
  sealed.py        S0.RECEIPT, POLICY.DIGESTS, S1.SITE_KEYSET: the receipt, policies, site keys
  alias_tables.py  S2.*: the alias index, blob, slices, and decode parity with S1
  day_effects.py   S3.*, S3S4.KEYSET, S4.*: day effects and the group mix (per merchant shard)
  routing.py       S5.*, S6.*: the routing event logs against the roster (per merchant shard)
  traces.py        TRACE.TOTALS: the RNG traces against the event logs
registry.CHECKS lists them in run order; the report lists them by id.

Sharding (SHARDED = True): at 100,000 merchants the roster and event logs do not fit in memory,
so the pipeline calls run_shard once per inclusive merchant_id range (ranges ascending, together
the whole u64 space), with every table that has a merchant_id column cut to the range, and then
finish once with the partials in shard order. Every law from S3 on is per merchant, so those
checks run whole inside a shard; the S0/S1/S2 checks read only small global inputs and run once
in finish, which also merges the shards' facts. One limit: a shard sees its own arrivals in
global order, so S5.ROSTER proves time order within each shard (which is what the ordinals need:
every merchant's arrivals are in one shard) but not the interleaving across shards. run() is the
one-shard case.

Speed (about a second for a million arrivals): keys are packed into single int64 numbers
(keys.py), so joins of millions of rows become array lookups.
"""

from __future__ import annotations

import polars as pl

from ...context import Context
from ...errors import EngineError

# Importing a check module registers its checks. Checks run in registration order, and a check
# that consults another's verdict is declared after it in the same module or in one that imports
# the other's, so that order never depends on the order of these imports.
from .alias_tables import AliasTables
from .registry import Part, run_shard_checks, settle
from .routing import Routing
from .traces import trace_totals  # noqa: F401 - registers TRACE.TOTALS

READS = (
    "s0_gate_receipt",
    "sealed_inputs",
    "s1_site_weights",
    "s2_alias_index",
    "s2_alias_blob",
    "s3_day_effects",
    "s4_group_weights",
    "site_timezones",
    "s5_arrival_roster",
    "rng_event_alias_pick_group",
    "rng_event_alias_pick_site",
    "rng_trace_s5",
    "rng_event_cdn_edge_pick",
    "rng_trace_s6",
)
POLICIES = ()
WRITES = ("s7_audit_report",)
# The report names the run it belongs to.
CONTEXT = ("seed", "created_utc", "upstream_identity", "manifest_fingerprint", "parameter_hash", "run_id")
SHARDED = True
# What each half reads: run_shard the per-merchant tables (cut to its range), finish the small
# global inputs (whole) and the traces.
SHARD_READS = ("s1_site_weights", "site_timezones", "s3_day_effects", "s4_group_weights", "s5_arrival_roster",
               "rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_event_cdn_edge_pick")
FINISH_READS = ("s0_gate_receipt", "sealed_inputs", "s1_site_weights", "site_timezones", "s2_alias_index",
                "s2_alias_blob", "rng_trace_s5", "rng_trace_s6")

COMPONENT = "2B.S7"

_JSON_INPUTS = {"s0_gate_receipt": dict, "s2_alias_index": dict, "sealed_inputs": (list, dict)}


class ShardAudit(Routing):
    """The per-merchant checks (S3 on) over one merchant range."""


class FinishAudit(AliasTables):
    """The checks over the small global inputs, and the shards' verdicts merged."""


def run(inputs: dict, policies: dict, ctx: Context) -> dict:
    """The whole audit in one shard."""
    _require_readable(inputs, READS)
    return finish(inputs, policies, ctx, [run_shard(inputs, policies, ctx)["_part"]])


def run_shard(inputs: dict, policies: dict, ctx: Context) -> dict:
    """The per-merchant checks over one merchant range: problems and facts, never per-row data."""
    _require_readable(inputs, SHARD_READS)
    return {"_part": run_shard_checks(ShardAudit(inputs, policies or {}, ctx))}


def finish(inputs: dict, policies: dict, ctx: Context, parts: list[Part]) -> dict:
    """The global checks, the shards' verdicts merged, and the report."""
    _require_readable(inputs, FINISH_READS)
    if not parts:
        raise EngineError("s7_audit_report", "(shards)", "no shard partials to merge; run_shard runs at least once")
    checks, metrics = settle(FinishAudit(inputs, policies or {}, ctx), parts)
    failed = sum(c["status"] == "FAIL" for c in checks)
    return {"s7_audit_report": {
        "component": COMPONENT,
        "manifest_fingerprint": ctx.manifest_fingerprint,
        "seed": ctx.seed,
        "parameter_hash": ctx.parameter_hash,
        "run_id": ctx.run_id,
        "created_utc": ctx.created_utc,
        "checks": checks,
        "metrics": dict(sorted({"audit_mode": "full", **metrics}.items())),
        "summary": {"overall": "FAIL" if failed else "PASS", "passed": len(checks) - failed, "failed": failed},
    }}


def _require_readable(inputs: dict, dataset_ids) -> None:
    # Unreadable (absent or of the wrong kind) is the pipeline's failure, not a finding about the data.
    for dataset_id in dataset_ids:
        if dataset_id not in inputs:
            raise EngineError(dataset_id, "(dataset)", "input missing; S7 audits every upstream output")
        value = inputs[dataset_id]
        if dataset_id == "s2_alias_blob":
            ok = isinstance(value, (bytes, bytearray, memoryview))
        elif dataset_id in _JSON_INPUTS:
            ok = isinstance(value, _JSON_INPUTS[dataset_id])
        else:
            ok = isinstance(value, pl.DataFrame)
        if not ok:
            raise EngineError(dataset_id, "(value)", f"unreadable input of type {type(value).__name__}")
