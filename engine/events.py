"""RNG event logs and traces: the law of how they combine.

A trace row per (module, substream_label) counts a stage's events, draws and blocks and names the
first and last Philox counters it used. A stage run in merchant shards produces one trace per
shard; `merge_traces` makes the trace one whole run would have written.
"""

from __future__ import annotations

import polars as pl


def merge_traces(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """An RNG trace of several shards: totals summed per substream, the first counter of the first
    shard with events and the last counter of the last one (shards come in merchant order)."""
    if len(frames) == 1:
        return frames[0]
    both = pl.concat(frames).filter(pl.col("events") > 0)
    key = ["module", "substream_label"]
    merged = both.group_by(key, maintain_order=True).agg(
        pl.col("events", "draws", "blocks").sum(),
        pl.col("first_counter_hi", "first_counter_lo").first(),
        pl.col("last_counter_hi", "last_counter_lo").last(),
    )
    # Substreams that drew nothing anywhere keep their all-zero row, in the first shard's order.
    template = frames[0].select(key)
    return template.join(merged, on=key, how="left", maintain_order="left").with_columns(
        pl.col(c).fill_null(0) for c in frames[0].columns[2:]).select(frames[0].columns).cast(frames[0].schema)
