"""S7 audit: an RNG-free, full (never sampled) re-check of S2..S6 against their laws.

Every check is recomputed from the published datasets alone and reported as {id, status, detail};
the report is written whether it passes or fails, because a FAIL report is evidence too. A check
whose input is malformed fails with the reason instead of stopping the audit, so one bad dataset
cannot hide the verdict of the others. Only an input that is missing or of the wrong kind (the
pipeline could not read it) raises.

Checks (ids sorted in the report):
  S0.RECEIPT         receipt identity (mf, seed, sealed clock) and sealed_inputs well-formed
  POLICY.DIGESTS     every policy given still has the digest S0 sealed (object and fresh file bytes)
  S1.SITE_KEYSET     S1 and site_timezones hold the same unique site keys
  S2.INDEX_HEADER    index layout fields, counts, clock, policy digest, merchants ascending
  S2.BLOB_DIGEST     SHA-256 and size of the whole blob equal the index
  S2.SLICE_BOUNDS    slices inside the blob, aligned, length 16 + 8K, no overlap, zero padding
  S2.SLICE_HEADERS   slice header [K, 32, 0, 0] with K = sites, q in [1, 2^32 - 1], alias < K
  S2.SLICE_CHECKSUMS SHA-256 of every slice equals its index checksum
  S2.COVERAGE        index merchants and site counts equal S1's
  S2.DECODE_PARITY   decoded alias probabilities equal S1 p_weight within 1.2e-7 for every site
  S3.COVERAGE        S3 keys = merchants x their sorted site tz groups x the full day grid
  S3.DOMAIN          gamma and sigma_gamma finite and > 0
  S3.COUNTERS        S3 counters: hi = merchant_id, lo = day index x n_groups + group index, unique
  S3S4.KEYSET        S3 and S4 hold the same unique (merchant_id, utc_day, tz_group_id) keys
  S4.GAMMA_ECHO      S4 gamma equals S3 gamma bit for bit
  S4.MASS            per merchant-day |sum p_group - 1| <= 1e-9, every p_group in [0, 1]
  S4.BASE_SHARE      base_share = sum of S1 p_weight over the merchant's sites in the group (1e-12)
  S5.ROSTER          roster in utc_timestamp order, merchants known to S1, utc_day = date of the timestamp
  S5.EVENT_COUNT     exactly one group and one site event per arrival, none else
  S5.COUNTERS        group (m, 2k) -> (m, 2k + 1), site (m, 2k + 1) -> (m, 2k + 2), 1 draw, 1 block
  S5.GROUP_DAY       every event's utc_day is its arrival's roster day
  S5.GROUP_ECHO      the picked group exists in S4 for the merchant-day and p_group is echoed exactly
  S5.SITE_KEY        the picked site is a site of the merchant and site_id follows the hash law
  S5.SITE_TZ         the picked site (one of the merchant's) has tzid = site event's group = group event's group
  S6.EVENT_COUNT     exactly one edge event per virtual arrival, none for other arrivals
  S6.COUNTERS        edge (m, v) -> (m, v + 1), 1 draw, 1 block
  S6.DAY             every edge event's utc_day is its virtual arrival's roster day
  TRACE.TOTALS       trace rows = event totals per (module, substream_label), first/last counters

Sharding (SHARDED = True): at 100,000 merchants the roster and event logs do not fit in memory,
so the pipeline calls run_shard once per inclusive merchant_id range (ranges ascending, together
the whole u64 space), with every table that has a merchant_id column cut to the range, and then
finish once with the partials in shard order. Every law from S3 on is per merchant (counter hi
is the merchant id, ordinals count one merchant's arrivals), so those checks run whole inside a
shard; the S0/S1/S2 checks read only small global inputs and run once in finish. A shard check
returns its problems and numeric facts (counts summed, worst deltas maxed, the day grid equal in
every shard), and finish writes the PASS details and metrics from the merged facts only: a valid
run gives the same report byte for byte whatever the number of shards. TRACE.TOTALS merges each
shard's per-substream totals (first counters from the first shard with events, last counters
from the last) before comparing with the traces. One limit: a shard sees its own arrivals in
global order, so S5.ROSTER proves time order within each shard (which is what the ordinals
need: every merchant's arrivals are in one shard) but not the interleaving across shards.
run() is the one-shard case.

Speed (about a second for a million arrivals): keys are packed into single int64 numbers
((merchant index, epoch day, tz index) for S3/S4 rows, (merchant index, ordinal) for events), so
joins of millions of events become array lookups; an event log in contract order is matched to the
roster by position, and only a log that does not line up is looked up key by key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from ... import alias
from ...context import Context
from ...errors import EngineError
from ...identity import sha256_hex, site_ids
from ...rng import STREAM_S3
from .arrays import epoch_days, index_in, index_in_runs, only_in, ordinal_in_runs, sorted_unique, take, unique_counts

READS = (
    "s0_gate_receipt",
    "sealed_inputs",
    "s1_site_weights",
    "s2_alias_index",
    "s2_alias_blob",
    "s3_day_effects",
    "s4_group_weights",
    "site_timezones",
    "s5_arrival_roster",
    "rng_event_alias_pick_group",
    "rng_event_alias_pick_site",
    "rng_trace_s5",
    "rng_event_cdn_edge_pick",
    "rng_trace_s6",
)
POLICIES = ()
WRITES = ("s7_audit_report",)
SHARDED = True
# What each half reads: run_shard the per-merchant tables (cut to its range), finish the small
# global inputs (whole) and the traces.
SHARD_READS = ("s1_site_weights", "site_timezones", "s3_day_effects", "s4_group_weights", "s5_arrival_roster",
               "rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_event_cdn_edge_pick")
FINISH_READS = ("s0_gate_receipt", "sealed_inputs", "s1_site_weights", "site_timezones", "s2_alias_index",
                "s2_alias_blob", "rng_trace_s5", "rng_trace_s6")

COMPONENT = "2B.S7"
DECODE_TOL = 1.2e-7
MASS_TOL = 1e-9
BASE_SHARE_TOL = 1e-12
LAYOUT_VERSION = "2B.alias.blob.v1"
MIN_ALIGNMENT = 8  # the layout asks for 8-byte alignment at least; the index declares the actual value
GRID_BITS = 24
Q_BITS = 32
EXAMPLES = 3  # offending keys quoted per failed check: enough to debug, small enough to read

SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]
COUNTER_COLS = ["rng_counter_before_hi", "rng_counter_before_lo", "rng_counter_after_hi",
                "rng_counter_after_lo", "draws", "blocks"]
TRACES = (("rng_trace_s5", ("rng_event_alias_pick_group", "rng_event_alias_pick_site")),
          ("rng_trace_s6", ("rng_event_cdn_edge_pick",)))

_JSON_INPUTS = {"s0_gate_receipt": dict, "s2_alias_index": dict, "sealed_inputs": (list, dict)}


class _Blocked(Exception):
    """A check cannot run because something it needs is malformed; the check fails with this reason."""


def run(inputs: dict, policies: dict, ctx: Context) -> dict:
    """The whole audit in one shard."""
    _require_readable(inputs, READS)
    return finish(inputs, policies, ctx, [run_shard(inputs, policies, ctx)["_part"]])


def run_shard(inputs: dict, policies: dict, ctx: Context) -> dict:
    """The per-merchant checks over one merchant range: problems and facts, never per-row data."""
    _require_readable(inputs, SHARD_READS)
    return {"_part": _ShardAudit(inputs, policies or {}, ctx).part()}


def finish(inputs: dict, policies: dict, ctx: Context, parts: list) -> dict:
    """The global checks, the shards' verdicts merged, and the report."""
    _require_readable(inputs, FINISH_READS)
    if not parts:
        raise EngineError("s7_audit_report", "(shards)", "no shard partials to merge; run_shard runs at least once")
    return {"s7_audit_report": _GlobalAudit(inputs, policies or {}, ctx).report(parts)}


def _require_readable(inputs: dict, dataset_ids) -> None:
    # Unreadable (absent or of the wrong kind) is the pipeline's failure, not a finding about the data.
    for dataset_id in dataset_ids:
        if dataset_id not in inputs:
            raise EngineError(dataset_id, "(dataset)", "input missing; S7 audits every upstream output")
        value = inputs[dataset_id]
        if dataset_id == "s2_alias_blob":
            ok = isinstance(value, (bytes, bytearray, memoryview))
        elif dataset_id in _JSON_INPUTS:
            ok = isinstance(value, _JSON_INPUTS[dataset_id])
        else:
            ok = isinstance(value, pl.DataFrame)
        if not ok:
            raise EngineError(dataset_id, "(value)", f"unreadable input of type {type(value).__name__}")


# ----------------------------------------------------------------------------------------------
# small vectorised helpers


def _examples(rows) -> str:
    rows = list(rows)[:EXAMPLES]
    return "; e.g. " + ", ".join(str(r) for r in rows) if rows else ""


def _num(x) -> float | None:
    """A JSON-safe metric: canonical JSON forbids NaN and infinities, so those become null."""
    x = float(x)
    return x if np.isfinite(x) else None


SEQ_BITS = 40  # an event key is (merchant index << 40 | ordinal): room for 2^40 arrivals per merchant


def _keys_from_counts(counts: np.ndarray) -> np.ndarray:
    """Sorted keys (m << 40 | k) for k = 0..counts[m] - 1 of every merchant index m."""
    m = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    return (m << SEQ_BITS) | (np.arange(len(m), dtype=np.int64) - first[m])


