"""The realism-grade roster as a pipeline stage (built before S0 so that S0 seals it)."""

from __future__ import annotations

from pathlib import Path

from .. import roster
from ..context import Context

READS = ("merchants", "site_timezones")
POLICIES = ("roster_policy_v1", "day_effect_policy_v1")
WRITES = ("s5_arrival_roster", "roster_card")


def day_range(day_effect_policy: dict) -> tuple[str, str]:
    r = day_effect_policy["day_range"]
    return r["start"], r["end"]


def run(inputs: dict, policies: dict, ctx: Context) -> dict:
    days = day_range(policies["day_effect_policy_v1"].data)
    user_file = inputs.get("_user_roster")
    if user_file:
        df = roster.load_user_roster(Path(user_file))
        roster.validate_roster(df, inputs["merchants"], days, where=str(user_file))
        card = roster.roster_card(df, inputs["merchants"], days) if hasattr(roster, "roster_card") else {}
        return {"s5_arrival_roster": df, "roster_card": {**card, "source": "user"}}
    df, card = roster.build_roster(inputs["merchants"], inputs["site_timezones"], policies["roster_policy_v1"].data,
                                   days, ctx.mf, ctx.seed)
    return {"s5_arrival_roster": df, "roster_card": card}
