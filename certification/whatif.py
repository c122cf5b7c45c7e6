"""The upstream what-if (docs/world.md): would another world topology let S4 reach
its gates without bending the data?

The plan freezes 1A/1B/2A; reopening them is the user's decision and needs evidence. For each share
of merchants spanning two or more tz groups in `certification_gates_v1.what_if.multi_tz_shares`,
every seed's world is rebuilt in memory with the world policy's `sites.what_if_multi_tz_share`
set (the same draws: only the moved merchants differ), S1 and S3 run as pure states over it, and
the S4 gates are graded at the topology floor and at the data reference (the raw mix S1 x S3 imply:
what an S4 that changes nothing publishes). Nothing is published and the verdict of record never
uses it.
"""

from __future__ import annotations

import copy
import dataclasses

from engine import contracts, world
from engine.datasets import encode
from engine.identity import sha256_hex, upstream_identity
from engine.policies import Policy
from engine.states import s1_site_weights, s3_day_effects

from . import gates as G
from . import metrics as M


def _world_inputs(policy_data: dict, seed: int, fingerprint: str) -> tuple[dict, str, dict]:
    built = world.build_world(policy_data, seed, fingerprint)
    tables = {name: getattr(built, name) for name in ("merchants", "site_locations", "site_timezones")}
    digests = {name: sha256_hex(encode(name, df, contracts.get(name).stamp(seed))) for name, df in tables.items()}
    return tables, upstream_identity(digests), built.card


def what_if_world(share: float, seed: int, pols: dict[str, Policy], gates_policy: dict, ctx) -> dict:
    """One seed on a world at `share`: the achieved topology and the S4 gates' floor and data bands.
    `pols`: the lane's engine policies (the world, S1's and S3's are read)."""
    data = copy.deepcopy(pols["world_policy_v1"].data)
    data["sites"]["what_if_multi_tz_share"] = share
    tables, ident, card = _world_inputs(data, seed, world.world_fingerprint(pols["world_policy_v1"].sha256))
    wctx = dataclasses.replace(ctx, seed=seed, upstream_identity=ident)
    s1 = s1_site_weights.run(dict(tables), {"alias_layout_policy_v1": pols["alias_layout_policy_v1"]}, wctx)["s1_site_weights"]
    s3 = s3_day_effects.run({"merchants": tables["merchants"], "site_timezones": tables["site_timezones"]},
                            {"day_effect_policy_v1": pols["day_effect_policy_v1"]}, wctx)["s3_day_effects"]
    mix = M.raw_mix(s1, s3, tables["site_timezones"])
    data_md = M.data_reference_days(mix)
    return grade(gates_policy, M.s4_metrics(data_md), M.s4_floor_metrics(data_md), M.s4_group_count_shares(data_md),
                 multi_tz_share(card), card.get("calibration_pass"))


def multi_tz_share(world_card: dict) -> float | None:
    """Share of merchants whose sites span two or more tz groups, from a world card."""
    shares = (world_card.get("topology") or {}).get("merchant_tz_groups_share")
    return None if not shares else 1.0 - shares["1"]


def grade(gates_policy: dict, data_metrics: dict, floor_metrics: dict, group_shares: dict, multi_tz_share,
          calibration_pass) -> dict:
    """The S4 floor-attributed gates at the floor and at the data reference, for one world."""
    out = {"multi_tz_share": multi_tz_share, "group_shares": group_shares, "calibration_pass": calibration_pass, "gates": {}}
    for gate in gates_policy["floor_attributed_gates"]:
        conds = gates_policy["realism_gates"][gate]
        metric = conds[0]["metric"]
        out["gates"][gate] = {"data_band": G.band(conds, data_metrics), "data": data_metrics.get(metric),
                              "floor_band": G.band(conds, floor_metrics), "floor": floor_metrics.get(metric)}
    return out


def what_if(seeds: list[int], policies: dict[str, Policy], gates_policy: dict, contexts: dict, today: dict) -> list[dict]:
    """Rows: today's world (from the lane's own scores) and one per what-if share, each with every seed."""
    rows = [{"world": "today", "share": None, "seeds": today}]
    for share in gates_policy.get("what_if", {}).get("multi_tz_shares", []):
        rows.append({"world": f"multi-tz share {share}", "share": share,
                     "seeds": {str(s): what_if_world(share, s, policies, gates_policy, contexts[s]) for s in seeds}})
    return rows