def _same_days(r_mi: np.ndarray, r_day: np.ndarray, e_mi: np.ndarray, e_day: np.ndarray) -> bool:
    """Whether events in (merchant, k) order carry exactly the days of the roster's arrivals.

    Holds for a roster in time order, where each merchant's days never decrease with k: two
    non-decreasing sequences with the same values counted alike are the same sequence, so it is
    enough that event days never decrease within a merchant and that every (merchant, day) is
    counted alike in both. No arrival has to be moved to compare them.
    """
    if len(e_day) != len(r_day) or (e_day < 0).any() or (r_day < 0).any():
        return False
    if len(e_day) == 0:
        return True
    if ((e_mi[1:] == e_mi[:-1]) & (e_day[1:] < e_day[:-1])).any():
        return False
    lo = min(int(r_day.min()), int(e_day.min()))
    span = max(int(r_day.max()), int(e_day.max())) - lo + 1
    n_m = int(max(r_mi.max(), e_mi.max())) + 1
    if span * n_m > 1 << 26:  # a count table too large to be worth it: let the caller compare rows
        return False
    size = span * n_m
    return np.array_equal(np.bincount(r_mi * span + (r_day - lo), minlength=size),
                          np.bincount(e_mi * span + (e_day - lo), minlength=size))


@dataclass
class _Match:
    """An event log set against the arrivals it must cover, both keyed (merchant index, ordinal)."""

    pos: np.ndarray  # per event: row of the expected arrival it covers, -1 when it covers none
    aligned: bool  # the log lines up with the expectation row by row (the fast, normal case)
    missing: int
    extra: int
    duplicated: int
    missing_examples: list
    extra_examples: list
    duplicated_examples: list

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicated)


def _match(ev_key: np.ndarray, exp_key: np.ndarray, name_ev, name_exp) -> _Match:
    """Match event keys to the strictly increasing expected keys; name_* make readable examples."""
    if len(ev_key) == len(exp_key) and np.array_equal(ev_key, exp_key):
        return _Match(np.arange(len(ev_key)), True, 0, 0, 0, [], [], [])
    # The log does not line up: find out exactly what differs (only a corrupt log gets here).
    pos = np.where(ev_key >= 0, index_in(exp_key, ev_key), -1)
    counts = np.bincount(pos[pos >= 0], minlength=len(exp_key))
    missing, dup = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
    extra = np.flatnonzero(pos < 0)
    return _Match(pos, False, len(missing), len(extra), len(dup),
                  name_exp(missing[:EXAMPLES]), name_ev(extra[:EXAMPLES]), name_exp(dup[:EXAMPLES]))


def _match_detail(what: str, m: _Match, n_expected: int, n_events: int) -> str:
    parts = [f"{n_events} {what} events for {n_expected} expected"]
    if m.missing:
        parts.append(f"{m.missing} expected without an event{_examples(m.missing_examples)}")
    if m.extra:
        parts.append(f"{m.extra} events matching no expected arrival{_examples(m.extra_examples)}")
    if m.duplicated:
        parts.append(f"{m.duplicated} keys with more than one event{_examples(m.duplicated_examples)}")
    return "; ".join(parts)


def _sandwich_day_faults(r: pl.DataFrame) -> int:
    """Rows whose utc_day is not the date of utc_timestamp, for a roster already in timestamp order.

    With timestamps sorted, a run of equal utc_day values whose first and last timestamps both
    start with that day has every timestamp in between starting with it too (strings between two
    strings that share a prefix share it), so only the run ends need reading. Any doubt falls back
    to comparing every row.
    """
    day, ts = r["utc_day"], r["utc_timestamp"]
    if r.height == 0:
        return 0
    if day.is_sorted():
        starts = np.flatnonzero((day != day.shift(1)).fill_null(True).to_numpy())
        ends = np.r_[starts[1:] - 1, r.height - 1]
        run_day = day.gather(starts)
        ok = (ts.gather(starts).str.starts_with(run_day) & ts.gather(ends).str.starts_with(run_day)
              & (run_day.str.len_bytes() == 10))
        if ok.all():
            return 0
    return int((day != ts.str.slice(0, 10)).sum())


def _counter_faults(events: pl.DataFrame, seq_col: str, lo_before_of, n_steps: int = 1) -> np.ndarray:
    """Rows whose counters break the law: hi = merchant_id, lo before as given, after = before + 1."""
    m = events["merchant_id"].to_numpy()
    seq = events[seq_col].to_numpy()
    c = {name: events[name].to_numpy() for name in COUNTER_COLS}
    with np.errstate(over="ignore"):
        lo = lo_before_of(seq)
        return ((c["rng_counter_before_hi"] != m) | (c["rng_counter_after_hi"] != m)
                | (c["rng_counter_before_lo"] != lo) | (c["rng_counter_after_lo"] != lo + np.uint64(n_steps))
                | (c["draws"] != 1) | (c["blocks"] != 1))


def _duplicate_counters(frames: list[pl.DataFrame]) -> int:
    both = pl.concat([f.select("rng_counter_before_hi", "rng_counter_before_lo") for f in frames])
    return int(both.select(pl.struct(pl.all()).is_duplicated().sum()).item())


# ----------------------------------------------------------------------------------------------
# shards: what a shard hands back, and how finish merges it


@dataclass
class _Part:
    """One shard's verdicts: per check (problems, facts or None when it could not run), and per
    trace its logs' totals (or why they could not be totalled). Small: no per-row data."""

    checks: dict[str, tuple[list[str], dict | None]]
    trace: dict[str, pl.DataFrame | str]


# The per-merchant checks, in run order: (id, _ShardAudit method, PASS detail from merged facts).
# The details are written only here, from facts summed (or maxed) over shards, so that they do not
# depend on where the shard boundaries fall.
_SHARD_CHECKS = (
    ("S3.COVERAGE", "_c_s3_coverage",
     lambda f: f"{f['groups'] * f['days']} rows = {f['groups']} merchant groups x {f['days']} days"),
    ("S3.DOMAIN", "_c_s3_domain", lambda f: f"{f['rows']} rows with finite positive gamma and sigma_gamma"),
    ("S3.COUNTERS", "_c_s3_counters", lambda f: f"{f['counters']} S3 counters follow the law"),
    ("S3S4.KEYSET", "_c_s3s4_keyset", lambda f: f"{f['s3_keys']} keys, identical in S3 and S4"),
    ("S4.GAMMA_ECHO", "_c_gamma_echo", lambda f: f"{f['echoed']} S4 gammas equal S3 exactly"),
    ("S4.MASS", "_c_mass",
     lambda f: f"{f['merchant_days']} merchant-days sum to 1 within {MASS_TOL}; max {f['max_delta']:.3e}"),
    ("S4.BASE_SHARE", "_c_base_share",
     lambda f: f"{f['rows']} base shares recomputed within {BASE_SHARE_TOL}; max {f['max_delta']:.3e}"),
    ("S5.ROSTER", "_c_roster", lambda f: f"{f['arrivals']} arrivals in time order, days consistent, merchants known"),
    ("S5.EVENT_COUNT", "_c_s5_count", lambda f: f"{f['arrivals']} arrivals, exactly one group and one site event each"),
    ("S5.COUNTERS", "_c_s5_counters", lambda f: f"{f['counters']} counters unique and on the law"),
    ("S5.GROUP_DAY", "_c_s5_day", lambda f: "every S5 event carries its arrival's roster day"),
    ("S5.GROUP_ECHO", "_c_s5_echo", lambda f: f"{f['picks']} group picks exist in S4 with p_group echoed"),
    ("S5.SITE_KEY", "_c_s5_site_key", lambda f: f"{f['events']} site events name real sites of their merchant"),
    ("S5.SITE_TZ", "_c_s5_site_tz", lambda f: f"{f['events']} picked sites lie in the picked tz group"),
    ("S6.EVENT_COUNT", "_c_s6_count",
     lambda f: f"{f['virtual']} virtual arrivals, exactly one edge event each, none for other arrivals"),
    ("S6.COUNTERS", "_c_s6_counters", lambda f: f"{f['events']} edge counters unique and on the law"),
    ("S6.DAY", "_c_s6_day", lambda f: "every edge event carries its virtual arrival's roster day"),
)
# report metric -> (check id, merged fact)
_SHARD_METRICS = {
    "s3_rows": ("S3.COVERAGE", "rows"),
    "merchant_groups": ("S3.COVERAGE", "groups"),
    "days": ("S3.COVERAGE", "days"),
    "s4_rows": ("S3S4.KEYSET", "s4_rows"),
    "gamma_echo_mismatches": ("S4.GAMMA_ECHO", "mismatches"),
    "merchant_days": ("S4.MASS", "merchant_days"),
    "mass_max_abs_delta": ("S4.MASS", "max_delta"),
    "base_share_max_abs_delta": ("S4.BASE_SHARE", "max_delta"),
    "arrivals": ("S5.ROSTER", "arrivals"),
    "virtual_arrivals": ("S5.ROSTER", "virtual"),
    "s5_group_events": ("S5.EVENT_COUNT", "group_events"),
    "s5_site_events": ("S5.EVENT_COUNT", "site_events"),
    "s6_edge_events": ("S6.EVENT_COUNT", "edge_events"),
}
# How facts merge: counts (the default) are summed, exactly. Worst deltas are maxed, which is
# exact for floats too (a shard without rows says None; NaN, a failed row, is ignored unless
# nothing else is known, as np.nanmax does). A constant must be the same in every shard that
# knows it (None: this shard cannot tell, e.g. no S3 row and no policy grid).
_MAX_FACTS = {"max_delta"}
_SAME_FACTS = {"days", "first_day"}


