"""The decision rule of the A/B runtime gate (benchmarks/ab.py): pure functions of timing samples.

Nothing here reads the clock, so the default test suite can exercise the rule on synthetic samples.

Input: per benchmark, paired samples (a_i, b_i), i = 1..n, where a_i (base) and b_i (candidate)
were timed one after the other in round i on the same machine. Per benchmark:

* d_i = log(b_i / a_i). The machine's speed multiplies a_i and b_i alike and cancels in d_i; a
  burst of load that hits one run of a pair makes one outlying d_i, of either sign because the
  order within a pair alternates (A B, B A, ...). With the same code on both sides d_i is
  symmetric around 0; with B r times slower, around log r.
* Estimate: the Hodges-Lehmann estimate of the centre (median of the Walsh averages
  (d_i + d_j) / 2, i <= j), reported as the ratio B/A = exp(estimate).
* Bounds: the exact one-sided Wilcoxon signed-rank confidence bounds (the k-th smallest and k-th
  largest Walsh average, k from the exact null distribution of the signed-rank statistic, each
  at level 1 - alpha). Distribution-free under symmetry, which the pairing provides, and robust
  to a minority of wild rounds. `method="sign"` uses the sign-test bounds on the median instead
  (order statistics: fewer assumptions, less power).
* The same estimate and bounds on the extra seconds b_i - a_i.

Verdict per benchmark at a look (after min_rounds, then every `step` rounds up to max_rounds):

* suspect (before max_rounds): the estimates say slower, B/A above `threshold` and the extra
  seconds above `floor_seconds`. The gate adds `step` rounds while any benchmark is suspect.
* BREACH (only at max_rounds): the lower bound of B/A is above `threshold` and the lower bound
  of the extra seconds above `floor_seconds` (a stage of a few milliseconds can come out "1.5x"
  from timer and file-system jitter alone). A breach is decided by one test on the most rounds
  the gate takes: looking for breaches at every look would multiply the chances of a false one.
* ok: a slowdown of `clear` or more is ruled out (upper bound of B/A below `clear`), or the upper
  bound of the extra seconds is below `floor_seconds`; "faster" when even the upper bound of B/A
  is below 1 / threshold.
* undecided: none of these; it passes, with a note: the estimate is not above the threshold, but
  the machine was too noisy to rule out a `clear` slowdown in these rounds.

So a clean tree costs min_rounds rounds (plus a step or two when noise makes something look
slower), a regression costs max_rounds; only a breach fails. Failing a tree for the machine's
noise is what this gate exists to avoid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np


@dataclass(frozen=True)
class Rule:
    threshold: float = 1.10  # a breach: B/A above this, beyond noise
    clear: float = 1.30  # cleared: a slowdown of this much ruled out
    alpha: float = 0.01  # one-sided error of each bound, per benchmark and look
    floor_seconds: float = 0.002  # extra seconds per run below which no slowdown counts
    min_rounds: int = 8  # rounds before the first look
    max_rounds: int = 24
    step: int = 4  # rounds added per look
    method: str = "wilcoxon"  # or "sign"

    def __post_init__(self):
        if self.method not in ("wilcoxon", "sign"):
            raise ValueError(f"unknown method {self.method!r}")
        if not (1.0 <= self.threshold < self.clear and 0.0 < self.alpha < 0.5 and self.floor_seconds >= 0.0):
            raise ValueError("1 <= threshold < clear, 0 < alpha < 0.5, floor_seconds >= 0")
        if not (2 <= self.min_rounds <= self.max_rounds and self.step >= 1):
            raise ValueError("2 <= min_rounds <= max_rounds, step >= 1")


# -- exact null distributions -------------------------------------------------------------------


@cache
def _signed_rank_cdf(n: int) -> tuple[float, ...]:
    """P(T+ <= t), t = 0 .. n(n+1)/2, for the Wilcoxon signed-rank statistic of n untied pairs."""
    counts = [1]
    for r in range(1, n + 1):
        nxt = counts + [0] * r
        for w, c in enumerate(counts):
            nxt[w + r] += c
        counts = nxt
    total, acc, out = float(2**n), 0, []
    for c in counts:
        acc += c
        out.append(acc / total)
    return tuple(out)


@cache
def _binomial_cdf(n: int) -> tuple[float, ...]:
    acc, out = 0, []
    for k in range(n + 1):
        acc += math.comb(n, k)
        out.append(acc / 2.0**n)
    return tuple(out)


def bound_rank(n: int, alpha: float, method: str) -> int:
    """k (1-based) such that the k-th smallest Walsh average (wilcoxon) or observation (sign) is a
    one-sided 1 - alpha lower confidence bound of the centre; 0 when n is too small for any."""
    cdf = _signed_rank_cdf(n) if method == "wilcoxon" else _binomial_cdf(n)
    # P(bound > centre) = P(S <= k - 1): the largest k with that at most alpha.
    k = 0
    while k < len(cdf) and cdf[k] <= alpha:
        k += 1
    return k


def _walsh(x: list[float]) -> list[float]:
    a = np.asarray(x, dtype=np.float64)
    i, j = np.triu_indices(a.size)
    return np.sort((a[i] + a[j]) / 2.0).tolist()


def centre_and_bounds(x: list[float], alpha: float, method: str) -> tuple[float, float, float]:
    """(estimate, lower bound, upper bound) of the centre of x; bounds are one-sided 1 - alpha each."""
    if not x:
        return math.nan, -math.inf, math.inf
    pool = _walsh(x) if method == "wilcoxon" else sorted(x)
    m = len(pool)
    est = (pool[(m - 1) // 2] + pool[m // 2]) / 2.0
    k = bound_rank(len(x), alpha, method)
    if k == 0:
        return est, -math.inf, math.inf
    return est, pool[k - 1], pool[m - k]


def median(x: list[float]) -> float:
    s = sorted(x)
    n = len(s)
    return math.nan if n == 0 else (s[(n - 1) // 2] + s[n // 2]) / 2.0


# -- verdicts ---------------------------------------------------------------------------------


OK, FASTER, SUSPECT, UNDECIDED, BREACH, SKIPPED = "ok", "faster", "suspect", "undecided", "BREACH", "skipped"


@dataclass
class Row:
    name: str
    status: str
    n: int = 0
    a_median: float = math.nan
    b_median: float = math.nan
    ratio: float = math.nan  # estimate of B / A
    ratio_lo: float = math.nan
    ratio_hi: float = math.nan
    extra_seconds: float = math.nan  # estimate of B - A
    extra_lo: float = math.nan
    extra_hi: float = math.nan
    threshold: float = math.nan  # the breach threshold this benchmark was judged against
    note: str = ""


@dataclass
class Report:
    rule: Rule
    rows: list[Row] = field(default_factory=list)

    @property
    def breaches(self) -> list[Row]:
        return [r for r in self.rows if r.status == BREACH]

    @property
    def pending(self) -> list[Row]:
        """Benchmarks that want more rounds."""
        return [r for r in self.rows if r.status == SUSPECT]

    @property
    def ok(self) -> bool:
        return not self.breaches

    @property
    def n(self) -> int:
        return max((r.n for r in self.rows), default=0)


def judge(name: str, pairs: list[tuple[float, float]], rule: Rule, threshold: float | None = None) -> Row:
    """The verdict on one benchmark from its paired samples (base seconds, candidate seconds);
    which look this is follows from the number of pairs. `threshold` overrides the rule's."""
    threshold = rule.threshold if threshold is None else threshold
    pairs = [(float(a), float(b)) for a, b in pairs]
    n = len(pairs)
    if not n:
        return Row(name, SKIPPED, note="no samples")
    if not all(0.0 < x < math.inf for p in pairs for x in p):
        return Row(name, UNDECIDED, n=n, note="a sample is not a positive finite time")
    logs = [math.log(b / a) for a, b in pairs]
    diffs = [b - a for a, b in pairs]
    est, lo, hi = centre_and_bounds(logs, rule.alpha, rule.method)
    dest, dlo, dhi = centre_and_bounds(diffs, rule.alpha, rule.method)
    row = Row(name, UNDECIDED, n=n, a_median=median([a for a, _ in pairs]), b_median=median([b for _, b in pairs]),
              ratio=math.exp(est), ratio_lo=math.exp(lo), ratio_hi=math.exp(hi),
              extra_seconds=dest, extra_lo=dlo, extra_hi=dhi, threshold=threshold)
    last = n >= rule.max_rounds
    log_t = math.log(threshold)
    if last and lo > log_t and dlo > rule.floor_seconds:
        row.status = BREACH
    elif not last and est > log_t and dest > rule.floor_seconds:
        row.status, row.note = SUSPECT, f"slower: more rounds, decided at {rule.max_rounds}"
    elif hi < math.log(rule.clear) or dhi < rule.floor_seconds:
        row.status = FASTER if hi < -log_t else OK
        if row.status == OK and lo > log_t:
            row.note = f"slower, but by less than {rule.floor_seconds * 1e3:g} ms per run"
    else:
        row.note = f"noise: a {rule.clear:g}x slowdown not ruled out in {n} rounds"
    return row


