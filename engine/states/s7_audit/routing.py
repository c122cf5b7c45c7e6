"""Checks of the routing logs against the roster, per merchant shard: S5's group and site events
and S6's edge events.

Every RNG law here is per merchant (counter hi is the merchant id, ordinals count one merchant's
arrivals), so a shard holding all of a merchant's arrivals and events checks them whole. An event
log in contract order lines up with the roster's arrivals row by row and is compared by position;
only a log that does not line up is matched key by key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from ...calendar import epoch_days
from ...identity import site_ids
from . import keys
from .arrays import index_in, index_in_runs, only_in, sorted_unique, take
from .day_effects import DayEffects
from .event_logs import (
    Match,
    counter_faults,
    duplicate_counters,
    every_roster_day_fault,
    match_events,
    roster_day_faults,
    same_days,
)
from .registry import SUM, Outcome, examples, preparation, shard_check

GROUP_LOG, SITE_LOG, EDGE_LOG = "rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_event_cdn_edge_pick"


@dataclass(frozen=True)
class RosterKeys:
    """The event keys the RNG law gives the roster's arrivals."""

    arrival_keys: np.ndarray  # sorted: (merchant, arrival_seq) of every arrival
    virtual_keys: np.ndarray  # sorted: (merchant, virtual_seq) of every virtual arrival
    merchant: np.ndarray  # per roster row: merchant code, -1 when no table S7 knows has the merchant
    known: np.ndarray  # merchant >= 0
    day: np.ndarray  # per roster row: epoch day of utc_day
    virtual_day: np.ndarray  # days of the virtual arrivals, in virtual key order
    merchants: np.ndarray  # distinct merchant ids with arrivals
    merchant_ids: np.ndarray  # the code book's merchant ids


@dataclass(frozen=True)
class EventLog:
    """One event log, keyed and set against the arrivals it must cover."""

    merchant: np.ndarray  # per event: merchant code
    key: np.ndarray  # per event: event key
    day: np.ndarray | None  # per event: epoch day (None: not decoded, see site_log)
    match: Match
    tz: np.ndarray | None = None  # per event: tz code (group log only)