def _merge_facts(facts: list[dict | None]) -> tuple[dict | None, list[str]]:
    """The shards' facts merged, and the problems merging found; None when a shard has no facts."""
    if any(f is None for f in facts):
        return None, []
    merged, problems = {}, []
    for name in facts[0]:
        values = [f[name] for f in facts]
        if name in _SAME_FACTS:
            known = list(dict.fromkeys(v for v in values if v is not None))
            if len(known) > 1:
                problems.append(f"shards disagree on {name}: {known[:EXAMPLES]}")
            elif not known:
                problems.append(f"no shard can establish {name}")
            merged[name] = known[0] if len(known) == 1 else None  # None: no metric either
        elif name in _MAX_FACTS:
            seen = [v for v in values if v is not None]
            finite = [v for v in seen if not np.isnan(v)]
            merged[name] = max(finite) if finite else (float("nan") if seen else 0.0)
        else:
            merged[name] = sum(values)
    return merged, problems


def _join_shard_problems(per_shard: list[list[str]]) -> list[str]:
    """The problems of the first few failing shards (repeats dropped), and how many shards more."""
    out: list[str] = []
    shown = more = 0
    for problems in per_shard:
        new = [p for p in problems if p not in out]
        if not new:
            continue
        if shown == EXAMPLES:
            more += 1
            continue
        out += new
        shown += 1
    if more:
        out.append(f"and problems in {more} more shards")
    return out


def _merge_trace(pieces: list[pl.DataFrame]) -> pl.DataFrame:
    """The shards' trace totals as one log's: shards come in merchant order and a counter's hi is
    its merchant id, so a substream's first event is in the first shard that has events and its
    last in the last; a shard without events has no row and contributes nothing."""
    return pl.concat(pieces).group_by(["module", "substream_label"], maintain_order=True).agg(
        pl.col("events", "draws", "blocks").sum(),
        pl.col("first_counter_hi", "first_counter_lo").first(),
        pl.col("last_counter_hi", "last_counter_lo").last(),
    )


# ----------------------------------------------------------------------------------------------


class _Base:
    """Plumbing both halves share: inputs, memoised preparations, and the S1 site table."""

    def __init__(self, inputs: dict, policies: dict, ctx: Context):
        self.inp = inputs
        self.policies = policies
        self.ctx = ctx
        self._memo: dict[str, tuple[bool, object]] = {}

    def need(self, name: str):
        """A shared preparation, computed once; a failed one blocks every check that needs it."""
        if name not in self._memo:
            try:
                self._memo[name] = (True, getattr(self, f"_prep_{name}")())
            except _Blocked as exc:
                self._memo[name] = (False, str(exc))
            except Exception as exc:  # noqa: BLE001 - malformed input: fail closed, naming it
                self._memo[name] = (False, f"{name}: {type(exc).__name__}: {exc}")
        ok, value = self._memo[name]
        if not ok:
            raise _Blocked(value)
        return value

    @staticmethod
    def _attempt(fn) -> tuple[bool, object]:
        """(True, what fn returned), or (False, why it cannot run): an audit must not crash on bad data."""
        try:
            return True, fn()
        except _Blocked as exc:
            return False, f"cannot run: {exc}"
        except Exception as exc:  # noqa: BLE001 - the check fails and says why
            return False, f"cannot run: {type(exc).__name__}: {exc}"

    def _prep_sites(self) -> dict:
        """S1 weights with each site's tzid, in S1 PK order (the order S2 slices follow)."""
        s1 = self.inp["s1_site_weights"].select(*SITE_PK, "p_weight").sort(SITE_PK, maintain_order=True)
        tz = self.inp["site_timezones"].select(*SITE_PK, "tzid").sort(SITE_PK, maintain_order=True)
        same_keys = s1.height == tz.height and s1.select(SITE_PK).equals(tz.select(SITE_PK))
        if same_keys:
            sites = s1.with_columns(tz["tzid"])
        else:
            sites = s1.join(tz, on=SITE_PK, how="inner", maintain_order="left")
        return {"s1": s1, "tz": tz, "same_keys": same_keys, "sites": sites}


