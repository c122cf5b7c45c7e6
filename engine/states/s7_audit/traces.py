"""TRACE.TOTALS: the RNG traces agree with the event logs they summarise.

Each shard totals its share of the logs per (module, substream_label); finish merges the shards'
totals into one log's and compares them with the traces, which are read whole."""

from __future__ import annotations

import polars as pl

from .registry import MergeRule, Outcome, shard_check

# Each trace and the event logs it summarises.
TRACES = (("rng_trace_s5", ("rng_event_alias_pick_group", "rng_event_alias_pick_site")),
          ("rng_trace_s6", ("rng_event_cdn_edge_pick",)))
SUBSTREAM = ["module", "substream_label"]
_TOTALS_SCHEMA = {"module": pl.String, "substream_label": pl.String, "events": pl.UInt64, "draws": pl.UInt64,
                  "blocks": pl.UInt64, "first_counter_hi": pl.UInt64, "first_counter_lo": pl.UInt64,
                  "last_counter_hi": pl.UInt64, "last_counter_lo": pl.UInt64}


def _combine(totals: pl.DataFrame) -> pl.DataFrame:
    """Rows of one substream (in counter order) as one: sums, the first's first and the last's last counters."""
    return totals.group_by(SUBSTREAM, maintain_order=True).agg(
        pl.col("events", "draws", "blocks").sum(),
        pl.col("first_counter_hi", "first_counter_lo").first(),
        pl.col("last_counter_hi", "last_counter_lo").last(),
    )


def log_totals(events: pl.DataFrame) -> pl.DataFrame:
    """What a trace must say about one event log: per (module, substream_label), in log order,
    events, draws, blocks, the first event's before counter and the last event's after counter."""
    if events.height == 0:
        return pl.DataFrame(schema=_TOTALS_SCHEMA)
    mod, sub = events["module"], events["substream_label"]
    if bool((mod == mod[0]).all()) and bool((sub == sub[0]).all()):
        # One substream per log (the normal case): plain column totals, no group-by over strings.
        return pl.DataFrame({
            "module": [mod[0]], "substream_label": [sub[0]], "events": [events.height],
            "draws": [int(events["draws"].cast(pl.UInt64).sum())], "blocks": [int(events["blocks"].cast(pl.UInt64).sum())],
            "first_counter_hi": [events["rng_counter_before_hi"][0]], "first_counter_lo": [events["rng_counter_before_lo"][0]],
            "last_counter_hi": [events["rng_counter_after_hi"][-1]], "last_counter_lo": [events["rng_counter_after_lo"][-1]],
        }, schema=_TOTALS_SCHEMA)
    return events.group_by(SUBSTREAM, maintain_order=True).agg(
        pl.len().cast(pl.UInt64).alias("events"),
        pl.col("draws").cast(pl.UInt64).sum(),
        pl.col("blocks").cast(pl.UInt64).sum(),
        pl.col("rng_counter_before_hi").first().alias("first_counter_hi"),
        pl.col("rng_counter_before_lo").first().alias("first_counter_lo"),
        pl.col("rng_counter_after_hi").last().alias("last_counter_hi"),
        pl.col("rng_counter_after_lo").last().alias("last_counter_lo"),
    )


def _shard_totals(inputs: dict, logs: tuple[str, ...]) -> pl.DataFrame | str:
    """This shard's share of a trace, or why it cannot be totalled (finish reports the reason)."""
    try:
        # A substream spread over several logs (not expected) still totals once, in counter order.
        want = _combine(pl.concat([log_totals(inputs[d]) for d in logs]).sort("first_counter_hi", "first_counter_lo"))
        return want.with_columns(pl.col(c).cast(pl.UInt64) for c in want.columns[2:])
    except Exception as exc:  # noqa: BLE001 - the other trace's verdict must not be lost
        return f"{type(exc).__name__}: {exc}"


class _ShardTotals(MergeRule):
    """The shards' totals of one trace as one log's. Shards come in merchant order and a counter's
    hi is its merchant id, so a substream's first event is in the first shard that has events and
    its last in the last; a shard without events has no row and contributes nothing. A shard that
    could not total its logs makes the whole trace uncheckable: its reason stands for all."""

    def merge(self, name, values):
        errors = [v for v in values if isinstance(v, str)]
        if errors:
            return errors[0], []
        try:
            return _combine(pl.concat(values)), []
        except Exception as exc:  # noqa: BLE001 - reported as the trace's reason
            return f"{type(exc).__name__}: {exc}", []


SHARD_TOTALS = _ShardTotals()


def _compare(trace_id: str, trace: pl.DataFrame, want: pl.DataFrame) -> list[str]:
    cols = want.columns
    have = trace.select(cols).with_columns(pl.col(c).cast(pl.UInt64) for c in cols[2:])
    problems = []
    if have.select(SUBSTREAM).is_duplicated().any():
        problems.append(f"{trace_id}: more than one row per (module, substream_label)")
    joined = want.join(have, on=SUBSTREAM, how="full", suffix="_trace", coalesce=True)
    for row in joined.sort(SUBSTREAM).iter_rows(named=True):  # one row per substream: a handful
        label = f"{trace_id}[{row['module']}/{row['substream_label']}]"
        if row["events"] is None:
            # A substream that drew nothing may still be traced, as all zeros.
            if any(row[c + "_trace"] for c in cols[2:]):
                problems.append(f"{label}: trace row without events")
            continue
        if row["events_trace"] is None:
            problems.append(f"{label}: {row['events']} events but no trace row")
            continue
        diffs = [f"{c}: trace {row[c + '_trace']}, logs {row[c]}" for c in cols[2:] if row[c + "_trace"] != row[c]]
        if diffs:
            problems.append(f"{label}: " + ", ".join(diffs))
    return problems


def compare_with_traces(audit, totals: dict) -> list[str]:
    problems = []
    for trace_id, _ in TRACES:
        want = totals[trace_id]
        if isinstance(want, str):
            problems.append(f"{trace_id}: cannot run: {want}")
            continue
        try:
            problems += _compare(trace_id, audit.inputs[trace_id], want)
        except Exception as exc:  # noqa: BLE001 - one malformed trace must not hide the other's verdict
            problems.append(f"{trace_id}: cannot run: {type(exc).__name__}: {exc}")
    return problems


@shard_check("TRACE.TOTALS", facts={trace_id: SHARD_TOTALS for trace_id, _ in TRACES}, then=compare_with_traces,
             pass_detail=lambda f: "trace totals and first/last counters equal the event logs")
def trace_totals(audit) -> Outcome:
    """Trace rows = event totals per (module, substream_label), with the first and last counters."""
    return [], {trace_id: _shard_totals(audit.inputs, logs) for trace_id, logs in TRACES}
