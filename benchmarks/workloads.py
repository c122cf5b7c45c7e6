"""Fixed kernel workloads shared by the benchmark suite and the A/B runtime gate.

Each `make_*` builds its inputs once (outside any timing) and returns a zero-argument callable
that does only the timed work. The inputs are fixed (seeded numpy generators), so every session
on every machine times exactly the same work.

The A/B gate's runner (ab_runner.py) loads this file by path into a process whose `engine` is
another tree's (the base commit's): engine imports stay inside the factories, so a kernel the
other tree lacks fails its factory and is skipped, not the whole run.

Engine kernels:
  * philox_2m                   Philox2x64-10 over 2,000,000 counters
  * alias_build_many_110k       alias.build_many over 110,000 segments of 1..8 entries
  * alias_sample_many_1m        alias.sample_many, 1,000,000 draws over those tables
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PHILOX_COUNTERS = 2_000_000
ALIAS_SEGMENTS = 110_000
ALIAS_MAX_K = 8
ALIAS_DRAWS = 1_000_000


def make_philox_2m() -> Callable[[], object]:
    from engine.rng import philox2x64_10, stream_key

    lo = np.arange(PHILOX_COUNTERS, dtype=np.uint64)
    hi = np.repeat(np.arange(PHILOX_COUNTERS // 1000, dtype=np.uint64), 1000)  # 1,000 events per "merchant"
    key = stream_key("00" * 32, 42, "bench.philox")
    return lambda: philox2x64_10(lo, hi, key)


def alias_inputs():
    """(weights_flat, offsets) of ALIAS_SEGMENTS segments with 1..ALIAS_MAX_K entries each."""
    g = np.random.default_rng(20260103)
    sizes = g.integers(1, ALIAS_MAX_K + 1, ALIAS_SEGMENTS)
    off = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    w = g.gamma(0.7, 1.0, int(off[-1])) + 1e-6
    return w, off


def make_alias_build_many() -> Callable[[], object]:
    from engine.alias import build_many

    w, off = alias_inputs()
    return lambda: build_many(w, off)


def make_alias_sample_many() -> Callable[[], object]:
    from engine.alias import build_many, sample_many

    w, off = alias_inputs()
    q, a = build_many(w, off)
    g = np.random.default_rng(20260104)
    seg = g.integers(0, off.size - 1, ALIAS_DRAWS)
    u = 1.0 - g.random(ALIAS_DRAWS)  # (0, 1]
    return lambda: sample_many(q, a, off, seg, u)


# name used in the benchmark JSON -> (factory, description)
KERNELS = {
    "test_philox_2m": (make_philox_2m, "Philox2x64-10, 2M counters"),
    "test_alias_build_many_110k": (make_alias_build_many, "alias.build_many, 110k segments of 1..8"),
    "test_alias_sample_many_1m": (make_alias_sample_many, "alias.sample_many, 1M draws"),
}


def code_state(repo=None) -> dict:
    """Which code was measured: git HEAD, whether engine/ or certification/ differ from it, and a
    SHA-256 over their .py files (the engine is edited while benchmarks run: numbers need a label)."""
    import hashlib
    import subprocess
    from pathlib import Path

    repo = Path(repo or Path(__file__).resolve().parent.parent)
    h = hashlib.sha256()
    for p in sorted([*repo.glob("engine/**/*.py"), *repo.glob("certification/**/*.py")]):
        h.update(p.relative_to(repo).as_posix().encode() + b"\0" + p.read_bytes())

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--", "engine", "certification")
    return {"git_head": git("rev-parse", "HEAD"), "engine_dirty": bool(dirty) if dirty is not None else None,
            "code_sha256": h.hexdigest()}
