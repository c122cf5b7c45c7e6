"""The realism-grade roster as a pipeline stage (built before S0 so that S0 seals it)."""

from __future__ import annotations

from pathlib import Path

from .. import roster
from ..calendar import day_range, holiday_effects
from ..context import Context
from ..shards import run_whole

READS = ("merchants", "site_timezones")
POLICIES = ("roster_policy_v1", "day_effect_policy_v1")
WRITES = ("s5_arrival_roster", "roster_card")


SHARDED = True  # every draw is keyed by merchant_id (a user's roster is read whole instead)


def check_policy(policies: dict) -> None:
    """The roster policy's rules against the day grid, before a run writes anything."""
    roster.check_policy(policies["roster_policy_v1"].data, day_range(policies["day_effect_policy_v1"].data))


def run(inputs: dict, policies: dict, ctx: Context) -> dict:
    return run_whole(run_shard, finish, inputs, policies, ctx)


def run_user(inputs: dict, policies: dict, ctx: Context, *, user_roster: Path) -> dict:
    """A user's roster file in place of the built one: validated whole against the merchants (it
    has no merchant order to shard by), published under the contract, its card marked as the user's."""
    days = day_range(policies["day_effect_policy_v1"].data)
    df = roster.load_user_roster(Path(user_roster))
    roster.validate_roster(df, inputs["merchants"], days, where=str(user_roster))
    card = roster.roster_card(df, inputs["merchants"], days)
    return {"s5_arrival_roster": df, "roster_card": {**card, "source": "user"}}


def run_shard(inputs: dict, policies: dict, ctx: Context) -> dict:
    days = policies["day_effect_policy_v1"].data
    df, part = roster.build_roster_shard(inputs["merchants"], inputs["site_timezones"], policies["roster_policy_v1"].data,
                                         day_range(days), ctx.draws_of, ctx.seed, holiday_effects(days))
    return {"s5_arrival_roster": df, "_part": part}


def finish(inputs: dict, policies: dict, ctx: Context, parts: list[dict]) -> dict:
    return {"roster_card": roster.card_of_parts(parts, inputs["merchants"], policies["roster_policy_v1"].data,
                                                day_range(policies["day_effect_policy_v1"].data))}