class _GlobalAudit(_Base):
    """The checks over the small global inputs, the shards' verdicts merged, and the report."""

    def __init__(self, inputs: dict, policies: dict, ctx: Context):
        super().__init__(inputs, policies, ctx)
        self.results: dict[str, dict] = {}
        self.metrics: dict = {"audit_mode": "full"}

    def check(self, check_id: str, fn) -> None:
        ran, out = self._attempt(fn)
        ok, detail = out if ran else (False, out)
        self.results[check_id] = {"id": check_id, "status": "PASS" if ok else "FAIL", "detail": detail}

    def report(self, parts: list) -> dict:
        for check_id, fn in (
            ("S0.RECEIPT", self._c_receipt),
            ("POLICY.DIGESTS", self._c_policies),
            ("S1.SITE_KEYSET", self._c_site_keyset),
            ("S2.INDEX_HEADER", self._c_index_header),
            ("S2.BLOB_DIGEST", self._c_blob_digest),
            ("S2.SLICE_BOUNDS", self._c_slice_bounds),
            ("S2.SLICE_HEADERS", self._c_slice_headers),
            ("S2.SLICE_CHECKSUMS", self._c_slice_checksums),
            ("S2.COVERAGE", self._c_s2_coverage),
            ("S2.DECODE_PARITY", self._c_decode_parity),
        ):
            self.check(check_id, fn)
        for check_id, _, pass_detail in _SHARD_CHECKS:
            self._merge_shard_check(check_id, pass_detail, [p.checks[check_id] for p in parts])
        self.check("TRACE.TOTALS", lambda: self._c_trace(parts))
        checks = [self.results[k] for k in sorted(self.results)]
        failed = sum(c["status"] == "FAIL" for c in checks)
        return {
            "component": COMPONENT,
            "manifest_fingerprint": self.ctx.manifest_fingerprint,
            "seed": self.ctx.seed,
            "parameter_hash": self.ctx.parameter_hash,
            "run_id": self.ctx.run_id,
            "created_utc": self.ctx.created_utc,
            "checks": checks,
            "metrics": dict(sorted(self.metrics.items())),
            "summary": {"overall": "FAIL" if failed else "PASS", "passed": len(checks) - failed, "failed": failed},
        }

    # -- merging the shards --------------------------------------------------------------------
    def _merge_shard_check(self, check_id: str, pass_detail, outcomes: list[tuple[list[str], dict | None]]) -> None:
        """One shard check over all shards: FAIL if any shard found a problem, else the PASS detail
        written from the merged facts; the check's metrics come from the merged facts either way."""
        facts, problems = _merge_facts([f for _, f in outcomes])
        problems = _join_shard_problems([p for p, _ in outcomes]) + problems
        if facts is not None:
            for metric, (owner, name) in _SHARD_METRICS.items():
                if owner == check_id and facts[name] is not None:
                    self.metrics[metric] = _num(facts[name]) if name in _MAX_FACTS else facts[name]
        ok = not problems
        self.results[check_id] = {"id": check_id, "status": "PASS" if ok else "FAIL",
                                  "detail": pass_detail(facts) if ok else "; ".join(problems)}

    # -- preparations --------------------------------------------------------------------------
    def _prep_receipt_policies(self) -> dict:
        sealed = self.inp["s0_gate_receipt"].get("policies")
        if not isinstance(sealed, dict) or not all(isinstance(v, str) for v in sealed.values()):
            raise _Blocked("s0_gate_receipt.policies is not a {name: sha256 hex} mapping")
        return sealed

    def _prep_index(self) -> dict:
        idx = self.inp["s2_alias_index"]
        entries = idx.get("merchants")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise _Blocked("s2_alias_index.merchants is not a list of objects")
        schema = {"merchant_id": pl.UInt64, "offset": pl.Int64, "length": pl.Int64, "sites": pl.Int64,
                  "quantised_bits": pl.Int64, "checksum": pl.String}
        df = pl.DataFrame(entries, schema=schema)
        nulls = [c for c in df.columns if df[c].null_count()]
        if nulls:
            raise _Blocked(f"s2_alias_index.merchants entries lack or null field(s) {nulls}")
        align = idx.get("alignment_bytes")
        if isinstance(align, bool) or not isinstance(align, int) or align < MIN_ALIGNMENT or align % MIN_ALIGNMENT:
            raise _Blocked(f"s2_alias_index.alignment_bytes {align!r} is not a positive multiple of {MIN_ALIGNMENT}")
        return {"df": df, "alignment": align, **{c: df[c].to_numpy() for c in df.columns if c != "checksum"}}

    def _prep_slices(self) -> dict:
        """Which index entries are usable slices (in bounds, aligned, right length), and the u32 view."""
        ix = self.need("index")
        blob = bytes(self.inp["s2_alias_blob"])
        off, length, sites = ix["offset"], ix["length"], ix["sites"]
        in_bounds = (off >= 0) & (off + length <= len(blob)) & (off % ix["alignment"] == 0)
        shaped = (sites >= 1) & (length == 16 + 8 * sites)
        words = np.frombuffer(blob, dtype="<u4", count=len(blob) // 4)
        return {"blob": blob, "words": words, "in_bounds": in_bounds, "shaped": shaped, "usable": in_bounds & shaped}

    # -- S0 and policies ------------------------------------------------------------------------
    def _c_receipt(self):
        rec, sealed = self.inp["s0_gate_receipt"], self.inp["sealed_inputs"]
        problems = []
        for key, want in (("manifest_fingerprint", self.ctx.mf), ("seed", self.ctx.seed),
                          ("verified_at_utc", self.ctx.created_utc)):
            if rec.get(key) != want:
                problems.append(f"receipt {key} = {rec.get(key)!r}, run has {want!r}")
        rows = sealed if isinstance(sealed, list) else sealed.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "asset_id" in r for r in rows):
            problems.append("sealed_inputs is not a list of rows with asset_id")
        else:
            ids = [r["asset_id"] for r in rows]
            if ids != sorted(ids) or len(set(ids)) != len(ids):
                problems.append("sealed_inputs rows are not unique and sorted by asset_id")
            listed = rec.get("sealed_inputs")
            if isinstance(listed, list) and sorted(listed) != sorted(ids):
                problems.append("receipt sealed_inputs ids differ from the sealed_inputs rows")
        return not problems, "; ".join(problems) or "receipt matches the run; sealed_inputs well-formed"

    def _c_policies(self):
        sealed = self.need("receipt_policies")
        rows = self.inp["sealed_inputs"]
        rows = rows if isinstance(rows, list) else rows.get("rows", [])
        sealed_rows = {r.get("asset_id"): r.get("sha256_hex") for r in rows if isinstance(r, dict)}
        problems = []
        if not self.policies:
            # Nothing re-hashed proves nothing: the pipeline hands S7 every policy S0 sealed.
            problems.append("no policies given to re-check")
        unchecked = sorted(set(sealed) - set(self.policies))
        if unchecked and self.policies:
            problems.append(f"sealed policies not given for re-check: {unchecked}")
        for name in sorted(self.policies):
            pol = self.policies[name]
            want = sealed.get(name)
            if want is None:
                problems.append(f"{name}: not sealed in the receipt")
                continue
            if sealed_rows.get(name) != want:
                problems.append(f"{name}: sealed_inputs row {str(sealed_rows.get(name))[:12]} != receipt {want[:12]}")
            if pol.sha256 != want:
                problems.append(f"{name}: loaded digest {pol.sha256[:12]} != sealed {want[:12]}")
            try:
                fresh = sha256_hex(pol.path.read_bytes())
            except OSError as exc:
                problems.append(f"{name}: cannot re-read {pol.path}: {exc}")
                continue
            if fresh != want:
                problems.append(f"{name}: file bytes changed after sealing ({fresh[:12]} != sealed {want[:12]})")
        self.metrics["policies_checked"] = len(self.policies)
        return not problems, "; ".join(problems) or f"{len(self.policies)} policies match their sealed digests"

    # -- S1 sites -----------------------------------------------------------------------------
    def _c_site_keyset(self):
        p = self.need("sites")
        s1, tz = p["s1"], p["tz"]
        problems = []
        for name, df in (("s1_site_weights", s1), ("site_timezones", tz)):
            dups = df.select(SITE_PK).is_duplicated().sum()
            if dups:
                problems.append(f"{name}: {dups} rows share a site key")
        if not p["same_keys"]:
            only_s1 = s1.select(SITE_PK).join(tz.select(SITE_PK), on=SITE_PK, how="anti")
            only_tz = tz.select(SITE_PK).join(s1.select(SITE_PK), on=SITE_PK, how="anti")
            if only_s1.height:
                problems.append(f"{only_s1.height} S1 sites without a tzid{_examples(only_s1.rows())}")
            if only_tz.height:
                problems.append(f"{only_tz.height} site_timezones sites without S1 weight{_examples(only_tz.rows())}")
        self.metrics["sites"] = s1.height
        self.metrics["merchants"] = int(s1["merchant_id"].n_unique())
        return not problems, "; ".join(problems) or f"{s1.height} sites, same keys in S1 and site_timezones"

    # -- S2 alias tables ----------------------------------------------------------------------
    def _c_index_header(self):
        idx = self.inp["s2_alias_index"]
        ix = self.need("index")
        problems = []
        expect = {"layout_version": LAYOUT_VERSION, "endianness": "little", "quantised_bits": GRID_BITS, "merchants_count": ix["df"].height,
                  "blob_size_bytes": len(self.inp["s2_alias_blob"]), "created_utc": self.ctx.created_utc}
        for key, want in expect.items():
            if idx.get(key) != want:
                problems.append(f"{key} = {idx.get(key)!r}, expected {want!r}")
        bad_bits = int((ix["quantised_bits"] != GRID_BITS).sum())
        if bad_bits:
            problems.append(f"{bad_bits} merchants with quantised_bits != {GRID_BITS}")
        mids = ix["merchant_id"]
        if len(mids) > 1 and not bool((mids[1:] > mids[:-1]).all()):
            problems.append("merchants are not in strictly ascending merchant_id order")
        try:
            sealed = self.need("receipt_policies")
            pid = idx.get("policy_id")
            if sealed.get(pid) is None or idx.get("policy_digest") != sealed.get(pid):
                problems.append(f"policy_digest of {pid!r} is not the digest S0 sealed")
        except _Blocked as exc:
            problems.append(str(exc))
        return not problems, "; ".join(problems) or f"{LAYOUT_VERSION}, {len(mids)} merchants"

    def _c_blob_digest(self):
        idx = self.inp["s2_alias_index"]
        blob = bytes(self.inp["s2_alias_blob"])
        got = sha256_hex(blob)
        problems = []
        if got != idx.get("blob_sha256"):
            problems.append(f"blob sha256 {got[:16]} != index blob_sha256 {str(idx.get('blob_sha256'))[:16]}")
        if len(blob) != idx.get("blob_size_bytes"):
            problems.append(f"blob has {len(blob)} bytes, index says {idx.get('blob_size_bytes')}")
        self.metrics["blob_size_bytes"] = len(blob)
        return not problems, "; ".join(problems) or f"blob sha256 {got[:16]}, {len(blob)} bytes"

    def _c_slice_bounds(self):
        ix, sl = self.need("index"), self.need("slices")
        mids = ix["merchant_id"]
        problems = []
        align = ix["alignment"]
        for mask, what in ((~sl["in_bounds"], f"outside the blob or not {align}-byte aligned"),
                           (~sl["shaped"], "with length != 16 + 8 x sites (or no sites)")):
            if mask.any():
                problems.append(f"{int(mask.sum())} slices {what}{_examples(mids[mask])}")
        ok = sl["in_bounds"]
        starts, ends = ix["offset"][ok], (ix["offset"] + ix["length"])[ok]
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        if len(starts) > 1:
            overlap = starts[1:] < ends[:-1]
            if overlap.any():
                problems.append(f"{int(overlap.sum())} slices overlap their predecessor{_examples(mids[ok][order][1:][overlap])}")
        blob = sl["blob"]
        if len(starts) and not problems:
            # Padding is whatever no slice covers: zero bytes, and never a whole alignment unit.
            gaps = np.r_[starts[0], starts[1:] - ends[:-1], len(blob) - ends[-1]]
            if (gaps >= align).any():
                problems.append(f"{int((gaps >= align).sum())} gaps of {align}+ bytes between slices")
            cover = np.zeros(len(blob) + 1, dtype=np.int64)
            np.add.at(cover, starts, 1)
            np.add.at(cover, ends, -1)
            pad = np.cumsum(cover[:-1]) == 0
            nonzero = int((np.frombuffer(blob, dtype=np.uint8)[pad] != 0).sum())
            if nonzero:
                problems.append(f"{nonzero} padding bytes are not 0x00")
        return not problems, "; ".join(problems) or f"{len(mids)} slices in bounds, aligned, disjoint, zero-padded"

    def _c_slice_headers(self):
        ix, sl = self.need("index"), self.need("slices")
        use = sl["usable"]
        mids, K = ix["merchant_id"][use], ix["sites"][use]
        base = ix["offset"][use] // 4
        w = sl["words"]
        problems = []
        if (~use).any():
            problems.append(f"{int((~use).sum())} slices unusable (see S2.SLICE_BOUNDS)")
        hdr = np.stack([w[base + i] for i in range(4)], axis=1) if len(base) else np.zeros((0, 4), np.uint32)
        bad = (hdr[:, 0] != K) | (hdr[:, 1] != Q_BITS) | (hdr[:, 2] != 0) | (hdr[:, 3] != 0)
        if bad.any():
            problems.append(f"{int(bad.sum())} slice headers are not [K, {Q_BITS}, 0, 0]{_examples(mids[bad])}")
        q, a, owner = self._entries(use)
        bad_q = (q == 0)  # q = 2^32 cannot be stored in a u32, so only the lower clamp can break
        bad_a = a >= K[owner]
        for mask, what in ((bad_q, "q outside [1, 2^32 - 1]"), (bad_a, "alias index >= K")):
            if mask.any():
                problems.append(f"{int(mask.sum())} entries with {what}{_examples(sorted_unique(mids[owner[mask]]))}")
        self.metrics["alias_entries"] = len(q)
        return not problems, "; ".join(problems) or f"{len(mids)} headers [K, {Q_BITS}, 0, 0], {len(q)} entries in range"

    def _entries(self, use: np.ndarray):
        """(q, alias, owning slice position) of every entry of the usable slices, in slice order."""
        ix, sl = self.need("index"), self.need("slices")
        K = ix["sites"][use]
        first = ix["offset"][use] // 4 + 4
        owner = np.repeat(np.arange(len(K)), K)
        local = np.arange(int(K.sum())) - np.repeat(np.cumsum(K) - K, K)
        pos = np.repeat(first, K) + 2 * local
        return sl["words"][pos], sl["words"][pos + 1], owner

    def _c_slice_checksums(self):
        ix, sl = self.need("index"), self.need("slices")
        view = memoryview(sl["blob"])
        off, length, mids = ix["offset"], ix["length"], ix["merchant_id"]
        sums = ix["df"]["checksum"].to_list()
        bad = [int(mids[i]) for i in range(len(mids))
               if not sl["in_bounds"][i] or hashlib.sha256(view[off[i]:off[i] + length[i]]).hexdigest() != sums[i]]
        if bad:
            return False, f"{len(bad)} of {len(mids)} slice checksums do not verify{_examples(bad)}"
        return True, f"{len(mids)} slice checksums verify"

    def _c_s2_coverage(self):
        ix = self.need("index")
        s1 = self.need("sites")["s1"]
        m1, n1 = unique_counts(s1["merchant_id"].to_numpy())
        order = np.argsort(ix["merchant_id"], kind="stable")
        mi, ni = ix["merchant_id"][order], ix["sites"][order]
        problems = []
        missing, extra = only_in(m1, mi), only_in(mi, m1)
        if len(missing):
            problems.append(f"{len(missing)} S1 merchants without a slice{_examples(missing)}")
        if len(extra):
            problems.append(f"{len(extra)} slices for merchants not in S1{_examples(extra)}")
        if len(sorted_unique(mi)) != len(mi):
            problems.append("merchants listed more than once in the index")
        if not problems:
            wrong = mi[ni != n1]
            if len(wrong):
                problems.append(f"{len(wrong)} slices whose site count differs from S1{_examples(wrong)}")
        return not problems, "; ".join(problems) or f"{len(m1)} merchants, site counts equal S1"

    def _c_decode_parity(self):
        for dep in ("S2.SLICE_BOUNDS", "S2.SLICE_HEADERS", "S2.COVERAGE"):
            if self.results[dep]["status"] != "PASS":
                raise _Blocked(f"{dep} failed, slices cannot be decoded safely")
        ix = self.need("index")
        s1 = self.need("sites")["s1"]
        order = np.argsort(ix["merchant_id"], kind="stable")
        use = np.ones(len(order), dtype=bool)
        q, a, _ = self._entries(use)
        K = ix["sites"]
        offsets = np.r_[0, np.cumsum(K)].astype(np.int64)
        p_hat = alias.decode_many(q, a, offsets)
        # Entries are in index order; S1 is in PK order (merchant ascending): permute whole slices.
        if not np.array_equal(order, np.arange(len(order))):
            sizes = K[order]
            p_hat = p_hat[np.repeat(offsets[:-1][order] - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))]
        p = s1["p_weight"].to_numpy()
        delta = np.abs(p_hat - p)
        worst = float(np.nanmax(delta)) if len(delta) else 0.0
        bad = ~(delta <= DECODE_TOL)
        self.metrics["decode_max_abs_delta"] = _num(worst)
        if bad.any():
            rows = s1.filter(pl.Series(bad)).select(SITE_PK).rows()
            return False, f"{int(bad.sum())} sites decode more than {DECODE_TOL} from p_weight (max {worst:.3e}){_examples(rows)}"
        return True, f"{len(p)} sites decode within {DECODE_TOL}; max abs delta {worst:.3e}"

    # -- traces -------------------------------------------------------------------------------
    def _c_trace(self, parts: list):
        problems = []
        for trace_id, _ in TRACES:
            pieces = [p.trace[trace_id] for p in parts]
            errors = [x for x in pieces if isinstance(x, str)]
            if errors:  # the shard could not total its logs; the first reason stands for all
                problems.append(f"{trace_id}: cannot run: {errors[0]}")
                continue
            try:
                problems += self._trace_problems(trace_id, _merge_trace(pieces))
            except Exception as exc:  # noqa: BLE001 - one malformed trace must not hide the other's verdict
                problems.append(f"{trace_id}: cannot run: {type(exc).__name__}: {exc}")
        return not problems, "; ".join(problems) or "trace totals and first/last counters equal the event logs"

    def _trace_problems(self, trace_id: str, want: pl.DataFrame) -> list[str]:
        trace = self.inp[trace_id]
        cols = want.columns
        have = trace.select(cols).with_columns(pl.col(c).cast(pl.UInt64) for c in cols[2:])
        key = ["module", "substream_label"]
        problems = []
        if have.select(key).is_duplicated().any():
            problems.append(f"{trace_id}: more than one row per (module, substream_label)")
        joined = want.join(have, on=key, how="full", suffix="_trace", coalesce=True)
        for row in joined.sort(key).iter_rows(named=True):
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


