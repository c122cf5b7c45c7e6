"""A replay: one seed run again from nothing (every stage forced) in a fresh folder and in a process
of its own, reduced to the digest of every output it published.

The harness's T-STR-05 (docs/certification.md) compares those digests with the published run's:
equal digests mean a rerun publishes nothing new. The replay runs in a child process
(`python -m engine.replay`) so nothing of the lane's process (imported state, caches, a warm
allocator) can make two runs agree by accident, and so it can run on another core while the lane
scores the seed.

    replay = start_replay(42, scratch, policy_dir)        # returns at once
    ...
    result = finish_replay(replay)                         # ReplayResult(digests, error)
    compare(output_digests(runs_root, ctx), result.digests)  # {} when every byte is the same
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .context import Context
from .datasets import digest
from .errors import EngineError, from_os_error
from .pipeline import Pipeline, dataset_path
from .stages import STAGES

DIGESTS = "replay_digests.json"
STDERR = "replay_stderr.txt"
ENGINE_ROOT = Path(__file__).resolve().parent.parent  # where `-m engine.replay` resolves to this tree

CHANGED = "bytes differ"
ONLY_PUBLISHED = "missing from the replay"
ONLY_REPLAYED = "published by the replay only"


@dataclass
class Replay:
    seed: int
    scratch_root: Path
    process: subprocess.Popen[bytes]

    def wait(self) -> int:
        return self.process.wait()


@dataclass(frozen=True)
class ReplayResult:
    digests: dict[str, str] = field(default_factory=dict)  # output path relative to the runs root -> SHA-256
    error: str | None = None  # one line: why the replay has no digests


def output_paths(ctx: Context) -> dict[str, str]:
    """Every output a run of `ctx` may publish: path relative to the runs root -> "stage:dataset"."""
    return {dataset_path(d, Path(), ctx).as_posix(): f"{stage.name}:{d}" for stage in STAGES for d in stage.writes}


def output_digests(runs_root: Path, ctx: Context) -> dict[str, str]:
    """The digest of every output of `ctx` in place under `runs_root`, hashed from the files as they
    are now (not from receipts: a byte changed after the run must show); a folder output has one
    folder digest."""
    root = Path(runs_root)
    return {rel: digest(root / rel) for rel in output_paths(ctx) if (root / rel).exists()}


def compare(published: dict[str, str], replayed: dict[str, str]) -> dict[str, str]:
    """Outputs whose digests differ, or that only one side has: relative path -> what differs."""
    out = {}
    for rel in sorted(published.keys() | replayed.keys()):
        if rel not in replayed:
            out[rel] = ONLY_PUBLISHED
        elif rel not in published:
            out[rel] = ONLY_REPLAYED
        elif published[rel] != replayed[rel]:
            out[rel] = CHANGED
    return out


def start_replay(seed: int, scratch_root: Path, policy_dir: Path, *, executor: Any = None,
                 policy_overrides: dict[str, Path] | None = None) -> Replay:
    """Start the replay of `seed` into `scratch_root` (emptied first) and return at once.

    On the lane's executor: a Dask lane's replay runs on the same cluster, in the environment the
    lane had before the cluster started (a LocalCluster's nannies edit this process's environment).
    """
    scratch_root = Path(scratch_root)
    shutil.rmtree(scratch_root, ignore_errors=True)
    scratch_root.mkdir(parents=True)
    cmd = [sys.executable, "-m", "engine.replay", "--seed", str(seed), "--runs-root", str(scratch_root),
           "--policies", str(policy_dir), "--digests", str(scratch_root / DIGESTS)]
    for name, path in sorted((policy_overrides or {}).items()):
        cmd += ["--override", f"{name}={path}"]
    cmd += executor.cli_args() if executor is not None else []
    env = executor.subprocess_env() if executor is not None else None
    # stderr goes to a file, not a pipe: nobody reads a pipe while the child runs, and a chatty
    # child (a Dask client's logging) would block on a full one.
    with open(scratch_root / STDERR, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ENGINE_ROOT, env=env)
    return Replay(seed, scratch_root, proc)


def finish_replay(replay: Replay) -> ReplayResult:
    """Wait for the replay; its digests, or one line saying why there are none."""
    rc = replay.wait()
    if rc != 0:
        return ReplayResult(error=_last_line(replay.scratch_root / STDERR) or f"replay exited with status {rc}")
    try:
        digests = json.loads((replay.scratch_root / DIGESTS).read_bytes())
    except (OSError, ValueError) as exc:
        return ReplayResult(error=f"replay wrote no readable digests: {exc}")
    return ReplayResult(digests={str(k): str(v) for k, v in digests.items()})


def _last_line(path: Path) -> str:
    """The child's last word: its one-line error, or the exception line that ends a traceback."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    return last[-500:]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.replay", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--runs-root", type=Path, required=True, help="a fresh folder for the replay")
    p.add_argument("--policies", type=Path, required=True)
    p.add_argument("--override", action="append", default=[], metavar="NAME=FILE", help="a policy file replacing the folder's")
    p.add_argument("--digests", type=Path, required=True, help="where to write {output relative path: sha256}")
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--scheduler", default=None)
    return p


def replay(args: argparse.Namespace) -> dict[str, str]:
    from .executors import make_executor

    overrides = {}
    for item in args.override:
        name, _, path = item.partition("=")
        overrides[name] = Path(path)
    with make_executor(args.executor, args.workers, args.scheduler) as executor:
        result = Pipeline(args.seed, args.runs_root, args.policies, force=True, policy_overrides=overrides,
                          executor=executor).run()
    return output_digests(result.runs_root, result.ctx)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        digests = replay(args)
        args.digests.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except EngineError as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"replay: error: {from_os_error(exc, args.runs_root)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
