"""What every state knows about the run it belongs to (identity, the draws' identity, the sealed clock)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EngineError


@dataclass(frozen=True)
class Context:
    seed: int
    manifest_fingerprint: str
    parameter_hash: str
    run_id: str
    created_utc: str  # RFC 3339 with 6 fractional digits and Z, from the policy as_of_utc
    upstream_verbatim: bool = False  # upstream tables are a user's bytes, not published by this engine
    # What the 2B RNG streams are keyed by: a digest of the upstream tables' bytes (engine.identity.
    # upstream_identity). Set by the pipeline once the world (or a user's upstream) is in place, so
    # it never depends on policy bytes (common random numbers).
    upstream_identity: str = ""

    @property
    def mf(self) -> str:
        return self.manifest_fingerprint

    @property
    def draws_of(self) -> str:
        """The identity 2B streams are keyed by; a state that draws before it is known is a bug."""
        if not self.upstream_identity:
            raise EngineError("context", "upstream_identity", "not known yet: the upstream tables are not in place")
        return self.upstream_identity
