"""What a run tells whoever watches it: typed hooks the pipeline calls, and the terminal printer.

The pipeline calls `stage_started` before a stage decides anything, `stage_finished` with its
StageRecord (ran, skipped or reused), and, for a sharded stage, `shards_done` after each shard.
Hooks only watch: they never change what a run computes. The printer lives here, not in the
command line module, so the harness (certification/lanes.py) can use it without importing the CLI
that imports the harness.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ProgressHooks(Protocol):
    def stage_started(self, seed: int, stage: str) -> None: ...

    def stage_finished(self, seed: int, stage: str, record: Any) -> None: ...

    def shards_done(self, seed: int, stage: str, done: int, total: int) -> None: ...


class NoProgress:
    """Hooks that do nothing: the default, so the pipeline never asks whether anyone watches."""

    def stage_started(self, seed: int, stage: str) -> None:
        pass

    def stage_finished(self, seed: int, stage: str, record: Any) -> None:
        pass

    def shards_done(self, seed: int, stage: str, done: int, total: int) -> None:
        pass


class CallbackProgress(NoProgress):
    """The older form, a callable `progress(seed, stage, "start" | record)` with an optional
    `shards(seed, stage, done, total)`, which callers outside the engine still pass."""

    def __init__(self, callback: Callable[[int, str, Any], None]):
        self.callback = callback

    def stage_started(self, seed: int, stage: str) -> None:
        self.callback(seed, stage, "start")

    def stage_finished(self, seed: int, stage: str, record: Any) -> None:
        self.callback(seed, stage, record)

    def shards_done(self, seed: int, stage: str, done: int, total: int) -> None:
        shards = getattr(self.callback, "shards", None)
        if shards is not None:
            shards(seed, stage, done, total)


def hooks_of(progress: object) -> ProgressHooks:
    """Hooks for the `progress` a caller passed: hooks as they are, a callable adapted, None silent."""
    if progress is None:
        return NoProgress()
    if isinstance(progress, ProgressHooks):
        return progress
    if callable(progress):
        return CallbackProgress(progress)
    raise TypeError(f"progress must be ProgressHooks or a callable, not {type(progress).__name__}")


class StageProgress(NoProgress):
    """One live line per seed on a terminal; plain lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.live = sys.stderr.isatty() and not quiet
        self._console: Any = None  # a rich Console, imported only for a terminal
        if self.live:
            from rich.console import Console

            self._console = Console(stderr=True)

    def stage_started(self, seed: int, stage: str) -> None:
        if self.live:
            self._console.print(f"[dim]seed {seed}[/] {stage:<7} …", end="\r")

    def stage_finished(self, seed: int, stage: str, record: Any) -> None:
        if self.quiet:
            return
        line = f"seed {seed} {stage:<7} {record.status:<8} {record.seconds:7.3f} s"
        if record.rows:
            line += "  " + ", ".join(f"{k}={v:,}" for k, v in record.rows.items())
        ex = record.report.get("executor") if isinstance(record.report, dict) else None
        if ex and (ex.get("shards", 1) > 1 or ex.get("executor") != "local"):
            n = ex["shards"]
            line += (f"  [{ex['executor']}: {n} shard{'s' if n != 1 else ''}" + (", in the driver" if ex.get("in_driver") else "")
                     + (f", {ex['retries']} retried" if ex.get("retries") else "") + "]")
        if self.live:
            self._console.print(line + " " * 10)
        else:
            print(line, file=sys.stderr)

    def shards_done(self, seed: int, stage: str, done: int, total: int) -> None:
        """k/K shards on the live line only; the stage's own line gives the total."""
        if self.live and total > 1:
            self._console.print(f"[dim]seed {seed}[/] {stage:<7} … {done}/{total} shards", end="\r")
