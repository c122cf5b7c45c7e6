"""The upstream stand-in as a pipeline stage: world tables, their 1B bundle and the world card.

The 1B bundle certifies the exact bytes of the three upstream tables (their SHA-256 in
`upstream_manifest.json`), so S0 can refuse tables that changed after the bundle was sealed.
"""

from __future__ import annotations

from .. import contracts, world
from ..bundle import make_bundle
from ..context import Context
from ..datasets import encode
from ..identity import canonical_json, sha256_hex

READS = ()
POLICIES = ("world_policy_v1",)
WRITES = ("merchants", "site_locations", "site_timezones", "validation_bundle_1B", "world_card")
# The world is drawn before any upstream identity exists: its draws are keyed by the reference data.
CONTEXT = ("seed", "created_utc")
TABLES = ("merchants", "site_locations", "site_timezones")


def check_policy(policies: dict) -> None:
    """The world policy's cross-field rules, before a run writes anything."""
    world.check_policy(policies["world_policy_v1"].data)


def run(inputs: dict, policies: dict, ctx: Context) -> dict:
    policy = policies["world_policy_v1"]
    fingerprint = world.world_fingerprint(policy.sha256)
    built = world.build_world(policy.data, ctx.seed, fingerprint)
    encoded = {name: encode(name, getattr(built, name), contracts.get(name).stamp(ctx.seed)) for name in TABLES}
    manifest = {
        "component": "1B.validation",
        "seed": ctx.seed,
        "world_fingerprint": fingerprint,
        "datasets": {name: {"sha256_hex": sha256_hex(encoded[name]), "rows": getattr(built, name).height}
                     for name in TABLES},
    }
    bundle = make_bundle({"upstream_manifest.json": canonical_json(manifest)})
    return {**encoded, "validation_bundle_1B": bundle, "world_card": built.card}
