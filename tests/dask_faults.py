"""Worker plugins for tests of the Dask executor: a shard task that kills its worker (SIGKILL),
and engine/shards.py constants set small on the workers as the test sets them in the driver.
Pickled by value (the test registers this module with cloudpickle), so workers need not import
the tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin


class KillWorker(WorkerPlugin):
    """The shard task of `stage` and shard `k` kills its worker once it has spilled an output:
    every time (a poison shard), or only the first time any worker runs it (`once`: a marker file
    created exclusively decides which attempt)."""

    def __init__(self, name: str, stage: str, k: int, once: str | None = None):
        self.name, self.stage, self.k, self.once = name, stage, k, str(once) if once else None

    def setup(self, worker):
        # Shard tasks look spill_shard_output up in engine.executors when they run, so patching
        # the worker's module reaches them (a task's function itself may be cached unpickled).
        import engine.executors as ex

        real = getattr(ex, "_real_spill", ex.spill_shard_output)
        ex._real_spill = real
        stage, suffix, once = self.stage, f"-{self.k:05d}.arrow", self.once

        def spill_shard_output(dataset_id, df, path):
            out = real(dataset_id, df, path)
            if Path(path).parent.name.startswith(f"{stage}-scratch-") and Path(path).name.endswith(suffix) and _claim(once):
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        ex.spill_shard_output = spill_shard_output

    def teardown(self, worker):
        import engine.executors as ex

        ex.spill_shard_output = getattr(ex, "_real_spill", ex.spill_shard_output)


def _claim(marker: str | None) -> bool:
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


class SetConstants(WorkerPlugin):
    """engine.shards module constants (row-group size, spill batch) set on every worker, and put
    back when the plugin is removed."""

    def __init__(self, name: str, values: dict):
        self.name, self.values = name, dict(values)

    def setup(self, worker):
        from engine import shards

        self._old = {k: getattr(shards, k) for k in self.values}
        for k, v in self.values.items():
            setattr(shards, k, v)

    def teardown(self, worker):
        from engine import shards

        for k, v in getattr(self, "_old", {}).items():
            setattr(shards, k, v)