def evaluate(samples: dict[str, list[tuple[float, float]]], rule: Rule, notes: dict[str, str] | None = None,
             thresholds: dict[str, float] | None = None) -> Report:
    """Verdicts for every benchmark; `notes` = {name: why} for benchmarks that are not compared
    (absent from one tree, unusable there): listed as skipped, never failed. `thresholds`:
    breach thresholds of particular benchmarks, instead of the rule's."""
    rep = Report(rule)
    for name, pairs in samples.items():
        rep.rows.append(judge(name, pairs, rule, (thresholds or {}).get(name)))
    for name, why in (notes or {}).items():
        if name not in samples:
            rep.rows.append(Row(name, SKIPPED, note=why))
    return rep


def rounds_wanted(rep: Report) -> int:
    """How many more rounds the gate should run before the next look (0: the report is final)."""
    r, n = rep.rule, rep.n
    if n < r.min_rounds:
        return r.min_rounds - n
    if rep.breaches or not rep.pending or n >= r.max_rounds:
        return 0
    return min(r.step, r.max_rounds - n)


# -- printing ---------------------------------------------------------------------------------


def _x(v: float, digits: int = 3) -> str:
    return "-" if math.isnan(v) else ("inf" if math.isinf(v) and v > 0 else "0" if math.isinf(v) else f"{v:.{digits}f}")


