"""S6 virtual edge router: each virtual arrival picks one CDN edge; other arrivals draw nothing.

Law (docs/states.md, "S6 virtual edge router"; docs/architecture.md, "RNG law"):
- v = virtual_seq = the arrival's 0-based ordinal among its merchant's *virtual* arrivals in
  roster order; u = uniform at counter (merchant_id, v) of stream `2B.S6.edge`; the event records
  before (m, v) and after (m, v + 1), one draw, one block.
- The edge list is the merchant's override list of `virtual_edge_policy_v1` when it has one,
  else the default list; a list is taken in edge_id order and weighted by the policy weights
  through the alias law (the same tables and decode as S2/S5).
- A virtual arrival whose merchant's list is empty stops the state.

`merchants` is read to check that the roster's virtual flag is the merchant's (a virtual arrival
of a non-virtual merchant, or the reverse, would make S6 draw for the wrong arrivals).
Overrides naming a merchant absent from this world are ignored: the world is a function of the
seed, so one sealed policy may meet worlds without that merchant.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .. import alias
from ..context import Context
from ..errors import EngineError
from ..rng import STREAM_S6, Stream
from ..shards import merge_reports, merge_traces, run_whole
from .s5_router import TRACE_SCHEMA, blocked_uniforms, constant_column

READS = ("s5_arrival_roster", "merchants")
POLICIES = ("virtual_edge_policy_v1",)
WRITES = ("rng_event_cdn_edge_pick", "rng_trace_s6", "s6_edge_log")

MODULE = "2B.S6.edge_router"
SUBSTREAM = "cdn_edge_pick"
POLICY = "virtual_edge_policy_v1"
EDGE_FIELDS = ("edge_id", "ip_country", "edge_lat", "edge_lon")


def _sorted_list(edges: list[dict], where: str) -> list[dict]:
    out = sorted(edges, key=lambda e: e["edge_id"].encode())
    ids = [e["edge_id"] for e in out]
    dup = next((a for a, b in zip(ids, ids[1:]) if a == b), None)
    if dup is not None:
        raise EngineError(POLICY, where, f"duplicate edge_id {dup!r} in one edge list")
    return out


class _EdgeLists:
    """Default list (list 0) and override lists (1..) of the policy as one flat alias table."""

    def __init__(self, policy: dict, known_merchants: np.ndarray):
        lists = [_sorted_list(policy["default_edges"], "/default_edges")]
        owners = []
        for i, o in enumerate(policy["merchant_overrides"]):
            m = int(o["merchant_id"])
            if m in owners:
                raise EngineError(POLICY, f"/merchant_overrides/{i}", f"merchant_id {m} has more than one override")
            owners.append(m)
            lists.append(_sorted_list(o["edges"], f"/merchant_overrides/{i}/edges"))
        owners = np.asarray(owners, dtype=np.uint64)
        present = np.isin(owners, known_merchants)
        order = np.argsort(owners[present], kind="stable")
        self.owner_ids = owners[present][order]
        self.owner_list = (np.flatnonzero(present) + 1)[order]  # list number of each owner

        self.sizes = np.array([len(e) for e in lists], dtype=np.int64)
        flat = [e for lst in lists for e in lst]
        self.edge_id = pl.Series("edge_id", [e["edge_id"] for e in flat], dtype=pl.String)
        self.ip_country = pl.Series("ip_country", [e["ip_country"] for e in flat], dtype=pl.String)
        self.lat = np.array([e["edge_lat"] for e in flat], dtype=np.float64)
        self.lon = np.array([e["edge_lon"] for e in flat], dtype=np.float64)
        # Only non-empty lists become alias segments (the alias law needs K >= 1); an empty list
        # is an error only when a virtual arrival actually needs it.
        used = np.flatnonzero(self.sizes > 0)
        self.segment_of_list = np.full(self.sizes.size, -1, dtype=np.int64)
        self.segment_of_list[used] = np.arange(used.size)
        first_entry = np.concatenate(([0], np.cumsum(self.sizes)))
        self.seg_offsets = np.concatenate(([0], np.cumsum(self.sizes[used]))).astype(np.int64)
        self.seg_first = first_entry[used]  # flat index of each segment's first edge
        weights = np.array([e["weight"] for e in flat], dtype=np.float64)
        self.q, self.alias = alias.build_many(weights, self.seg_offsets)

    def list_of(self, merchant_ids: np.ndarray) -> np.ndarray:
        """List number per merchant id: its override when it has one, else 0 (the default)."""
        if self.owner_ids.size == 0:
            return np.zeros(merchant_ids.size, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.owner_ids, merchant_ids), self.owner_ids.size - 1)
        return np.where(self.owner_ids[at] == merchant_ids, self.owner_list[at], 0)


def check_policy(policies: dict) -> None:
    """Edge lists and overrides, checked before a run writes anything: the same construction S6
    uses (unique edge ids per list, one override per merchant, weights the alias law accepts)."""
    _EdgeLists(policies[POLICY].data, np.zeros(0, dtype=np.uint64))


def _check_virtual_flags(roster: pl.DataFrame, merchants: pl.DataFrame) -> None:
    facts = merchants.select(pl.col("merchant_id").cast(pl.UInt64), m_virtual=pl.col("is_virtual"))
    if facts["merchant_id"].is_duplicated().any():
        raise EngineError("merchants", "merchant_id", "duplicate merchant_id")
    j = roster.select(pl.col("merchant_id").cast(pl.UInt64), "utc_day", "is_virtual").join(
        facts, on="merchant_id", how="left", maintain_order="left")
    if j["m_virtual"].null_count():
        r = j.filter(pl.col("m_virtual").is_null()).row(0, named=True)
        raise EngineError("s5_arrival_roster", f"merchant_id={r['merchant_id']}, utc_day={r['utc_day']}",
                          "arrival of a merchant unknown to merchants")
    bad = j["is_virtual"] != j["m_virtual"]
    if bad.any():
        r = j.filter(bad).row(0, named=True)
        raise EngineError("s5_arrival_roster", f"merchant_id={r['merchant_id']}, utc_day={r['utc_day']}",
                          f"arrival is_virtual={r['is_virtual']} but the merchant's is_virtual={r['m_virtual']}")


SHARDED = True  # every draw is keyed by merchant_id: merchant shards give the same events


def run(inputs: dict, policies: dict, ctx: Context) -> dict[str, pl.DataFrame]:
    return run_whole(run_shard, finish, inputs, policies, ctx)


def finish(inputs: dict, policies: dict, ctx: Context, parts: list[dict]) -> dict:
    return {"rng_trace_s6": merge_traces([p["trace"] for p in parts]),
            "_report": merge_reports([p["report"] for p in parts])}


def run_shard(inputs: dict, policies: dict, ctx: Context) -> dict[str, pl.DataFrame]:
    policy = policies[POLICY].data
    roster, merchants = inputs["s5_arrival_roster"], inputs["merchants"]
    _check_virtual_flags(roster, merchants)
    lists = _EdgeLists(policy, merchants["merchant_id"].cast(pl.UInt64).to_numpy())

    # Virtual arrivals in (merchant_id, roster position) order: the event log's key order, and
    # a stable sort makes the run position inside a merchant its virtual_seq.
    rows = np.flatnonzero(roster["is_virtual"].to_numpy())
    mid = roster["merchant_id"].cast(pl.UInt64).to_numpy()[rows]
    order = np.argsort(mid, kind="stable")
    rows, mid = rows[order], mid[order]
    n = rows.size
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = mid[1:] != mid[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    vseq = (np.arange(n) - run_start).astype(np.uint64)

    lst = lists.list_of(mid)
    seg = lists.segment_of_list[lst]
    if np.any(seg < 0):
        r = int(np.flatnonzero(seg < 0)[0])
        where = "default_edges" if lst[r] == 0 else "merchant_overrides"
        raise EngineError(POLICY, f"merchant_id={mid[r]}",
                          f"virtual arrival but the merchant's edge list ({where}) is empty")

    u = blocked_uniforms(Stream(ctx.draws_of, ctx.seed, STREAM_S6), mid, vseq)
    edge = lists.seg_first[seg] + alias.sample_many(lists.q, lists.alias, lists.seg_offsets, seg, u)

    mid_s = pl.Series("merchant_id", mid, dtype=pl.UInt64)
    vseq_s = pl.Series("virtual_seq", vseq, dtype=pl.UInt64)
    attrs = [lists.edge_id.gather(edge), lists.ip_country.gather(edge),
             pl.Series("edge_lat", lists.lat[edge], dtype=pl.Float64), pl.Series("edge_lon", lists.lon[edge], dtype=pl.Float64)]
    ones = constant_column("draws", 1, n, pl.UInt32)
    events = pl.DataFrame([
        constant_column("module", MODULE, n, pl.String), constant_column("substream_label", SUBSTREAM, n, pl.String),
        mid_s, vseq_s, roster["utc_day"].cast(pl.String).gather(rows).alias("utc_day"), *attrs,
        mid_s.alias("rng_counter_before_hi"), vseq_s.alias("rng_counter_before_lo"),
        mid_s.alias("rng_counter_after_hi"), pl.Series("rng_counter_after_lo", vseq + np.uint64(1), dtype=pl.UInt64),
        ones, ones.alias("blocks"),
    ])
    trace = pl.DataFrame([{
        "module": MODULE, "substream_label": SUBSTREAM, "events": n, "draws": n, "blocks": n,
        "first_counter_hi": int(mid[0]) if n else 0, "first_counter_lo": 0,
        "last_counter_hi": int(mid[-1]) if n else 0, "last_counter_lo": int(vseq[-1]) + 1 if n else 0,
    }], schema=TRACE_SCHEMA)

    out = {"rng_event_cdn_edge_pick": events}
    if policy.get("edge_log", False):
        out["s6_edge_log"] = pl.DataFrame([
            mid_s, vseq_s, roster["utc_timestamp"].cast(pl.String).gather(rows).alias("utc_timestamp"), *attrs])
    out["_part"] = {"trace": trace, "report": {"arrivals": int(roster.height), "virtual_arrivals": int(n),
                                               "override_merchants": int(lists.owner_ids.size)}}
    return out