class _ShardAudit(_Base):
    """The per-merchant checks (S3 on) over one merchant range.

    Merchant and tz codes in keys are local to the shard; only counts, worst deltas and short
    problem texts leave it."""

    def __init__(self, inputs: dict, policies: dict, ctx: Context):
        super().__init__(inputs, policies, ctx)
        self.results: dict[str, tuple[list[str], dict | None]] = {}

    def check(self, check_id: str, fn) -> None:
        ran, out = self._attempt(fn)
        self.results[check_id] = out if ran else ([out], None)

    def passed(self, check_id: str) -> bool:
        return check_id in self.results and not self.results[check_id][0]

    def part(self) -> _Part:
        for check_id, method, _ in _SHARD_CHECKS:
            self.check(check_id, getattr(self, method))
        return _Part(self.results, {trace_id: self._trace_piece(logs) for trace_id, logs in TRACES})

    def _trace_piece(self, logs: tuple[str, ...]) -> pl.DataFrame | str:
        """This shard's share of a trace: per (module, substream_label) totals of its logs, or why not."""
        try:
            want = pl.concat([_trace_of(self.inp[d]) for d in logs])
            # A substream spread over several logs (not expected) still totals once, in counter order.
            want = want.sort("first_counter_hi", "first_counter_lo")
            want = want.group_by(["module", "substream_label"], maintain_order=True).agg(
                pl.col("events", "draws", "blocks").sum(),
                pl.col("first_counter_hi", "first_counter_lo").first(),
                pl.col("last_counter_hi", "last_counter_lo").last(),
            )
            return want.with_columns(pl.col(c).cast(pl.UInt64) for c in want.columns[2:])
        except Exception as exc:  # noqa: BLE001 - finish reports it as the trace check's reason
            return f"{type(exc).__name__}: {exc}"

    # -- preparations --------------------------------------------------------------------------
    def _prep_universe(self) -> dict:
        """Sorted merchant ids and tzids every key code refers to (S1, site tz, S3 and S4)."""
        sites = self.need("sites")
        mer = [sorted_unique(sites["s1"]["merchant_id"].to_numpy())]
        tzs = [sites["tz"]["tzid"].unique()]
        for dataset_id in ("s3_day_effects", "s4_group_weights"):
            df = self.inp[dataset_id]
            if "merchant_id" in df.columns and "tz_group_id" in df.columns:
                mer.append(sorted_unique(df["merchant_id"].cast(pl.UInt64).to_numpy()))
                tzs.append(df["tz_group_id"].unique())
        tz_list = sorted(set().union(*(set(t.to_list()) for t in tzs)))
        if len(tz_list) >= 1 << 16:
            raise _Blocked(f"{len(tz_list)} distinct tz groups exceed the 16-bit key field")
        return {"mer": sorted_unique(np.concatenate(mer)), "tz": tz_list}

    def _tz_codes(self, tz: pl.Series) -> np.ndarray:
        names = self.need("universe")["tz"]
        return tz.replace_strict(names, list(range(len(names))), default=-1, return_dtype=pl.Int64).to_numpy()

    def _keys(self, df: pl.DataFrame) -> np.ndarray:
        """(merchant index << 32 | epoch day << 16 | tz index) per row, -1 where a part is unknown."""
        mi = index_in_runs(self.need("universe")["mer"], df["merchant_id"].to_numpy())
        day = epoch_days(df["utc_day"])
        tz = self._tz_codes(df["tz_group_id"])
        ok = (mi >= 0) & (day >= 0) & (day < (1 << 16)) & (tz >= 0)
        return np.where(ok, (mi << 32) | (day << 16) | tz, -1)

    def _prep_s3(self) -> dict:
        s3 = self.inp["s3_day_effects"]
        return {"df": s3, "key": self._keys(s3)}

    def _prep_s4(self) -> dict:
        s4 = self.inp["s4_group_weights"]
        return {"df": s4, "key": self._keys(s4)}

    def _prep_groups(self) -> dict:
        """Each merchant's tz groups (distinct site tzids, sorted) keyed (merchant index << 16 | tz)."""
        sites = self.need("sites")["sites"]
        mi = index_in(self.need("universe")["mer"], sites["merchant_id"].to_numpy())
        tz = self._tz_codes(sites["tzid"])
        mg = sorted_unique((mi << 16) | tz)  # tz codes follow tzid string order, so this is the sorted law
        m_of = mg >> 16
        rank = ordinal_in_runs(m_of).astype(np.int64)
        n_groups = unique_counts(m_of)[1]
        size = np.repeat(n_groups, n_groups)
        return {"mg": mg, "rank": rank, "n_groups": size}

    def _prep_day_grid(self) -> np.ndarray | None:
        """The S3 day grid: the policy's inclusive day_range if given, else S3's own contiguous days
        (None when there is neither: a shard without S3 rows cannot tell the grid, nor needs it)."""
        pol = self.policies.get("day_effect_policy_v1")
        if pol is not None:
            rng = pol.data["day_range"]
            start, end = epoch_days(pl.Series([rng["start"], rng["end"]]))
            if start < 0 or end < start:
                raise _Blocked(f"day_effect_policy_v1.day_range malformed: {rng}")
            return np.arange(start, end + 1)
        if self.inp["s3_day_effects"].height == 0:
            return None
        days = sorted_unique(epoch_days(self.inp["s3_day_effects"]["utc_day"].unique()))
        if len(days) == 0 or days[0] < 0 or days[-1] - days[0] + 1 != len(days):
            raise _Blocked("S3 days are not a contiguous YYYY-MM-DD grid")
        return days

    def _prep_roster(self) -> dict:
        """The (merchant, ordinal) keys the RNG law gives the roster's arrivals, in key order.

        k = arrival_seq is the ordinal among the merchant's arrivals in roster order and
        virtual_seq the same among its virtual arrivals, so the sorted key set follows from the
        per-merchant counts alone: a million arrivals need no sort to be keyed.
        """
        r = self.inp["s5_arrival_roster"]
        mer = self.need("universe")["mer"]
        mi = index_in(mer, r["merchant_id"].to_numpy(), scattered=True)
        known = mi >= 0
        counts = np.bincount(mi[known], minlength=len(mer))
        virtual = r["is_virtual"].to_numpy() & known
        vmi = mi[virtual]
        day = epoch_days(r["utc_day"])  # roster order
        # The virtual arrivals are few: their days are put in key order by a (stable) sort.
        vday = day[virtual][np.argsort(vmi, kind="stable")]
        # Merchants outside every table S7 knows cannot be keyed; S5.ROSTER names them from the raw ids.
        merchants = sorted_unique(r["merchant_id"].to_numpy()) if not known.all() else mer[counts > 0]
        return {"key": _keys_from_counts(counts), "vkey": _keys_from_counts(np.bincount(vmi, minlength=len(mer))),
                "mi": mi, "known": known, "day": day, "vday": vday, "merchants": merchants, "mer": mer}

    def _prep_roster_day_by_key(self) -> np.ndarray:
        """Roster days in (merchant, ordinal) order: the row-by-row map, built only when the cheap
        proof in S5.GROUP_DAY does not apply or fails (then its detail needs it)."""
        rs = self.need("roster")
        mi, known = rs["mi"], rs["known"]
        narrow = np.uint16 if len(rs["mer"]) < (1 << 16) - 1 else np.uint32
        order = np.argsort((mi + 1).astype(narrow), kind="stable")  # keeps roster order inside a merchant
        return rs["day"][order][known[order]]

    def _event_keys(self, dataset_id: str, seq_col: str, with_day: bool = True) -> dict:
        ev = self.inp[dataset_id]
        mer = self.need("universe")["mer"]
        mi = index_in_runs(mer, ev["merchant_id"].to_numpy())
        seq = ev[seq_col].to_numpy()
        ok = (mi >= 0) & (seq < (1 << SEQ_BITS))
        key = np.where(ok, (mi << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1)).astype(np.int64), -1)
        return {"mi": mi, "key": key, "day": epoch_days(ev["utc_day"]) if with_day else None}

    def _namer(self, dataset_id: str, seq_col: str):
        ev = self.inp[dataset_id]
        return lambda rows: ev[rows].select("merchant_id", seq_col).rows() if len(rows) else []

    def _exp_namer(self, key_name: str):
        rs = self.need("roster")
        keys, mer = rs[key_name], rs["mer"]
        return lambda rows: [(int(mer[k >> SEQ_BITS]), int(k & ((1 << SEQ_BITS) - 1))) for k in keys[rows]]

    def _prep_group(self) -> dict:
        ek = self._event_keys("rng_event_alias_pick_group", "arrival_seq")
        ek["tz"] = self._tz_codes(self.inp["rng_event_alias_pick_group"]["tz_group_id"])
        m = _match(ek["key"], self.need("roster")["key"], self._namer("rng_event_alias_pick_group", "arrival_seq"),
                   self._exp_namer("key"))
        return {**ek, "match": m}

    def _prep_site(self) -> dict:
        # Site days and groups are compared with the group log's (checked against the roster and
        # S4) row by row when both logs line up, so they are only decoded when they do not.
        ek = self._event_keys("rng_event_alias_pick_site", "arrival_seq", with_day=False)
        m = _match(ek["key"], self.need("roster")["key"], self._namer("rng_event_alias_pick_site", "arrival_seq"),
                   self._exp_namer("key"))
        return {**ek, "match": m}

    def _prep_edge(self) -> dict:
        ek = self._event_keys("rng_event_cdn_edge_pick", "virtual_seq")
        m = _match(ek["key"], self.need("roster")["vkey"], self._namer("rng_event_cdn_edge_pick", "virtual_seq"),
                   self._exp_namer("vkey"))
        return {**ek, "match": m}

    def _prep_site_lookup(self) -> dict:
        """For each site event, the S1 site row its site_id names (-1 when none)."""
        sites = self.need("sites")["sites"]
        sid = site_ids(sites["merchant_id"].to_list(), sites["legal_country_iso"].to_list(), sites["site_order"].to_list())
        order = np.argsort(sid, kind="stable")
        first = np.ones(len(sid), dtype=bool)  # a repeated site (S1.SITE_KEYSET fails) maps once
        first[1:] = sid[order][1:] != sid[order][:-1]
        order = order[first]
        pos = index_in(sid[order], self.inp["rng_event_alias_pick_site"]["site_id"].to_numpy(), scattered=True)
        return {"row": np.where(pos >= 0, take(order, pos), -1)}

    # -- S3 / S4 ------------------------------------------------------------------------------
    def _c_s3_coverage(self):
        s3 = self.need("s3")
        g = self.need("groups")
        days = self.need("day_grid")
        mg = g["mg"]
        facts = {"rows": s3["df"].height, "groups": len(mg), "days": None if days is None else len(days),
                 "first_day": None if days is None else int(days[0])}
        if days is None:  # no S3 row and no policy grid: right only for a shard without merchant groups
            return [f"{len(mg)} merchant groups without any S3 row"] if len(mg) else [], facts
        m_of, tz_of = mg >> 16, mg & 0xFFFF
        want = ((np.repeat(m_of, len(days)) << 32) | (np.tile(days, len(mg)) << 16) | np.repeat(tz_of, len(days)))
        have = s3["key"]
        problems = []
        if (have < 0).any():
            problems.append(f"{int((have < 0).sum())} rows with an unknown merchant, malformed day or unknown tz")
        want_s, have_s = np.sort(want), np.sort(have[have >= 0])
        if not np.array_equal(want_s, have_s):
            missing = only_in(want_s, have_s)
            extra = only_in(have_s, want_s)
            if len(missing):
                problems.append(f"{len(missing)} merchant x day x group rows missing{_examples(self._describe(missing))}")
            if len(extra):
                problems.append(f"{len(extra)} rows outside the grid{_examples(self._describe(extra))}")
            if not len(missing) and not len(extra):
                problems.append("duplicate keys")
        return problems, facts

    def _describe(self, keys: np.ndarray, with_tz: bool = True) -> list:
        """Readable (merchant_id, day[, tzid]) of a few encoded keys, for failure details only."""
        u = self.need("universe")
        out = []
        for k in keys[:EXAMPLES]:
            k = int(k)
            day = str(np.datetime64((k >> 16) & 0xFFFF, "D"))
            out.append((int(u["mer"][k >> 32]), day, u["tz"][k & 0xFFFF]) if with_tz else (int(u["mer"][k >> 32]), day))
        return out

    def _c_s3_domain(self):
        s3 = self.inp["s3_day_effects"]
        g, s = s3["gamma"].to_numpy(), s3["sigma_gamma"].to_numpy()
        bad = ~(np.isfinite(g) & (g > 0)) | ~(np.isfinite(s) & (s > 0))
        problems = [f"{int(bad.sum())} rows with gamma or sigma_gamma not finite and > 0"] if bad.any() else []
        return problems, {"rows": len(g)}

    def _c_s3_counters(self):
        s3 = self.need("s3")
        g = self.need("groups")
        days = self.need("day_grid")
        df, key = s3["df"], s3["key"]
        if days is None:  # no S3 rows (see _prep_day_grid): no counters
            return [], {"counters": 0}
        if (key < 0).any():
            raise _Blocked("S3 rows with unknown keys (see S3.COVERAGE)")
        mg_key = (key >> 32 << 16) | (key & 0xFFFF)
        pos = index_in(g["mg"], mg_key)
        day_idx = (key >> 16 & 0xFFFF) - days[0]
        if (pos < 0).any():
            raise _Blocked("S3 rows for groups the merchant has no site in (see S3.COVERAGE)")
        lo_want = (day_idx * g["n_groups"][pos] + g["rank"][pos]).astype(np.uint64)
        hi = df["rng_counter_hi"].to_numpy()
        lo = df["rng_counter_lo"].to_numpy()
        bad = (hi != df["merchant_id"].to_numpy()) | (lo != lo_want)
        problems = []
        if bad.any():
            rows = df.filter(pl.Series(bad)).select("merchant_id", "utc_day", "tz_group_id").rows()
            problems.append(f"{int(bad.sum())} rows whose counter is not (merchant_id, day x n_groups + group){_examples(rows)}")
        streams = sorted(df["rng_stream_id"].unique().to_list())
        if streams not in ([STREAM_S3], []):
            problems.append(f"rng_stream_id values {streams[:EXAMPLES]}, expected only {STREAM_S3!r}")
        if not bad.any():
            # Counters that follow the law are unique exactly when the keys are (checked in S3S4.KEYSET).
            dups = len(key) - len(sorted_unique(key))
            if dups:
                problems.append(f"{dups} duplicate counters")
        return problems, {"counters": len(key)}

    def _c_s3s4_keyset(self):
        k3, k4 = self.need("s3")["key"], self.need("s4")["key"]
        problems = []
        for name, k in (("S3", k3), ("S4", k4)):
            if (k < 0).any():
                problems.append(f"{name}: {int((k < 0).sum())} rows with unknown merchant, malformed day or unknown tz")
            dups = len(k) - len(sorted_unique(k))
            if dups:
                problems.append(f"{name}: {dups} duplicate keys")
        a, b = sorted_unique(k3[k3 >= 0]), sorted_unique(k4[k4 >= 0])
        if not np.array_equal(a, b):
            only3, only4 = only_in(a, b), only_in(b, a)
            if len(only3):
                problems.append(f"{len(only3)} keys only in S3{_examples(self._describe(only3))}")
            if len(only4):
                problems.append(f"{len(only4)} keys only in S4{_examples(self._describe(only4))}")
        return problems, {"s3_keys": len(k3), "s4_rows": len(k4)}

    def _c_gamma_echo(self):
        s3, s4 = self.need("s3"), self.need("s4")
        k3, k4 = s3["key"], s4["key"]
        order3 = np.argsort(k3, kind="stable")
        pos = index_in(k3[order3], k4)
        keep = (pos >= 0) & (k4 >= 0)
        i4 = np.flatnonzero(keep)
        i3 = order3[pos[keep]]
        g3 = s3["df"]["gamma"].to_numpy()[i3]
        g4 = s4["df"]["gamma"].to_numpy()[i4]
        # Echo means the same float, bit for bit (a recomputation would not be an echo).
        bad = g3.view(np.uint64) != g4.view(np.uint64)
        facts = {"echoed": len(i4), "mismatches": int(bad.sum())}
        if bad.any():
            worst = float(np.nanmax(np.abs(g3[bad] - g4[bad])))
            rows = _examples(self._describe(k4[i4][bad]))
            return [f"{int(bad.sum())} S4 rows whose gamma differs from S3 (max {worst:.3e}){rows}"], facts
        if len(i4) != len(s4["key"]):
            return [f"{len(s4['key']) - len(i4)} S4 rows without an S3 row to echo"], facts
        return [], facts

    def _c_mass(self):
        s4 = self.need("s4")
        key, p = s4["key"], s4["df"]["p_group"].to_numpy()
        if (key < 0).any():
            raise _Blocked("S4 rows with unknown keys (see S3S4.KEYSET)")
        md = key >> 16
        order = np.argsort(md, kind="stable")
        md_s, p_s = md[order], p[order]
        starts = np.r_[0, np.flatnonzero(md_s[1:] != md_s[:-1]) + 1] if len(md_s) else np.zeros(0, np.int64)
        sums = np.add.reduceat(p_s, starts) if len(starts) else np.zeros(0)
        dev = np.abs(sums - 1.0)
        worst = float(np.nanmax(dev)) if len(dev) else None  # None: no rows here (see _MAX_FACTS)
        bad = ~(dev <= MASS_TOL)
        out_of_range = int((~((p >= 0) & (p <= 1))).sum())
        problems = []
        if bad.any():
            problems.append(f"{int(bad.sum())} merchant-days with |sum p_group - 1| > {MASS_TOL} (max {worst:.3e})"
                            f"{_examples(self._describe(md_s[starts][bad] << 16, with_tz=False))}")
        if out_of_range:
            problems.append(f"{out_of_range} p_group values outside [0, 1]")
        return problems, {"merchant_days": len(starts), "max_delta": worst}

    def _c_base_share(self):
        sites = self.need("sites")["sites"]
        s4 = self.need("s4")
        key = s4["key"]
        mi = index_in(self.need("universe")["mer"], sites["merchant_id"].to_numpy())
        tz = self._tz_codes(sites["tzid"])
        mg_site = (mi << 16) | tz
        mg = sorted_unique(mg_site)
        inv = np.searchsorted(mg, mg_site)
        share = np.bincount(inv, weights=sites["p_weight"].to_numpy(), minlength=len(mg))
        pos = index_in(mg, np.where(key >= 0, (key >> 32 << 16) | (key & 0xFFFF), -1))
        b = s4["df"]["base_share"].to_numpy()
        no_site = pos < 0
        dev = np.abs(b - take(share, pos))
        dev[no_site] = np.inf
        finite = dev[~no_site]
        worst = float(np.nanmax(finite)) if len(finite) else None  # None: no rows with a site here
        bad = ~(dev <= BASE_SHARE_TOL)
        facts = {"rows": len(b), "max_delta": worst}
        if bad.any():
            return [(f"{int(bad.sum())} S4 rows whose base_share is not the S1 sum over the group's sites "
                     f"({int(no_site.sum())} without any site; max delta {worst or 0.0:.3e})"
                     f"{_examples(self._describe(np.where(key >= 0, key, 0)[bad]))}")], facts
        return [], facts

    # -- S5 -----------------------------------------------------------------------------------
    def _c_roster(self):
        r = self.inp["s5_arrival_roster"]
        ts = r["utc_timestamp"]
        problems = []
        # Only timestamp order matters to the RNG law: k counts a merchant's own arrivals, and two
        # arrivals of one merchant at one instant tie on merchant_id as well, so the merchant_id
        # tie-break (checked when the roster was written) cannot change any ordinal.
        if not ts.is_sorted():
            problems.append("rows are not in utc_timestamp order")
        wrong_day = self._roster_day_faults(r) if problems else _sandwich_day_faults(r)
        if wrong_day:
            problems.append(f"{wrong_day} rows whose utc_day is not the date of utc_timestamp")
        s1_merchants = sorted_unique(self.need("sites")["s1"]["merchant_id"].to_numpy())
        outside = only_in(self.need("roster")["merchants"], s1_merchants)
        if len(outside):
            problems.append(f"{len(outside)} merchants with arrivals but without S1 sites{_examples(outside)}")
        return problems, {"arrivals": r.height, "virtual": int(r["is_virtual"].sum())}

    @staticmethod
    def _roster_day_faults(r: pl.DataFrame) -> int:
        return int((r["utc_day"] != r["utc_timestamp"].str.slice(0, 10)).sum())

    def _c_s5_count(self):
        n = len(self.need("roster")["key"])
        g, s = self.need("group")["match"], self.need("site")["match"]
        ng, ns = self.inp["rng_event_alias_pick_group"].height, self.inp["rng_event_alias_pick_site"].height
        ok = g.ok and s.ok
        detail = f"group: {_match_detail('group', g, n, ng)} | site: {_match_detail('site', s, n, ns)}"
        return [] if ok else [detail], {"arrivals": n, "group_events": ng, "site_events": ns}

    def _c_s5_counters(self):
        grp, site = self.inp["rng_event_alias_pick_group"], self.inp["rng_event_alias_pick_site"]
        two = np.uint64(2)
        bad_g = _counter_faults(grp, "arrival_seq", lambda k: two * k)
        bad_s = _counter_faults(site, "arrival_seq", lambda k: two * k + np.uint64(1))
        problems = []
        for name, df, bad in (("group", grp, bad_g), ("site", site, bad_s)):
            if bad.any():
                rows = df.filter(pl.Series(bad)).select("merchant_id", "arrival_seq").rows()
                problems.append(f"{int(bad.sum())} {name} events off the counter law{_examples(rows)}")
        # Law-abiding counters are unique iff (merchant_id, arrival_seq) is unique per log (group
        # counters even, site counters odd); count duplicates outright only when that proof fails.
        key_dups = self.need("group")["match"].duplicated + self.need("site")["match"].duplicated
        if problems or key_dups:
            dups = _duplicate_counters([grp, site])
            if dups:
                problems.append(f"{dups} events share a counter")
        return problems, {"counters": grp.height + site.height}

    def _day_faults(self, dataset_id: str, seq_col: str, prep: dict, roster_day: np.ndarray) -> str | None:
        ev, match = self.inp[dataset_id], prep["match"]
        hit = match.pos >= 0
        # Malformed days (-1) never equal a roster day, which is a real YYYY-MM-DD (S5.ROSTER).
        bad = hit & ((prep["day"] != take(roster_day, match.pos, -1)) | (prep["day"] < 0))
        if not bad.any():
            return None
        rows = ev.filter(pl.Series(bad)).select("merchant_id", seq_col, "utc_day").rows()
        return f"{int(bad.sum())} {dataset_id} events whose utc_day is not the roster day{_examples(rows)}"

    def _c_s5_day(self):
        g, s = self.need("group"), self.need("site")
        grp, site = self.inp["rng_event_alias_pick_group"], self.inp["rng_event_alias_pick_site"]
        if g["match"].aligned and s["match"].aligned:
            # Same arrival on the same row of both logs: a site day equal to its group day is right
            # exactly when the group day is.
            s = {**s, "day": np.where((site["utc_day"] == grp["utc_day"]).to_numpy(), g["day"], -1)}
            if self.passed("S5.ROSTER") and (s["day"] >= 0).all():
                rs = self.need("roster")
                if _same_days(rs["mi"][rs["known"]], rs["day"][rs["known"]], g["mi"], g["day"]):
                    return [], {}
        else:
            s = {**s, "day": epoch_days(site["utc_day"])}
        day = self.need("roster_day_by_key")
        problems = [p for p in (
            self._day_faults("rng_event_alias_pick_group", "arrival_seq", g, day),
            self._day_faults("rng_event_alias_pick_site", "arrival_seq", s, day)) if p]
        return problems, {}

    def _c_s5_echo(self):
        grp = self.inp["rng_event_alias_pick_group"]
        s4 = self.need("s4")
        g = self.need("group")
        mi, day, tz = g["mi"], g["day"], g["tz"]
        ok = (mi >= 0) & (day >= 0) & (day < (1 << 16)) & (tz >= 0)
        key = np.where(ok, (mi << 32) | (day << 16) | tz, -1)
        k4 = s4["key"]
        order = np.arange(len(k4)) if bool((k4[1:] > k4[:-1]).all()) else np.argsort(k4, kind="stable")
        pos = index_in(k4[order], key)
        absent = pos < 0
        p4 = take(s4["df"]["p_group"].to_numpy()[order], pos)
        p_ev = grp["p_group"].to_numpy()
        diff = ~absent & (p_ev.view(np.uint64) != p4.view(np.uint64))
        zero = ~absent & ~diff & ~(p_ev > 0)
        problems = []
        for mask, what in ((absent, "pick a group absent from S4 for that merchant-day"),
                           (diff, "carry a p_group that is not S4's"),
                           (zero, "pick a group whose p_group is not > 0")):
            if mask.any():
                rows = grp.filter(pl.Series(mask)).select("merchant_id", "arrival_seq", "utc_day", "tz_group_id").rows()
                problems.append(f"{int(mask.sum())} group events {what}{_examples(rows)}")
        return problems, {"picks": grp.height}

    def _c_s5_site_key(self):
        ev = self.inp["rng_event_alias_pick_site"]
        sites = self.need("sites")["sites"]
        row = self.need("site_lookup")["row"]
        known = row >= 0
        same = known
        if known.any():  # (a shard may hold site events but no site at all)
            r = np.maximum(row, 0)
            same = (known
                    & (sites["merchant_id"].to_numpy()[r] == ev["merchant_id"].to_numpy())
                    & (sites["site_order"].to_numpy()[r] == ev["site_order"].to_numpy())
                    & (sites["legal_country_iso"].gather(r) == ev["legal_country_iso"]).to_numpy())
        bad = ~same
        if bad.any():
            rows = ev.filter(pl.Series(bad)).select("merchant_id", "arrival_seq", "site_id").rows()
            return [(f"{int(bad.sum())} site events whose site_id is not the hash of a site of the merchant "
                     f"with the logged key ({int((~known).sum())} unknown ids){_examples(rows)}")], {"events": ev.height}
        return [], {"events": ev.height}

    def _c_s5_site_tz(self):
        ev = self.inp["rng_event_alias_pick_site"]
        grp = self.inp["rng_event_alias_pick_group"]
        sites = self.need("sites")["sites"]
        row = self.need("site_lookup")["row"]
        # A site of another merchant counts as unknown here (S5.SITE_KEY names it): a shard does
        # not hold other merchants' sites, and the verdict must not depend on the shard bounds.
        known = (row >= 0) & (take(sites["merchant_id"].to_numpy(), row) == ev["merchant_id"].to_numpy())
        g, s = self.need("group"), self.need("site")
        if g["match"].aligned and s["match"].aligned:
            # Row i of both logs is the same arrival: compare the two logged groups, then the
            # picked site's tz with the group's (as codes; strings only where the logs disagree).
            split = (grp["tz_group_id"] != ev["tz_group_id"]).to_numpy()
            site_tz = take(self._tz_codes(sites["tzid"]), row, -1)
            wrong = ~known | (site_tz != g["tz"])
            if split.any():
                i = np.flatnonzero(split & known)
                wrong[split] = ~known[split]
                wrong[i] = (sites["tzid"].gather(row[i]) != ev["tz_group_id"].gather(i)).to_numpy()
        else:
            wrong = ~known
            if known.any():
                wrong |= (sites["tzid"].gather(np.maximum(row, 0)) != ev["tz_group_id"]).to_numpy()
            # Put each log's groups on the roster's rows, then compare arrivals both logs cover.
            gp, sp = g["match"].pos, s["match"].pos
            n = len(self.need("roster")["key"])
            at_g, at_s = np.full(n, -1), np.full(n, -1)
            at_g[gp[gp >= 0]] = np.flatnonzero(gp >= 0)
            at_s[sp[sp >= 0]] = np.flatnonzero(sp >= 0)
            both = (at_g >= 0) & (at_s >= 0)
            split = np.zeros(ev.height, dtype=bool)
            split[at_s[both]] = (grp["tz_group_id"].gather(at_g[both]) != ev["tz_group_id"].gather(at_s[both])).to_numpy()
        problems = []
        if wrong.any():
            rows = ev.filter(pl.Series(wrong)).select("merchant_id", "arrival_seq", "tz_group_id").rows()
            problems.append(f"{int(wrong.sum())} picked sites are not in the event's tz group{_examples(rows)}")
        if split.any():
            rows = ev.filter(pl.Series(split)).select("merchant_id", "arrival_seq").rows()
            problems.append(f"{int(split.sum())} arrivals whose site event group differs from the group event{_examples(rows)}")
        return problems, {"events": ev.height}

    # -- S6 -----------------------------------------------------------------------------------
    def _c_s6_count(self):
        n = len(self.need("roster")["vkey"])
        e = self.need("edge")["match"]
        ne = self.inp["rng_event_cdn_edge_pick"].height
        return [] if e.ok else [_match_detail("edge", e, n, ne)], {"virtual": n, "edge_events": ne}

    def _c_s6_counters(self):
        ev = self.inp["rng_event_cdn_edge_pick"]
        bad = _counter_faults(ev, "virtual_seq", lambda v: v)
        problems = []
        if bad.any():
            rows = ev.filter(pl.Series(bad)).select("merchant_id", "virtual_seq").rows()
            problems.append(f"{int(bad.sum())} edge events off the counter law{_examples(rows)}")
        if problems or self.need("edge")["match"].duplicated:
            dups = _duplicate_counters([ev])
            if dups:
                problems.append(f"{dups} events share a counter")
        return problems, {"events": ev.height}

    def _c_s6_day(self):
        p = self._day_faults("rng_event_cdn_edge_pick", "virtual_seq", self.need("edge"), self.need("roster")["vday"])
        return [p] if p else [], {}