def _s(v: float, digits: int = 4) -> str:
    return "-" if math.isnan(v) or math.isinf(v) else f"{v:.{digits}f}"


def format_report(rep: Report) -> str:
    r = rep.rule
    w = max([len(x.name) for x in rep.rows] + [9])
    lines = [f"{'benchmark':<{w}}  {'rounds':>6}  {'A s':>8}  {'B s':>8}  {'B/A':>6}  "
             f"{'lo':>6}  {'hi':>6}  {'B-A s':>8}  {'limit':>5}  status"]
    for x in rep.rows:
        lines.append(f"{x.name:<{w}}  {x.n:>6}  {_s(x.a_median):>8}  {_s(x.b_median):>8}  {_x(x.ratio):>6}  "
                     f"{_x(x.ratio_lo):>6}  {_x(x.ratio_hi):>6}  {_s(x.extra_seconds):>8}  {_x(x.threshold, 2):>5}  "
                     f"{x.status}" + (f"  ({x.note})" if x.note else ""))
    lines.append("")
    lines.append(f"B/A: estimate and {1 - r.alpha:.0%} one-sided bounds ({r.method}, paired rounds); B-A: estimate in "
                 f"seconds. Breach: lo > limit and B-A lower bound > {r.floor_seconds * 1e3:g} ms after "
                 f"{r.max_rounds} rounds; suspect (estimates above both) adds rounds; ok: hi < {r.clear:g}.")
    if rep.ok:
        undecided = [x.name for x in rep.rows if x.status == UNDECIDED]
        lines.append(f"PASS: no benchmark slower than its limit beyond noise ({rep.n} rounds)"
                     + (f"; too noisy to rule out a {r.clear:g}x slowdown of: {', '.join(undecided)}" if undecided else ""))
    else:
        lines.append("FAIL: " + "; ".join(f"{x.name} {x.ratio:.2f}x slower (lower bound {x.ratio_lo:.2f}x, "
                                          f"+{x.extra_seconds:.3f} s per run)" for x in rep.breaches))
    return "\n".join(lines)
