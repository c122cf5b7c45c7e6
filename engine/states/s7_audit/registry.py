"""The check registry: how a check is declared, run, merged over shards and written to the report.

A check is declared once, where it is implemented, by a decorator that carries everything the
report needs to know about it:

    @shard_check("S4.MASS", facts={"merchant_days": SUM, "max_delta": MAX},
                 metrics={"merchant_days": "merchant_days", "mass_max_abs_delta": "max_delta"},
                 pass_detail=lambda f: f"{f['merchant_days']} merchant-days sum to 1 ...")
    def mass(self) -> Outcome: ...

It returns an Outcome: the problems it found and its facts (the numbers its PASS detail and its
metrics are written from). The pass rule is the same for every check: it passes when neither it,
nor any shard, nor the merge of the shards' facts found a problem. A check that raises fails with
"cannot run: <why>" instead of stopping the audit, so one malformed input cannot hide the verdict
of the checks that do not read it.

Global checks run once, in finish. Shard checks run in every merchant shard, and finish merges
their facts fact by fact with the declared rule; the PASS detail and the metrics are written only
from the merged facts, so a valid run gives the same report whatever the number of shards.

Checks run in the order they are declared. A check may consult the verdict of one declared before
it (`Audit.passed`): further up its module, or in a module its module imports.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EXAMPLES = 3  # offending keys quoted per failed check: enough to debug, small enough to read

Outcome = tuple[list[str], dict | None]  # (problems, facts); facts is None when the check could not run


class Blocked(Exception):
    """A check cannot run because something it needs is malformed; the check fails with this reason."""


def examples(rows) -> str:
    """A few offending keys for a FAIL detail."""
    rows = list(rows)[:EXAMPLES]
    return "; e.g. " + ", ".join(str(r) for r in rows) if rows else ""


def json_number(value):
    """A metric as canonical JSON can hold it: canonical JSON forbids NaN and infinities, so a
    float that is not finite becomes null; counts stay integers."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    return value


