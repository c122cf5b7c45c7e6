"""A lane's configuration, read once: the engine policies every seed runs under and the
certification gates it is graded by, both from the lane's policy folder.

Everything a lane does reads these objects (the pipeline of each seed, the scoring, the
preconditions, the trade-off, the what-if, the record), so a lane reads each policy file once and
every part of it sees the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.pipeline import ENGINE_POLICIES
from engine.policies import DEFAULT_POLICY_DIR, Policy, load_policies, load_policy

GATES = "certification_gates_v1"


@dataclass(frozen=True)
class LaneConfig:
    policy_dir: Path
    engine: dict[str, Policy]  # ENGINE_POLICIES, for Pipeline(policies=...)
    gates: Policy  # certification_gates_v1: thresholds score a run, they never change it

    @classmethod
    def load(cls, policy_dir: Path | None = None) -> LaneConfig:
        policy_dir = Path(policy_dir or DEFAULT_POLICY_DIR)
        return cls(policy_dir, load_policies(policy_dir, ENGINE_POLICIES), load_policy(GATES, policy_dir))

    @property
    def gates_policy(self) -> dict:
        return self.gates.data

    def engine_digests(self) -> dict[str, str]:
        return {n: p.sha256 for n, p in self.engine.items()}

    def documents(self) -> dict[str, dict]:
        return {**{n: p.data for n, p in self.engine.items()}, GATES: self.gates.data}

    def grid_days(self) -> int:
        from engine.calendar import grid_days

        return grid_days(self.engine["day_effect_policy_v1"].data)

    def gamma_clip(self) -> tuple[float, float]:
        """S3's clip bounds, for T-S3-03 when the S3 run report has no clipped row count (a skipped stage)."""
        clip = self.engine["day_effect_policy_v1"].data["sigma_gamma_policy_v2"]["gamma_clip"]
        return clip["min"], clip["max"]
