"""Who computes the shards of a sharded stage: this process (`local`) or a Dask cluster (`dask`).

The pipeline hands an executor a ShardJob (the stage, its small inputs whole, readers of its big
inputs, the targets of its streamed outputs, the run's workspace) and gets back the stage's
outputs: what `finish` returns plus one Staged file per streamed output, ready to publish. The
driver (the process running the pipeline) alone publishes and writes receipts, whatever the
executor; an executor only decides where shards are computed and how their rows reach the
staged files. The bytes are the same either way (tests/test_dask_executor.py), so the executor
is not part of a run's identity.

Local: the shards one after the other in this process, their outputs streamed into the writers
of engine/shards.py (the loop the pipeline has always run).

Dask (`dask.distributed` futures, one task per shard; not dask.dataframe, whose Parquet writer
deletes and fills folders, against the publish law): engine versions checked on every worker
first; shard tasks spill their outputs to the run's workspace (a shared POSIX filesystem) under
fixed names, so a retried task rewrites the same bytes; the driver adopts the spills in shard
order, has complete row groups encoded as tasks (engine/assembly.py) and joins the pieces
(engine/parquet_join.py). The steps, the failure behaviour and where it runs: docs/dask.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from .assembly import SpilledTable, check_same_outputs, check_streamed, discard_staged, spill_shard_output, split_small
from .context import Context
from .errors import EngineError
from .identity import length_prefixed
from .receipts import ENGINE_DIR, library_versions
from .shards import (
    ShardPlan,
    ShardReader,
    TimeOrderWriter,
    day_buckets,
    keep_as_split,
    split_folder,
    writer_for,
)

IO_THREADS = 2
EXECUTORS = ("local", "dask")


@dataclass
class ShardJob:
    stage: str
    module: ModuleType
    writes: tuple[str, ...]
    policies: dict
    ctx: Context
    plan: ShardPlan
    inputs: dict  # small inputs, whole
    readers: list[ShardReader]  # big inputs, read one shard at a time
    targets: dict[str, tuple[Path, str]]  # streamed outputs the stage may write: target path, partition stamp
    workspace: Path
    progress: Callable[[int, int], None] | None = None  # (shards done, shards)
    splits: Path | None = None  # where the run keeps splits (a time-ordered output's spills become one)

    def tick(self, done: int) -> None:
        if self.progress:
            self.progress(done, len(self.plan))


# ---------------------------------------------------------------------------------------------
# local


class LocalExecutor:
    """The shards one after the other, in this process."""

    name = "local"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def cli_args(self) -> list[str]:
        """The options a subprocess (the lane's replay) needs to run on this executor."""
        return []

    def subprocess_env(self) -> dict | None:
        return None

    def run_shards(self, job: ShardJob) -> tuple[dict, dict]:
        """Small inputs restricted in memory, big ones read per shard, big outputs streamed into
        staged files, the rest merged by `finish`."""
        plan = job.plan
        t0 = time.perf_counter()
        scratch = job.workspace / f"{job.stage}-scratch-{uuid.uuid4().hex[:12]}"
        writers: dict = {}
        staged: dict = {}
        parts = []
        try:
            for r in job.readers:
                r.prepare()
            with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
                for k in range(len(plan)):
                    shard = {d: plan.restrict(v, k) for d, v in job.inputs.items()}
                    tables = pool.map(ShardReader.read, job.readers, [k] * len(job.readers))
                    shard.update(zip((r.dataset_id for r in job.readers), tables))
                    out = dict(job.module.run_shard(shard, job.policies, job.ctx))
                    del shard
                    parts.append(out.pop("_part", None))
                    check_streamed(job.stage, job.writes, out)
                    check_same_outputs(job.stage, set(writers) if k else None, set(out))
                    for d in out:
                        if d not in writers:
                            writers[d] = writer_for(d, *job.targets[d], scratch, job.workspace)
                    names = sorted(out)
                    list(pool.map(lambda w, frame: w.append(frame), [writers[d] for d in names], [out[d] for d in names]))
                    del out
                    job.tick(k + 1)
            final = dict(job.module.finish(job.inputs, job.policies, job.ctx, parts))
            for d in sorted(writers):
                w = writers.pop(d)
                staged[d] = w.close(job.splits, plan) if isinstance(w, TimeOrderWriter) else w.close()
            return final | staged, {"executor": self.name, "shards": len(plan),
                                    "seconds": round(time.perf_counter() - t0, 4)}
        except BaseException:
            for w in writers.values():
                w.abort()
            discard_staged(staged)
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# what a worker runs (no Dask import here: these are plain functions of files and tables)


@lru_cache(maxsize=1)
def engine_fingerprint() -> dict[str, str]:
    """What must be the same on the driver and every worker for the bytes to be the same: the
    engine's source (every file of the package this process imported) and the library versions
    receipts record."""
    h = hashlib.sha256()
    for path in sorted(ENGINE_DIR.rglob("*.py"), key=lambda p: p.relative_to(ENGINE_DIR).as_posix()):
        h.update(length_prefixed(path.relative_to(ENGINE_DIR).as_posix().encode()))
        h.update(length_prefixed(path.read_bytes()))
    return {"engine": h.hexdigest(), **library_versions()}


def fingerprint_difference(theirs: dict, ours: dict) -> tuple[str, str] | None:
    """(what, how) of the first difference, or None."""
    for key in sorted(set(theirs) | set(ours)):
        if theirs.get(key) != ours.get(key):
            what = "engine code digest" if key == "engine" else f"{key} version"
            return key, f"{what} {str(theirs.get(key))[:12]} where the driver has {str(ours.get(key))[:12]}"
    return None


def worker_report() -> dict:
    return {"fingerprint": engine_fingerprint(), "host": socket.gethostname(), "pid": os.getpid(),
            "malloc_trim_threshold": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


@dataclass(frozen=True)
class TaskSpec:
    """What every shard task of a stage shares."""

    stage: str
    module: str
    writes: tuple[str, ...]
    policies: dict
    ctx: Context
    readers: tuple[ShardReader, ...]
    order: tuple[str, ...]  # the small inputs' names, in the order the state receives them
    scratch: Path
    fingerprint: dict


def _check_here(fingerprint: dict) -> None:
    diff = fingerprint_difference(engine_fingerprint(), fingerprint)
    if diff:
        raise EngineError(f"dask worker {socket.gethostname()} pid {os.getpid()}", diff[0], diff[1])


def compute_shard(spec: TaskSpec, k: int, piece: dict, shared: dict) -> dict:
    """Shard k of a stage: its rows read, the state run, each streamed output spilled."""
    t0 = time.perf_counter()
    _check_here(spec.fingerprint)
    module = importlib.import_module(spec.module)
    shard = {d: piece[d] if d in piece else shared[d] for d in spec.order}
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        shard.update(zip((r.dataset_id for r in spec.readers), pool.map(ShardReader.read, spec.readers, [k] * len(spec.readers))))
    try:
        out = dict(module.run_shard(shard, spec.policies, spec.ctx))
        del shard
        part = out.pop("_part", None)
        check_streamed(spec.stage, spec.writes, out)
        spilled = {d: spill_shard_output(d, out.pop(d), spec.scratch / f"{d}-{k:05d}.arrow") for d in sorted(out)}
    finally:
        # A worker's next shard is rarely this one's neighbour: rows a reader kept for the next
        # shard would only sit in memory, as would the Arrow pool's freed blocks.
        for r in spec.readers:
            r.forget()
        pa.default_memory_pool().release_unused()
    return {"part": part, "outputs": spilled, "seconds": time.perf_counter() - t0}


def _value(x):
    return x


def run_checked(fingerprint: dict, fn_name: str, *args):
    """Worker side of every task but the shard task: fingerprint check, then a function of
    assembly.py or shards.py (by name: the worker resolves it in its own, checked, engine)."""
    _check_here(fingerprint)
    from . import assembly, shards

    t0 = time.perf_counter()
    fn = getattr(assembly, fn_name, None) or getattr(shards, fn_name)
    out = fn(*args)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# dask


class DaskExecutor:
    """Shards as tasks on a Dask cluster: a LocalCluster of `workers` processes (one thread each),
    or the cluster whose scheduler listens at `scheduler`."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None, *, threads_per_worker: int = 1,
                 log: Callable[[str], None] | None = None, connect_timeout: float = 30.0):
        if workers is not None and scheduler is not None:
            raise EngineError("--workers", str(workers),
                              "give --workers (a local cluster) or --scheduler (an existing one), not both")
        self.workers = workers or os.cpu_count() or 1
        self.scheduler = scheduler
        self.threads_per_worker = threads_per_worker
        self.log = log
        self.connect_timeout = connect_timeout
        self._cluster = None
        self._client = None
        self._env: dict | None = None
        self._seen: set[str] = set()
        self.notes: list[str] = []

    # -- the cluster ---------------------------------------------------------------------------
    def __enter__(self):
        # Started (and every worker checked) before the run changes anything.
        self.client()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            if self._client is not None:
                self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        finally:
            self._client = self._cluster = None
            self._restore_env()

    def cli_args(self) -> list[str]:
        """The same cluster for a subprocess (the lane's replay): its scheduler's address."""
        client = self.client()
        return ["--executor", "dask", "--scheduler", client.scheduler.address]

    def subprocess_env(self) -> dict | None:
        """The environment as it was before the cluster started: a LocalCluster's nannies write
        their workers' settings (OMP_NUM_THREADS, PYTHONHASHSEED, ...) into this process's
        environment (dask/distributed#6749), which subprocesses would otherwise inherit."""
        return dict(self._env) if self._env is not None else None

    def _restore_env(self) -> None:
        if self._env is None:
            return
        for key in set(os.environ) - set(self._env):
            del os.environ[key]
        for key, value in self._env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value

    def client(self):
        if self._client is None:
            self._start()
        return self._client

    def _start(self) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise EngineError("--executor", "dask", "Dask is not installed: pip install 'seg2b[dask]'") from None
        self._env = dict(os.environ)
        # Dask's default MALLOC_TRIM_THRESHOLD_=65536 for workers costs this engine 5x the page
        # faults and a quarter more CPU time in S5 (measured at 4,952 merchants); glibc's own
        # threshold is kept.
        config = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        try:
            with dask.config.set(config):
                if self.scheduler:
                    self._client = Client(self.scheduler, timeout=f"{self.connect_timeout}s")
                else:
                    self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=self.threads_per_worker,
                                                 processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL)
                    self._client = Client(self._cluster)
            self._client.wait_for_workers(1, timeout=self.connect_timeout)
        except EngineError:
            raise
        except (OSError, TimeoutError) as exc:
            self.close()
            where = self.scheduler or "LocalCluster"
            raise EngineError("--scheduler" if self.scheduler else "--workers", where,
                              f"no Dask cluster to run on: {type(exc).__name__}: {exc}") from None
        finally:
            self._restore_env()
        self._check_workers()
        if self.log:
            n = len(self._client.scheduler_info()["workers"])
            kind = (f"LocalCluster of {n} workers" if self._cluster is not None
                    else f"the cluster at {self.scheduler} ({n} workers)")
            link = self._client.dashboard_link
            if self._cluster is not None and importlib.util.find_spec("bokeh") is None:
                link += " (served once bokeh is installed: pip install bokeh)"
            self.log(f"dask: {kind}; dashboard {link}")

    def _check_workers(self) -> None:
        ours = engine_fingerprint()
        # The scheduler unpickles every task (its function and arguments) before a worker runs it:
        # it needs this engine too, at the same version.
        for who, ask in (("dask scheduler", lambda: {"scheduler": self._client.run_on_scheduler(worker_report)}),
                         ("dask worker", lambda: self._client.run(worker_report))):
            try:
                reports = ask()
            except Exception as exc:  # noqa: BLE001 - e.g. an engine without this module
                self.close()
                raise EngineError(who, "engine", f"cannot run this engine: {type(exc).__name__}: {exc}") from None
            for addr, rep in sorted(reports.items()):
                diff = fingerprint_difference(rep["fingerprint"], ours)
                if diff:
                    self.close()
                    raise EngineError(f"{who} {addr}" if who == "dask worker" else who, diff[0], diff[1])
        trimmed = sorted(a for a, rep in reports.items() if rep["malloc_trim_threshold"])
        if trimmed:
            self.notes.append(f"{len(trimmed)} worker(s) run with MALLOC_TRIM_THRESHOLD_ set "
                              "(5x the page faults, a quarter more CPU time in S5); "
                              "set distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_ to null")

    def _check_sees(self, folder: Path) -> None:
        if str(folder) in self._seen:
            return
        seen = self._client.run(os.path.isdir, str(folder))
        blind = sorted(a for a, ok in seen.items() if not ok)
        if blind:
            raise EngineError(f"dask worker {blind[0]}", str(folder),
                              "does not see the run's workspace: the runs root must be a shared POSIX filesystem "
                              "at the same path on every node")
        self._seen.add(str(folder))

    # -- waiting ------------------------------------------------------------------------------------
    def _result(self, future, what: str, stats: dict, siblings: dict | None = None):
        from distributed.scheduler import KilledWorker

        t0 = time.perf_counter()
        try:
            return future.result()
        except KilledWorker as exc:
            allowed = exc.args[2] if len(exc.args) > 2 else _allowed_failures()
            task = exc.args[0] if exc.args else future.key
            via = "" if task == future.key else f" (through task {task})"
            # A worker's death counts against all its tasks, queued ones too: name every shard failed.
            failed = sorted(k for k, f in (siblings or {}).items() if f is not future and f.status == "error")
            also = f"; shards failed with it: {', '.join(map(str, failed))} (Dask cannot tell which one killed)" if failed else ""
            raise EngineError(what + via, "dask worker",
                              f"the task killed {allowed + 1} workers in a row (distributed.scheduler.allowed-failures "
                              f"{allowed}){also}; nothing of the stage was published, a rerun resumes at it") from None
        finally:
            stats["waited"] += time.perf_counter() - t0

    def _retries(self, keys: list[str]) -> int | None:
        def suspicious(dask_scheduler, keys):
            return sum(dask_scheduler.tasks[k].suspicious for k in keys if k in dask_scheduler.tasks)

        try:
            return int(self._client.run_on_scheduler(suspicious, keys=keys))
        except Exception:  # noqa: BLE001 - a count for the run report, not worth failing a stage over
            return None

    # -- a stage ------------------------------------------------------------------------------------
    # Complexity 22 > 15: submit, merge, encode and keep-as-split share one scratch and one list of
    # futures to cancel; a stage object holding them would split it.
    def run_shards(self, job: ShardJob) -> tuple[dict, dict]:  # noqa: C901
        import dask

        if len(job.plan) == 1:
            # Nothing to spread: shipping one shard would only add a spill and an encode round trip.
            out, stats = LocalExecutor().run_shards(job)
            return out, {**stats, "executor": self.name, "in_driver": True}
        client = self.client()
        t0 = time.perf_counter()
        plan, n = job.plan, len(job.plan)
        token = uuid.uuid4().hex[:8]
        scratch = job.workspace / f"{job.stage}-scratch-{token}"
        scratch.mkdir(parents=True)
        fp = engine_fingerprint()
        futures: list = []  # every future of the stage: cancelled on failure, retries counted at the end
        stats = {"waited": 0.0, "task_seconds": 0.0, "retries": 0}
        staged: dict = {}
        shard_fs: dict[int, object] = {}  # shard tasks submitted and not yet taken

        def submit(fn_name: str, what: str, *args):
            # Keys are unique per submission: Dask hands back the existing future for a known key.
            key = f"seg2b-{job.stage}-{what}-{len(futures)}-{token}"
            fut = client.submit(run_checked, fp, fn_name, *args, key=key, pure=False)
            futures.append(fut)
            return fut

        def result(fut, what: str):
            out, seconds = self._result(fut, what, stats)
            stats["task_seconds"] += seconds
            return out

        def map_pieces(fn, jobs):
            fs = [submit(fn.__name__, f"{fn.__name__}-{i}", *args) for i, args in enumerate(jobs)]
            return [result(f, f"{job.stage} {fn.__name__} {i}") for i, f in enumerate(fs)]

        large = dask.config.set({"distributed.admin.large-graph-warning-threshold": "1TB"})  # inputs are in the graph on purpose
        try:
            large.__enter__()
            self._check_sees(job.workspace)
            pieces = 2 * len(client.scheduler_info()["workers"])
            for r in job.readers:
                r.prepare(map_pieces, pieces)
            wanted = getattr(job.module, "SHARD_READS", None)
            small = {d: v for d, v in job.inputs.items() if wanted is None or d in wanted}
            spec = TaskSpec(job.stage, job.module.__name__, tuple(job.writes), job.policies, job.ctx,
                            tuple(job.readers), tuple(small), scratch, fp)
            shared, cut = split_small(small, plan)
            # Inputs travel inside the task graph, not scattered: the scheduler keeps a task's
            # arguments, so a task whose worker died can run again; scattered data would die with it.
            spec_f = client.submit(_value, spec, key=f"seg2b-{job.stage}-spec-{token}", pure=False)
            shared_f = client.submit(_value, shared, key=f"seg2b-{job.stage}-shared-{token}", pure=False)
            futures += [spec_f, shared_f]
            window = max(4, 3 * len(client.scheduler_info()["workers"]))  # shards in flight: inputs held, not all at once
            submitted = [0]

            def submit_shards(upto: int) -> None:
                for k in range(submitted[0], min(upto, n)):
                    shard_fs[k] = client.submit(compute_shard, spec_f, k, cut[k], shared_f,
                                                key=f"seg2b-{job.stage}-shard-{k}-{token}", pure=False)
                    submitted[0] = k + 1

            parts, known = [], None
            tables: dict[str, SpilledTable] = {}
            day_spills: dict[str, list] = {}
            shard_spills: dict[str, list] = {}
            day_rows: dict[str, dict[str, int]] = {}
            encodes: dict[str, list] = {}

            def encode(d: str, jobs: list) -> None:
                for args in jobs:
                    encodes[d].append(submit("encode_rows", f"{d}-{Path(args[-1]).stem}", *args))

            submit_shards(window)
            for k in range(n):
                submit_shards(k + window)
                lo, hi = plan.bounds(k)
                res = self._result(shard_fs[k], f"{job.stage} shard {k} (merchant_id {lo}..{hi})", stats, shard_fs)
                # Counted and let go at once: the scheduler then forgets the task and the input
                # pieces it carried (a LocalCluster's scheduler lives in this process).
                stats["retries"] += self._retries([shard_fs.pop(k).key]) or 0
                stats["task_seconds"] += res["seconds"]
                parts.append(res["part"])
                names = set(res["outputs"])
                check_same_outputs(job.stage, known, names)
                known = names
                for d in sorted(names):
                    meta = res["outputs"][d]
                    if d not in tables:
                        tables[d] = SpilledTable(d, job.targets[d][1], scratch)
                        encodes[d] = []
                    if "batches" in meta:  # time-ordered: merged into time order once every shard is in
                        day_spills.setdefault(d, []).append((meta["path"], meta["batches"]))
                        for day, rows in meta["day_rows"].items():
                            day_rows.setdefault(d, {})[day] = day_rows.setdefault(d, {}).get(day, 0) + rows
                    else:
                        encode(d, tables[d].adopt(meta["path"], meta["rows"], meta["first"], meta["last"]))
                        shard_spills.setdefault(d, []).append((meta["path"], None))
                job.tick(k + 1)
            for d in sorted(day_spills):
                buckets = day_buckets(day_rows.get(d, {}))
                fs = [submit("sort_bucket", f"{d}-bucket-{b}", d, day_spills[d], bucket, scratch / f"{d}-bucket-{b:05d}.arrow")
                      for b, bucket in enumerate(buckets)]
                for b, f in enumerate(fs):
                    meta = result(f, f"{job.stage} {d} merge bucket {b}")
                    encode(d, tables[d].adopt(meta["path"], meta["rows"], meta["first"], meta["last"]))
            for d in sorted(tables):
                encode(d, tables[d].rest())
            # The reduce runs here while the row groups are encoded on the workers.
            final = dict(job.module.finish(job.inputs, job.policies, job.ctx, parts))
            for d in sorted(tables):
                rows = sum(result(f, f"{job.stage} {d} row group {i}") for i, f in enumerate(encodes[d]))
                if rows != tables[d].rows:
                    raise EngineError(job.stage, d, f"encoded {rows} rows of {tables[d].rows}")
                staged[d] = tables[d].close(job.workspace, job.targets[d][0])
                # The shard spills become the run's split of the output: a consumer's shard task
                # then reads its rows alone instead of decoding whole row groups (two or three
                # times its rows at 2,048 merchants a shard) or splitting the roster again.
                spills = day_spills.get(d) or shard_spills.get(d) or []
                if job.splits is not None and len(spills) == n:
                    # An optimisation: when it fails, consumers read the published file instead.
                    with contextlib.suppress(OSError):
                        keep_as_split(spills, split_folder(job.splits, d, staged[d].sha256, plan))
            retries = stats["retries"] + (self._retries([f.key for f in futures]) or 0)
            wall = time.perf_counter() - t0
            return final | staged, {
                "executor": self.name, "workers": len(client.scheduler_info()["workers"]), "shards": n,
                "tasks": len(futures) + n, "retries": retries, "seconds": round(wall, 4),
                "driver_waiting_seconds": round(stats["waited"], 4), "task_seconds": round(stats["task_seconds"], 4),
                # Bytes through the shared filesystem beyond the published outputs: shard spills,
                # merge buckets and encoded pieces (each written once, read once) and the splits read.
                "scratch_bytes": _folder_bytes(scratch),
                "split_bytes": sum(_folder_bytes(r.split_dir) for r in job.readers if not r.merchant_major)}
        except BaseException:
            discard_staged(staged)
            raise
        finally:
            large.__exit__(None, None, None)
            client.cancel(futures + list(shard_fs.values()))
            shutil.rmtree(scratch, ignore_errors=True)
            self._restore_env()


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())
    except OSError:
        return 0


def _allowed_failures() -> int:
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures"))


def make_executor(name: str = "local", workers: int | None = None, scheduler: str | None = None,
                  log: Callable[[str], None] | None = None):
    if name == "local":
        if workers is not None or scheduler is not None:
            raise EngineError("--executor", "local", "--workers and --scheduler need --executor dask")
        return LocalExecutor()
    if name == "dask":
        return DaskExecutor(workers, scheduler, log=log)
    raise EngineError("--executor", name, f"unknown executor; choose one of {', '.join(EXECUTORS)}")
