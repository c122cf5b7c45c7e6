"""S0 gate and sealed inputs.

Gate law: the 1B bundle's flag must verify (relative clean paths, members hashed in byte-string
path order) before any upstream table is trusted; the bundle's manifest must then name exactly the
bytes of the upstream tables the run is about to read. Seal: one row per input (bundle, tables,
roster, every policy) so every later state can prove it read what S0 saw.
"""

from __future__ import annotations

import json

from ..bundle import verify_members
from ..context import Context
from ..errors import EngineError
from ..policies import ENGINE_POLICY_NAMES

READS = ("validation_bundle_1B",)
POLICIES = ENGINE_POLICY_NAMES
WRITES = ("s0_gate_receipt", "sealed_inputs")
# The receipt names the run it belongs to.
CONTEXT = ("seed", "created_utc", "upstream_identity", "manifest_fingerprint", "parameter_hash", "run_id")

UPSTREAM_MANIFEST = "upstream_manifest.json"
UPSTREAM_TABLES = ("merchants", "site_locations", "site_timezones")


def run(inputs: dict, policies: dict, ctx: Context, *, assets: list[dict], bundle_path: str) -> dict:
    """`assets`: one seal row per dataset S0 seals (the upstream tables and the roster), from the
    pipeline, which knows their digests and paths; `bundle_path`: where the 1B bundle is, for errors
    and its seal row."""
    bundle = inputs["validation_bundle_1B"]
    where = bundle_path  # relative to the runs root: the seal row's path, and where errors point
    flag_digest = verify_members(bundle, where)

    by_id = {a["asset_id"]: a for a in assets}
    manifest = json.loads(bundle[UPSTREAM_MANIFEST]) if UPSTREAM_MANIFEST in bundle else None
    if manifest is None:
        raise EngineError(f"{where}/{UPSTREAM_MANIFEST}", "(file)", "the 1B bundle carries no upstream manifest")
    for table in UPSTREAM_TABLES:
        listed = manifest.get("datasets", {}).get(table, {}).get("sha256_hex")
        if table not in by_id:
            raise EngineError(table, "(dataset)", "upstream table missing")
        if listed != by_id[table]["sha256_hex"]:
            raise EngineError(by_id[table]["path"], "sha256_hex",
                              f"bytes differ from the digest the 1B bundle certifies ({str(listed)[:12]})")

    sealed = sorted(
        [{"asset_id": "validation_bundle_1B", "version_tag": "1B", "sha256_hex": flag_digest, "path": where,
          "partition": f"seed={ctx.seed}/manifest_fingerprint={ctx.mf}"}]
        + [dict(a) for a in assets]
        + [{"asset_id": p.name, "version_tag": str(p.data.get("version_tag", "")), "sha256_hex": p.sha256,
            "path": f"policies/{p.path.name}", "partition": ""} for p in policies.values()],
        key=lambda r: r["asset_id"],
    )
    receipt = {
        "component": "2B.S0",
        "manifest_fingerprint": ctx.mf,
        "seed": ctx.seed,
        "parameter_hash": ctx.parameter_hash,
        "run_id": ctx.run_id,
        "verified_at_utc": ctx.created_utc,
        "upstream_flag_sha256": flag_digest,
        "upstream_identity": ctx.upstream_identity,
        "sealed_inputs": [r["asset_id"] for r in sealed],
        "policies": {p.name: p.sha256 for p in sorted(policies.values(), key=lambda p: p.name)},
    }
    return {"s0_gate_receipt": receipt, "sealed_inputs": sealed}