class preparation(functools.cached_property):  # lower case: a decorator, like cached_property
    """A cached property for what several checks share, built at most once per audit.

    Unlike a plain cached_property its failure is cached too: every check that needs a
    preparation which cannot be built is blocked with the same reason, named by the
    preparation's label (its attribute name unless given)."""

    def __init__(self, func, label: str | None = None):
        super().__init__(func)
        self.label = label

    @classmethod
    def named(cls, label: str):
        """A preparation whose failures name it `label` (the name FAIL details have always used)."""
        return lambda func: cls(func, label)

    def __set_name__(self, owner, name):
        super().__set_name__(owner, name)
        self.label = self.label or name

    def __get__(self, audit, owner=None):
        if audit is None:
            return self
        failed = audit.__dict__.setdefault("_failed_preparations", {})
        if self.attrname in failed:
            raise Blocked(failed[self.attrname])
        try:
            value = self.func(audit)
        except Blocked as exc:
            failed[self.attrname] = str(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - malformed input: fail closed, naming it
            failed[self.attrname] = f"{self.label}: {type(exc).__name__}: {exc}"
            raise Blocked(failed[self.attrname]) from exc
        # A success is stored under the attribute's own name: later reads no longer reach __get__.
        audit.__dict__[self.attrname] = value
        return value


# ----------------------------------------------------------------------------------------------
# merge rules: how one fact of a shard check combines over the shards, in shard order


class MergeRule:
    def merge(self, name: str, values: list) -> tuple[Any, list[str]]:
        """(the merged value, problems the merge found)."""
        raise NotImplementedError


class _Sum(MergeRule):
    """Counts: summed, exactly."""

    def merge(self, name, values):
        return sum(values), []


class _Max(MergeRule):
    """Worst deltas: maxed, which is exact for floats too. A shard without rows says None; NaN
    (a failed row) is ignored unless nothing else is known, as np.nanmax does; 0.0 when no
    shard has rows."""

    def merge(self, name, values):
        seen = [v for v in values if v is not None]
        finite = [v for v in seen if not np.isnan(v)]
        return (max(finite) if finite else (float("nan") if seen else 0.0)), []


class _Same(MergeRule):
    """A constant (the day grid): the same in every shard that knows it; None from a shard that
    cannot tell (no S3 row and no policy grid). The merged value is None, and so is no metric,
    when the shards disagree or none knows."""

    def merge(self, name, values):
        known = list(dict.fromkeys(v for v in values if v is not None))
        if len(known) > 1:
            return None, [f"shards disagree on {name}: {known[:EXAMPLES]}"]
        if not known:
            return None, [f"no shard can establish {name}"]
        return known[0], []


SUM, MAX, SAME = _Sum(), _Max(), _Same()


def merge_facts(rules: Mapping[str, MergeRule], facts: list[dict | None]) -> tuple[dict | None, list[str]]:
    """The shards' facts merged rule by rule, and the problems merging found; None when a shard
    has no facts (its check could not run, and says why among its problems)."""
    if any(f is None for f in facts):
        return None, []
    merged, problems = {}, []
    for name, rule in rules.items():
        merged[name], found = rule.merge(name, [f[name] for f in facts])
        problems += found
    return merged, problems


def join_shard_problems(per_shard: list[list[str]]) -> list[str]:
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


# ----------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Check:
    id: str
    run: Callable[[Any], Outcome]
    pass_detail: Callable[[dict], str]
    metrics: Mapping[str, str]  # report metric -> the fact it is written from
    facts: Mapping[str, MergeRule] | None  # a shard check's facts and their merge rules; None: global
    then: Callable[[Any, dict], list[str]] | None = None  # in finish, over the merged facts: more problems

    @property
    def sharded(self) -> bool:
        return self.facts is not None


CHECKS: dict[str, Check] = {}  # in run order


def register(check: Check) -> Check:
    if check.id in CHECKS:
        raise ValueError(f"check {check.id} registered twice")
    taken = {m for c in CHECKS.values() for m in c.metrics}
    if taken & set(check.metrics):
        raise ValueError(f"{check.id}: metric(s) {sorted(taken & set(check.metrics))} already written by another check")
    if check.sharded and not set(check.metrics.values()) <= set(check.facts):
        raise ValueError(f"{check.id}: metrics written from undeclared facts")
    CHECKS[check.id] = check
    return check


def global_check(check_id: str, *, pass_detail: Callable[[dict], str], metrics: Mapping[str, str] | None = None):
    """A check over the small global inputs, run once in finish."""
    def decorate(func):
        register(Check(check_id, func, pass_detail, dict(metrics or {}), None))
        return func
    return decorate


def shard_check(check_id: str, *, facts: Mapping[str, MergeRule], pass_detail: Callable[[dict], str],
                metrics: Mapping[str, str] | None = None, then: Callable[[Any, dict], list[str]] | None = None):
    """A check run in every merchant shard; `facts` names every fact it returns and how it merges."""
    def decorate(func):
        register(Check(check_id, func, pass_detail, dict(metrics or {}), dict(facts), then))
        return func
    return decorate


def _cannot_run(exc: Exception) -> str:
    return f"cannot run: {exc}" if isinstance(exc, Blocked) else f"cannot run: {type(exc).__name__}: {exc}"


def attempt(check: Check, audit) -> Outcome:
    try:
        problems, facts = check.run(audit)
    except Exception as exc:  # noqa: BLE001 - an audit must not crash on bad data: the check fails and says why
        return [_cannot_run(exc)], None
    if check.sharded and list(facts) != list(check.facts):
        # A programming error, not a finding about the data: the merge would be wrong.
        raise TypeError(f"{check.id} returned facts {list(facts)}, declared {list(check.facts)}")
    return problems, facts


@dataclass
class Part:
    """One shard's verdicts: per shard check, its problems and facts. Small: no per-row data."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)


def run_shard_checks(audit) -> Part:
    for check in CHECKS.values():
        if check.sharded:
            audit.outcomes[check.id] = attempt(check, audit)
    return Part(dict(audit.outcomes))


def settle(audit, parts: list[Part]) -> tuple[list[dict], dict]:
    """Every check's verdict {id, status, detail} in id order, and the metrics of their facts:
    the global checks run here, the shard checks' outcomes are merged."""
    results, metrics = {}, {}
    for check in CHECKS.values():
        if check.sharded:
            outcomes = [part.outcomes[check.id] for part in parts]
            facts, merge_problems = merge_facts(check.facts, [f for _, f in outcomes])
            problems = join_shard_problems([p for p, _ in outcomes]) + merge_problems
            if check.then is not None and facts is not None:
                try:
                    problems = problems + check.then(audit, facts)
                except Exception as exc:  # noqa: BLE001 - the check fails and says why
                    problems = problems + [_cannot_run(exc)]
        else:
            problems, facts = attempt(check, audit)
        audit.outcomes[check.id] = (problems, facts)
        if facts is not None:
            for metric, name in check.metrics.items():
                if facts[name] is not None:
                    metrics[metric] = json_number(facts[name])
        ok = not problems
        results[check.id] = {"id": check.id, "status": "PASS" if ok else "FAIL",
                             "detail": check.pass_detail(facts) if ok else "; ".join(problems)}
    return [results[k] for k in sorted(results)], metrics