_TRACE_SCHEMA = {"module": pl.String, "substream_label": pl.String, "events": pl.UInt64, "draws": pl.UInt64,
                 "blocks": pl.UInt64, "first_counter_hi": pl.UInt64, "first_counter_lo": pl.UInt64,
                 "last_counter_hi": pl.UInt64, "last_counter_lo": pl.UInt64}


def _trace_of(events: pl.DataFrame) -> pl.DataFrame:
    """What a trace must say about one event log: per (module, substream_label), in log order,
    events, draws, blocks, the first event's before counter and the last event's after counter."""
    key = ["module", "substream_label"]
    if events.height == 0:
        return pl.DataFrame(schema=_TRACE_SCHEMA)
    mod, sub = events["module"], events["substream_label"]
    if bool((mod == mod[0]).all()) and bool((sub == sub[0]).all()):
        # One substream per log (the normal case): plain column totals, no group-by over strings.
        return pl.DataFrame({
            "module": [mod[0]], "substream_label": [sub[0]], "events": [events.height],
            "draws": [int(events["draws"].cast(pl.UInt64).sum())], "blocks": [int(events["blocks"].cast(pl.UInt64).sum())],
            "first_counter_hi": [events["rng_counter_before_hi"][0]], "first_counter_lo": [events["rng_counter_before_lo"][0]],
            "last_counter_hi": [events["rng_counter_after_hi"][-1]], "last_counter_lo": [events["rng_counter_after_lo"][-1]],
        }, schema=_TRACE_SCHEMA)
    return events.group_by(key, maintain_order=True).agg(
        pl.len().cast(pl.UInt64).alias("events"),
        pl.col("draws").cast(pl.UInt64).sum(),
        pl.col("blocks").cast(pl.UInt64).sum(),
        pl.col("rng_counter_before_hi").first().alias("first_counter_hi"),
        pl.col("rng_counter_before_lo").first().alias("first_counter_lo"),
        pl.col("rng_counter_after_hi").last().alias("last_counter_hi"),
        pl.col("rng_counter_after_lo").last().alias("last_counter_lo"),
    )
