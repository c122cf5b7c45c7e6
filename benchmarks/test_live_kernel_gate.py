"""The runtime gate on real kernel timings (not part of the default test suite: it reads the clock).

Run with `python -m pytest benchmarks/test_live_kernel_gate.py`: the calibration sort and the three
engine kernels timed round-robin against the committed kernel budgets, and the same measurement
with a kernel made 2x slower, which must fail.
"""

from __future__ import annotations

from benchmarks import check_budgets as CB
from benchmarks import workloads as W

BUDGETS = CB.load_json(CB.DEFAULT_BUDGETS)


def _kernel_gate(kernels=None, slowdown: dict | None = None):
    """(report, attempts) of the real kernel gate; `slowdown` = {kernel: k} runs that kernel k times
    per timing (an injected regression)."""
    kernel_budgets = {n: b for n, b in BUDGETS["benchmarks"].items()
                      if b["calibration"] == "numpy" and (kernels is None or n in kernels)}
    budgets = {**BUDGETS, "benchmarks": kernel_budgets}
    numpy_cal = BUDGETS["calibration"]["numpy"]
    fns = {numpy_cal: W.CALIBRATION[numpy_cal][0](), **{n: W.KERNELS[n][0]() for n in kernel_budgets}}
    for name, k in (slowdown or {}).items():
        fns[name] = (lambda fn, k: lambda: [fn() for _ in range(k)])(fns[name], k)  # noqa: B023 (bound by the outer lambda)
    best = {n: float("inf") for n in fns}
    for attempt in range(1, 4):  # noqa: B007 (returned after the loop)
        for name, times in W.time_interleaved(fns, rounds=5).items():
            best[name] = min(best[name], *times)
        extra = {n: {"kind": "kernel"} for n in kernel_budgets}
        rep = CB.evaluate(CB.bench_json_from_seconds(best, extra), budgets, allow_missing=True)
        if rep.ok:
            break
    return rep, attempt


def test_kernels_within_budget_on_this_machine():
    """Real timings of the calibration sort and the three kernels, gated against their budgets.

    Workloads are timed round-robin (so the sort and the kernels share the machine's moments of
    load) and each keeps its minimum. On a breach, more rounds are added (at most 3 attempts of
    about a second each): a burst of load from another process fades out of the minimum, a real
    regression stays.
    """
    rep, attempts = _kernel_gate()
    assert rep.ok, f"after {attempts} attempts\n" + CB.format_report(rep)


def test_real_2x_kernel_slowdown_fails_the_gate():
    rep, attempts = _kernel_gate(kernels={"test_alias_build_many_110k"}, slowdown={"test_alias_build_many_110k": 2})
    assert attempts == 3 and not rep.ok
    assert [r["name"] for r in rep.budget_rows if r["status"] == "BREACH"] == ["test_alias_build_many_110k"]


def test_kernels_within_budget_on_this_machine():
    rep, attempts = _kernel_gate()
    assert rep.ok, f"after {attempts} attempts\n" + CB.format_report(rep)


def test_real_2x_kernel_slowdown_fails_the_gate():
    rep, attempts = _kernel_gate(kernels={"test_alias_build_many_110k"}, slowdown={"test_alias_build_many_110k": 2})
    assert attempts == 3 and not rep.ok
