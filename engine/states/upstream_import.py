"""A user-supplied upstream as a pipeline stage (instead of the built-in world).

The folder holds `merchants.parquet`, `site_locations.parquet`, `site_timezones.parquet` and a
`validation/` bundle (index.json, _passed.flag, upstream_manifest.json naming the SHA-256 of each
table). Bytes are taken verbatim, so S0 verifies the user's own flag and digests; nothing here
parses a table.
"""

from __future__ import annotations

from ..context import Context

READS = ()
POLICIES = ()
WRITES = ("merchants", "site_locations", "site_timezones", "validation_bundle_1B", "world_card")
CONTEXT = ("seed",)  # the user's bytes, verbatim
TABLES = ("merchants", "site_locations", "site_timezones")


def run(inputs: dict, policies: dict, ctx: Context) -> dict:
    files = inputs["_upstream_files"]
    out = {name: files[f"{name}.parquet"] for name in TABLES}
    out["validation_bundle_1B"] = {rel[len("validation/"):]: data for rel, data in files.items() if rel.startswith("validation/")}
    out["world_card"] = {"source": "user-supplied upstream", "path": inputs["_upstream_dir"]}
    return out
