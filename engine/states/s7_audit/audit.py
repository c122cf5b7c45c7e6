"""What both halves of the audit (a merchant shard, and finish) hold: the inputs, the verdicts so
far, and the S1 site table that every family of checks reads."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ...context import Context
from .registry import Outcome, preparation

SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]


@dataclass(frozen=True)
class SiteTables:
    weights: pl.DataFrame  # S1 keys and p_weight, in S1 PK order (the order S2 slices follow)
    timezones: pl.DataFrame  # site_timezones keys and tzid, in the same order
    same_keys: bool  # both hold the same keys row by row (the normal case)
    with_tz: pl.DataFrame  # S1 sites with their tzid (sites without one dropped)


class Audit:
    def __init__(self, inputs: dict, policies: dict, ctx: Context):
        self.inputs = inputs
        self.policies = policies
        self.ctx = ctx
        self.outcomes: dict[str, Outcome] = {}  # filled by the registry as checks run

    def passed(self, check_id: str) -> bool:
        """Whether a check that ran before this one found no problem."""
        return check_id in self.outcomes and not self.outcomes[check_id][0]

    @preparation
    def sites(self) -> SiteTables:
        s1 = self.inputs["s1_site_weights"].select(*SITE_PK, "p_weight").sort(SITE_PK, maintain_order=True)
        tz = self.inputs["site_timezones"].select(*SITE_PK, "tzid").sort(SITE_PK, maintain_order=True)
        same_keys = s1.height == tz.height and s1.select(SITE_PK).equals(tz.select(SITE_PK))
        with_tz = s1.with_columns(tz["tzid"]) if same_keys else s1.join(tz, on=SITE_PK, how="inner", maintain_order="left")
        return SiteTables(s1, tz, same_keys, with_tz)
