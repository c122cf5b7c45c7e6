"""S8 validation bundle: seal the audited evidence so consumers can prove what they read.

The bundle holds canonical-JSON copies of S0's receipt and sealed inputs and of the S7 report,
`outputs.json` (the path and SHA-256 of every output the run published for this seed: upstream
tables, roster, S1..S6 datasets, event logs, traces, cards, S0/S7 evidence), plus `index.json` and
`_passed.flag` built by the one bundle law (`engine.bundle.make_bundle`). So the flag seals the
routed data too: `seg2b verify` re-hashes every listed output ("no PASS, no read" covers the data,
not only the evidence). The digests come from the pipeline, which knows them from its receipts
(the `published` argument); this state never decodes the datasets they name.
It is published only when the S7 report says PASS: a bundle is a claim that the run is valid,
so a failed audit must leave no flag behind (the FAIL report itself is still on disk as evidence).

Deviation from docs/states.md, documented: the contract path is per seed
(`validation/seed={seed}/manifest_fingerprint={mf}/`) rather than one folder per mf holding every
seed's report, because the pipeline runs one seed at a time and a shared folder would have to be
rewritten by each seed (breaking write-once publishing). The cross-seed view is the harness's job.
"""

from __future__ import annotations

from ..bundle import OUTPUTS, make_bundle, outputs_member
from ..context import Context
from ..errors import EngineError
from ..identity import canonical_json

READS = ("s0_gate_receipt", "sealed_inputs", "s7_audit_report")
POLICIES = ()
WRITES = ("validation_bundle_2B",)

# Member file names inside the bundle: the names the datasets have in their own partitions.
MEMBERS = {
    "s0_gate_receipt": "s0_gate_receipt_2B.json",
    "sealed_inputs": "sealed_inputs_2B.json",
    "s7_audit_report": "s7_audit_report.json",
}


def run(inputs: dict, policies: dict, ctx: Context, *, published: list[dict] | None, bundle_path: str) -> dict:
    """`published`: {dataset_id, path, sha256_hex} of every output before S8; `bundle_path`: where
    this bundle is published, relative to the runs root (its outputs member names paths from there)."""
    for dataset_id in READS:
        if dataset_id not in inputs:
            raise EngineError(dataset_id, "(dataset)", "input missing")
    report = inputs["s7_audit_report"]
    if not isinstance(report, dict):
        raise EngineError("s7_audit_report", "(document)", "the S7 report is not a JSON object")
    _check_identity(report, ctx)
    summary = report.get("summary")
    overall = summary.get("overall") if isinstance(summary, dict) else None
    if overall != "PASS":
        raise EngineError("s7_audit_report", "summary.overall", "S7 did not PASS; no bundle is published")
    checks = report.get("checks")
    failed = [c.get("id") for c in checks if not isinstance(c, dict) or c.get("status") != "PASS"] \
        if isinstance(checks, list) and checks else None
    if failed is None or failed:
        # A summary that contradicts its own checks is not a PASS either.
        raise EngineError("s7_audit_report", "checks", f"summary says PASS but the checks do not agree: {failed or 'no checks'}")
    if not published:
        raise EngineError("validation_bundle_2B", OUTPUTS, "the digests of the run's outputs were not passed; "
                          "a bundle must vouch for the routed data, not only for the evidence")
    # Canonical JSON gives the same bytes the pipeline published for these inputs, so the bundle's
    # member digests equal the digests of the datasets themselves.
    members = {MEMBERS[d]: canonical_json(inputs[d]) for d in READS}
    members[OUTPUTS] = outputs_member(bundle_path, published)
    return {"validation_bundle_2B": make_bundle(members)}


def _check_identity(report: dict, ctx: Context) -> None:
    """The report being sealed must be this run's: a stale or foreign PASS must not be bundled."""
    for key, want in (("manifest_fingerprint", ctx.manifest_fingerprint), ("seed", ctx.seed)):
        if report.get(key) != want:
            raise EngineError("s7_audit_report", key, f"report is for {report.get(key)!r}, this run is {want!r}")