class Routing(DayEffects):
    @preparation
    def roster(self) -> RosterKeys:
        """Arrival ordinals follow roster order per merchant (virtual ordinals likewise among the
        virtual arrivals), so the sorted key set follows from the per-merchant counts alone: a
        million arrivals need no sort to be keyed."""
        r = self.inputs["s5_arrival_roster"]
        merchant_ids = self.codes.merchant_ids
        merchant = index_in(merchant_ids, r["merchant_id"].to_numpy(), scattered=True)
        known = merchant >= 0
        counts = np.bincount(merchant[known], minlength=len(merchant_ids))
        virtual = r["is_virtual"].to_numpy() & known
        virtual_merchant = merchant[virtual]
        day = epoch_days(r["utc_day"])  # roster order
        # The virtual arrivals are few: their days are put in key order by a (stable) sort.
        virtual_day = day[virtual][np.argsort(virtual_merchant, kind="stable")]
        # Merchants outside every table S7 knows cannot be coded; S5.ROSTER names them from the raw ids.
        merchants = sorted_unique(r["merchant_id"].to_numpy()) if not known.all() else merchant_ids[counts > 0]
        return RosterKeys(keys.event_keys_from_counts(counts),
                          keys.event_keys_from_counts(np.bincount(virtual_merchant, minlength=len(merchant_ids))),
                          merchant, known, day, virtual_day, merchants, merchant_ids)

    @preparation
    def roster_day_by_key(self) -> np.ndarray:
        """Roster days in arrival key order: the row-by-row map, built only when the cheap proof in
        S5.GROUP_DAY does not apply or fails (then its detail needs it)."""
        roster = self.roster
        narrow = np.uint16 if len(roster.merchant_ids) < (1 << 16) - 1 else np.uint32
        order = np.argsort((roster.merchant + 1).astype(narrow), kind="stable")  # keeps roster order inside a merchant
        return roster.day[order][roster.known[order]]

    def _keyed_log(self, dataset_id: str, ordinal_col: str, expected: Callable[[RosterKeys], np.ndarray],
                   with_day: bool = True, with_tz: bool = False) -> EventLog:
        """The log keyed and matched to the `expected` keys of the roster (read after the log, so that
        a malformed log is what its checks name)."""
        ev = self.inputs[dataset_id]
        merchant = index_in_runs(self.codes.merchant_ids, ev["merchant_id"].to_numpy())
        key = keys.event_keys(merchant, ev[ordinal_col].to_numpy())
        day = epoch_days(ev["utc_day"]) if with_day else None
        tz = self.tz_codes(ev["tz_group_id"]) if with_tz else None
        roster = self.roster
        expected_keys = expected(roster)

        def name_events(rows):
            return ev[rows].select("merchant_id", ordinal_col).rows() if len(rows) else []

        def name_expected(rows):
            return [(int(roster.merchant_ids[m]), int(k)) for m, k in map(keys.event_key_parts, expected_keys[rows])]

        return EventLog(merchant, key, day, match_events(key, expected_keys, name_events, name_expected), tz)

    @preparation.named("group")
    def group_log(self) -> EventLog:
        return self._keyed_log(GROUP_LOG, "arrival_seq", lambda roster: roster.arrival_keys, with_tz=True)

    @preparation.named("site")
    def site_log(self) -> EventLog:
        # Site days and groups are compared with the group log's (checked against the roster and
        # S4) row by row when both logs line up, so they are only decoded when they do not.
        return self._keyed_log(SITE_LOG, "arrival_seq", lambda roster: roster.arrival_keys, with_day=False)

    @preparation.named("edge")
    def edge_log(self) -> EventLog:
        return self._keyed_log(EDGE_LOG, "virtual_seq", lambda roster: roster.virtual_keys)

    @preparation.named("site_lookup")
    def picked_site_rows(self) -> np.ndarray:
        """For each site event, the row of the site (in sites.with_tz) its site_id names, -1 when none."""
        with_tz = self.sites.with_tz
        sid = site_ids(with_tz["merchant_id"].to_list(), with_tz["legal_country_iso"].to_list(), with_tz["site_order"].to_list())
        order = np.argsort(sid, kind="stable")
        first = np.ones(len(sid), dtype=bool)  # a repeated site (S1.SITE_KEYSET fails) maps once
        first[1:] = sid[order][1:] != sid[order][:-1]
        order = order[first]
        pos = index_in(sid[order], self.inputs[SITE_LOG]["site_id"].to_numpy(), scattered=True)
        return np.where(pos >= 0, take(order, pos), -1)

    def _day_faults(self, dataset_id: str, ordinal_col: str, log: EventLog, roster_day: np.ndarray) -> str | None:
        ev, hit = self.inputs[dataset_id], log.match.pos >= 0
        # Malformed days (-1) never equal a roster day, which is a real YYYY-MM-DD (S5.ROSTER).
        bad = hit & ((log.day != take(roster_day, log.match.pos, -1)) | (log.day < 0))
        if not bad.any():
            return None
        rows = ev.filter(pl.Series(bad)).select("merchant_id", ordinal_col, "utc_day").rows()
        return f"{int(bad.sum())} {dataset_id} events whose utc_day is not the roster day{examples(rows)}"

    # -- S5 -------------------------------------------------------------------------------------

    @shard_check("S5.ROSTER", facts={"arrivals": SUM, "virtual": SUM},
                 metrics={"arrivals": "arrivals", "virtual_arrivals": "virtual"},
                 pass_detail=lambda f: f"{f['arrivals']} arrivals in time order, days consistent, merchants known")
    def roster_order(self) -> Outcome:
        """Roster in utc_timestamp order, merchants known to S1, utc_day = the date of the timestamp."""
        r = self.inputs["s5_arrival_roster"]
        problems = []
        # Only timestamp order matters to the RNG law: k counts a merchant's own arrivals, and two
        # arrivals of one merchant at one instant tie on merchant_id as well, so the merchant_id
        # tie-break (checked when the roster was written) cannot change any ordinal.
        if not r["utc_timestamp"].is_sorted():
            problems.append("rows are not in utc_timestamp order")
        wrong_day = every_roster_day_fault(r) if problems else roster_day_faults(r)
        if wrong_day:
            problems.append(f"{wrong_day} rows whose utc_day is not the date of utc_timestamp")
        s1_merchants = sorted_unique(self.sites.weights["merchant_id"].to_numpy())
        outside = only_in(self.roster.merchants, s1_merchants)
        if len(outside):
            problems.append(f"{len(outside)} merchants with arrivals but without S1 sites{examples(outside)}")
        return problems, {"arrivals": r.height, "virtual": int(r["is_virtual"].sum())}

    @shard_check("S5.EVENT_COUNT", facts={"arrivals": SUM, "group_events": SUM, "site_events": SUM},
                 metrics={"s5_group_events": "group_events", "s5_site_events": "site_events"},
                 pass_detail=lambda f: f"{f['arrivals']} arrivals, exactly one group and one site event each")
    def s5_event_count(self) -> Outcome:
        """Exactly one group and one site event per arrival, none else."""
        n = len(self.roster.arrival_keys)
        group, site = self.group_log.match, self.site_log.match
        n_group, n_site = self.inputs[GROUP_LOG].height, self.inputs[SITE_LOG].height
        detail = f"group: {group.detail('group', n, n_group)} | site: {site.detail('site', n, n_site)}"
        return [] if group.ok and site.ok else [detail], {"arrivals": n, "group_events": n_group, "site_events": n_site}

    @shard_check("S5.COUNTERS", facts={"counters": SUM}, pass_detail=lambda f: f"{f['counters']} counters unique and on the law")
    def s5_counters(self) -> Outcome:
        """Group (m, 2k) -> (m, 2k + 1), site (m, 2k + 1) -> (m, 2k + 2); one draw, one block; unique."""
        grp, site = self.inputs[GROUP_LOG], self.inputs[SITE_LOG]
        two = np.uint64(2)
        bad_group = counter_faults(grp, "arrival_seq", lambda k: two * k)
        bad_site = counter_faults(site, "arrival_seq", lambda k: two * k + np.uint64(1))
        problems = []
        for name, df, bad in (("group", grp, bad_group), ("site", site, bad_site)):
            if bad.any():
                rows = df.filter(pl.Series(bad)).select("merchant_id", "arrival_seq").rows()
                problems.append(f"{int(bad.sum())} {name} events off the counter law{examples(rows)}")
        # Law-abiding counters are unique iff (merchant_id, arrival_seq) is unique per log (group
        # counters even, site counters odd); count duplicates outright only when that proof fails.
        key_dups = self.group_log.match.duplicated + self.site_log.match.duplicated
        if problems or key_dups:
            dups = duplicate_counters([grp, site])
            if dups:
                problems.append(f"{dups} events share a counter")
        return problems, {"counters": grp.height + site.height}

    @shard_check("S5.GROUP_DAY", facts={}, pass_detail=lambda f: "every S5 event carries its arrival's roster day")
    def s5_day(self) -> Outcome:
        """Every group and site event's utc_day is its arrival's roster day."""
        group, site = self.group_log, self.site_log
        grp, site_ev = self.inputs[GROUP_LOG], self.inputs[SITE_LOG]
        if group.match.aligned and site.match.aligned:
            # Same arrival on the same row of both logs: a site day equal to its group day is right
            # exactly when the group day is.
            site_day = np.where((site_ev["utc_day"] == grp["utc_day"]).to_numpy(), group.day, -1)
            site = replace(site, day=site_day)
            if self.passed("S5.ROSTER") and (site_day >= 0).all():
                roster = self.roster
                if same_days(roster.merchant[roster.known], roster.day[roster.known], group.merchant, group.day):
                    return [], {}
        else:
            site = replace(site, day=epoch_days(site_ev["utc_day"]))
        day = self.roster_day_by_key
        problems = [p for p in (self._day_faults(GROUP_LOG, "arrival_seq", group, day),
                                self._day_faults(SITE_LOG, "arrival_seq", site, day)) if p]
        return problems, {}

    @shard_check("S5.GROUP_ECHO", facts={"picks": SUM},
                 pass_detail=lambda f: f"{f['picks']} group picks exist in S4 with p_group echoed")
    def group_echo(self) -> Outcome:
        """The picked group exists in S4 for the merchant-day and its p_group is echoed exactly (and > 0)."""
        grp = self.inputs[GROUP_LOG]
        s4 = self.s4
        group = self.group_log
        key = keys.day_keys(group.merchant, group.day, group.tz)
        k4 = s4.key
        order = np.arange(len(k4)) if bool((k4[1:] > k4[:-1]).all()) else np.argsort(k4, kind="stable")
        pos = index_in(k4[order], key)
        absent = pos < 0
        p4 = take(s4.rows["p_group"].to_numpy()[order], pos)
        p_ev = grp["p_group"].to_numpy()
        diff = ~absent & (p_ev.view(np.uint64) != p4.view(np.uint64))
        zero = ~absent & ~diff & ~(p_ev > 0)
        problems = []
        for mask, what in ((absent, "pick a group absent from S4 for that merchant-day"),
                           (diff, "carry a p_group that is not S4's"),
                           (zero, "pick a group whose p_group is not > 0")):
            if mask.any():
                rows = grp.filter(pl.Series(mask)).select("merchant_id", "arrival_seq", "utc_day", "tz_group_id").rows()
                problems.append(f"{int(mask.sum())} group events {what}{examples(rows)}")
        return problems, {"picks": grp.height}

    @shard_check("S5.SITE_KEY", facts={"events": SUM},
                 pass_detail=lambda f: f"{f['events']} site events name real sites of their merchant")
    def site_key(self) -> Outcome:
        """The picked site is a site of the merchant, and site_id follows the hash law."""
        ev = self.inputs[SITE_LOG]
        with_tz = self.sites.with_tz
        row = self.picked_site_rows
        known = row >= 0
        same = known
        if known.any():  # (a shard may hold site events but no site at all)
            r = np.maximum(row, 0)
            same = (known
                    & (with_tz["merchant_id"].to_numpy()[r] == ev["merchant_id"].to_numpy())
                    & (with_tz["site_order"].to_numpy()[r] == ev["site_order"].to_numpy())
                    & (with_tz["legal_country_iso"].gather(r) == ev["legal_country_iso"]).to_numpy())
        bad = ~same
        if bad.any():
            rows = ev.filter(pl.Series(bad)).select("merchant_id", "arrival_seq", "site_id").rows()
            return [(f"{int(bad.sum())} site events whose site_id is not the hash of a site of the merchant "
                     f"with the logged key ({int((~known).sum())} unknown ids){examples(rows)}")], {"events": ev.height}
        return [], {"events": ev.height}

    @shard_check("S5.SITE_TZ", facts={"events": SUM},
                 pass_detail=lambda f: f"{f['events']} picked sites lie in the picked tz group")
    def site_tz(self) -> Outcome:
        """The picked site (one of the merchant's) has tzid = the site event's group = the group event's group."""
        ev, grp = self.inputs[SITE_LOG], self.inputs[GROUP_LOG]
        with_tz = self.sites.with_tz
        row = self.picked_site_rows
        # A site of another merchant counts as unknown here (S5.SITE_KEY names it): a shard does
        # not hold other merchants' sites, and the verdict must not depend on the shard bounds.
        known = (row >= 0) & (take(with_tz["merchant_id"].to_numpy(), row) == ev["merchant_id"].to_numpy())
        group, site = self.group_log, self.site_log
        if group.match.aligned and site.match.aligned:
            # Row i of both logs is the same arrival: compare the two logged groups, then the
            # picked site's tz with the group's (as codes; strings only where the logs disagree).
            split = (grp["tz_group_id"] != ev["tz_group_id"]).to_numpy()
            site_tz = take(self.tz_codes(with_tz["tzid"]), row, -1)
            wrong = ~known | (site_tz != group.tz)
            if split.any():
                i = np.flatnonzero(split & known)
                wrong[split] = ~known[split]
                wrong[i] = (with_tz["tzid"].gather(row[i]) != ev["tz_group_id"].gather(i)).to_numpy()
        else:
            wrong = ~known
            if known.any():
                wrong |= (with_tz["tzid"].gather(np.maximum(row, 0)) != ev["tz_group_id"]).to_numpy()
            # Put each log's groups on the roster's rows, then compare arrivals both logs cover.
            group_pos, site_pos = group.match.pos, site.match.pos
            n = len(self.roster.arrival_keys)
            group_at, site_at = np.full(n, -1), np.full(n, -1)
            group_at[group_pos[group_pos >= 0]] = np.flatnonzero(group_pos >= 0)
            site_at[site_pos[site_pos >= 0]] = np.flatnonzero(site_pos >= 0)
            both = (group_at >= 0) & (site_at >= 0)
            split = np.zeros(ev.height, dtype=bool)
            group_tz = grp["tz_group_id"].gather(group_at[both])
            split[site_at[both]] = (group_tz != ev["tz_group_id"].gather(site_at[both])).to_numpy()
        problems = []
        if wrong.any():
            rows = ev.filter(pl.Series(wrong)).select("merchant_id", "arrival_seq", "tz_group_id").rows()
            problems.append(f"{int(wrong.sum())} picked sites are not in the event's tz group{examples(rows)}")
        if split.any():
            rows = ev.filter(pl.Series(split)).select("merchant_id", "arrival_seq").rows()
            problems.append(f"{int(split.sum())} arrivals whose site event group differs from the group event{examples(rows)}")
        return problems, {"events": ev.height}

    # -- S6 -------------------------------------------------------------------------------------

    @shard_check("S6.EVENT_COUNT", facts={"virtual": SUM, "edge_events": SUM}, metrics={"s6_edge_events": "edge_events"},
                 pass_detail=lambda f: f"{f['virtual']} virtual arrivals, exactly one edge event each, none for other arrivals")
    def s6_event_count(self) -> Outcome:
        """Exactly one edge event per virtual arrival, none for other arrivals."""
        n = len(self.roster.virtual_keys)
        match = self.edge_log.match
        n_edge = self.inputs[EDGE_LOG].height
        return [] if match.ok else [match.detail("edge", n, n_edge)], {"virtual": n, "edge_events": n_edge}

    @shard_check("S6.COUNTERS", facts={"events": SUM}, pass_detail=lambda f: f"{f['events']} edge counters unique and on the law")
    def s6_counters(self) -> Outcome:
        """Edge (m, v) -> (m, v + 1), one draw, one block; unique."""
        ev = self.inputs[EDGE_LOG]
        bad = counter_faults(ev, "virtual_seq", lambda v: v)
        problems = []
        if bad.any():
            rows = ev.filter(pl.Series(bad)).select("merchant_id", "virtual_seq").rows()
            problems.append(f"{int(bad.sum())} edge events off the counter law{examples(rows)}")
        if problems or self.edge_log.match.duplicated:
            dups = duplicate_counters([ev])
            if dups:
                problems.append(f"{dups} events share a counter")
        return problems, {"events": ev.height}

    @shard_check("S6.DAY", facts={}, pass_detail=lambda f: "every edge event carries its virtual arrival's roster day")
    def s6_day(self) -> Outcome:
        """Every edge event's utc_day is its virtual arrival's roster day."""
        problem = self._day_faults(EDGE_LOG, "virtual_seq", self.edge_log, self.roster.virtual_day)
        return [problem] if problem else [], {}
