"""What every state knows about the run it belongs to (identity and the sealed clock)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    seed: int
    manifest_fingerprint: str
    parameter_hash: str
    run_id: str
    created_utc: str  # RFC 3339 with 6 fractional digits and Z, from the policy as_of_utc
    upstream_verbatim: bool = False  # upstream tables are a user's bytes, not published by this engine

    @property
    def mf(self) -> str:
        return self.manifest_fingerprint
