"""The file system says no: a full disk, a permission denied, a read-only root.

Each is one line naming the file and the errno, exit 2, no traceback, no temporary file left and
nothing published changed; a complete read-only root reruns with every stage skipped. Superseded
outputs stay in place until their replacement publishes.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine import publish
from engine.cli import main
from engine.errors import EngineError
from engine.pipeline import Pipeline, dataset_path
from engine.shards import TableWriter
from tests.helpers import small_policies, tree_state

SEED = 42


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("os_errors")
    pdir = small_policies(base)
    root = base / "runs"
    result = Pipeline(SEED, root, pdir).run()
    return pdir, root, result.ctx


@pytest.fixture
def root(world, tmp_path):
    _, src, _ = world
    shutil.copytree(src, tmp_path / "runs", symlinks=True)
    return tmp_path / "runs"


def one_line(capsys, pattern: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err and re.search(pattern, lines[0]), err
    return lines[0]


def no_temporaries(root: Path) -> None:
    assert not list(root.rglob(".tmp-*"))
    assert not (root / "tmp").exists() or not list((root / "tmp").iterdir())


def _oserror(code: int, path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@contextmanager
def read_only(root: Path, code: int = errno.EROFS):
    """Every write, creation, rename or removal under `root` fails with `code` (tests run as root,
    where chmod would not stop a write)."""
    root = str(root)

    def inside(p) -> bool:
        return isinstance(p, (str, os.PathLike)) and os.fspath(p).startswith(root)
    real = {name: getattr(os, name) for name in ("mkdir", "replace", "rename", "unlink", "rmdir", "symlink", "link")}
    real_open, real_os_open = builtins.open, os.open

    def guard(name):
        def fn(path, *a, **k):
            if inside(path) or (a and inside(a[0])):
                raise _oserror(code, path)
            return real[name](path, *a, **k)
        return fn

    def guarded_open(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            raise _oserror(code, file)
        return real_open(file, mode, *a, **k)

    def guarded_os_open(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise _oserror(code, path)
        return real_os_open(path, flags, *a, **k)

    with pytest.MonkeyPatch.context() as mp:  # undone on leaving the block, however it is left
        for name in real:
            mp.setattr(os, name, guard(name))
        mp.setattr(builtins, "open", guarded_open)
        mp.setattr(io, "open", guarded_open)
        mp.setattr(os, "open", guarded_os_open)
        yield


def test_complete_read_only_root_reruns_with_every_stage_skipped(world, root, capsys):
    pdir, _, _ = world
    before = tree_state(root)
    with read_only(root):
        assert main(["run", "--seed", str(SEED), "--runs-root", str(root), "--policies", str(pdir)]) == 0
    captured = capsys.readouterr()
    assert "11 stages" in captured.out and "note: run report not written" in captured.err and "EROFS" in captured.err
    assert tree_state(root) == before
    with read_only(root):
        result = Pipeline(SEED, root, pdir).run()
    assert {r.status for r in result.stages} == {"skipped"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes; the simulated read-only root above covers it")
def test_read_only_root_with_file_modes(world, root):
    pdir, _, _ = world
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        out = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--seed", str(SEED), "--runs-root", str(root),
                              "--policies", str(pdir), "--quiet"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
        assert out.returncode == 0 and "Traceback" not in out.stderr
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_a_run_that_must_write_fails_in_one_line(world, root, capsys, code):
    """--force reruns every stage: its first write (a receipt) is refused."""
    pdir, _, _ = world
    before = tree_state(root)
    with read_only(root, code):
        assert main(["run", "--seed", str(SEED), "--runs-root", str(root), "--policies", str(pdir), "--force", "--quiet"]) == 2
    one_line(capsys, rf"{errno.errorcode[code]}: ")
    assert tree_state(root) == before


def test_disk_full_while_streaming_a_table(world, root, capsys, monkeypatch):
    """ENOSPC inside the streamed writer of a fresh seed: one line, and no temporary left anywhere."""
    pdir, _, _ = world
    real = pq.ParquetWriter.write_table

    def full(self, table, *a, **k):
        if isinstance(self.where, (str, os.PathLike)):  # a file (TableWriter), not a buffer (parquet_bytes)
            raise _oserror(errno.ENOSPC, self.where)
        return real(self, table, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    before = tree_state(root)
    assert main(["run", "--seed", "43", "--runs-root", str(root), "--policies", str(pdir), "--quiet"]) == 2
    one_line(capsys, r"ENOSPC: no space left on the device")
    no_temporaries(root)
    after = tree_state(root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of seed 42 touched


def test_disk_full_while_staging_a_publish(world, root, capsys, monkeypatch):
    pdir, _, _ = world
    calls = {"n": 0}
    real = publish._write_synced

    def full_on_third(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            with open(path, "wb") as fh:  # a partial temporary, as a real full disk leaves it
                fh.write(data[: len(data) // 2])
            raise _oserror(errno.ENOSPC, path)
        return real(path, data)

    monkeypatch.setattr(publish, "_write_synced", full_on_third)
    assert main(["run", "--seed", "44", "--runs-root", str(root), "--policies", str(pdir), "--quiet"]) == 2
    one_line(capsys, r"ENOSPC")
    no_temporaries(root)


@pytest.mark.parametrize("where", ["append", "flush-at-close", "writer-close"])
def test_streamed_writer_cleans_up_on_every_error_path(tmp_path, monkeypatch, where):
    import polars as pl

    from engine import contracts

    schema = contracts.get("s4_group_weights").schema
    df = pl.from_arrow(schema.empty_table())
    w = TableWriter("s4_group_weights", tmp_path / "out" / "part-00000.parquet", "seed=1", workspace=tmp_path)
    assert w.tmp.exists()

    def boom(*a, **k):
        raise _oserror(errno.ENOSPC, w.tmp)

    if where == "append":
        monkeypatch.setattr(w, "_flush", boom)
        with pytest.raises(OSError):
            w.append(df)
        w.abort()  # what the pipeline does for a writer still open
    else:
        monkeypatch.setattr(w, "_flush", boom) if where == "flush-at-close" else monkeypatch.setattr(w._writer, "close", boom)
        with pytest.raises(OSError):
            w.close()  # no abort from outside (the pipeline no longer holds the writer): close leaves nothing
    assert not w.tmp.exists() and not (tmp_path / "out").exists()


def test_superseded_outputs_stay_until_their_replacement_publishes(world, root, monkeypatch):
    """A code change reruns S4; if S4 then fails, the published S4 table is still there, unchanged."""
    import engine.pipeline as P
    from engine.states import s4_group_weights

    pdir, _, ctx = world
    s4 = dataset_path("s4_group_weights", root, ctx)
    before = s4.read_bytes()
    real = P.code_digest
    monkeypatch.setattr(P, "code_digest", lambda st: ("1" * 64) if st.name == "S4" else real(st))

    def broken(*a, **k):
        raise EngineError("S4", "(test)", "a failing new version of S4")

    monkeypatch.setattr(s4_group_weights, "run_shard", broken)
    with pytest.raises(EngineError, match="failing new version"):
        Pipeline(SEED, root, pdir).run()
    assert s4.read_bytes() == before
    monkeypatch.undo()
    monkeypatch.setattr(P, "code_digest", lambda st: ("1" * 64) if st.name == "S4" else real(st))
    result = Pipeline(SEED, root, pdir).run()
    assert {r.name: r.status for r in result.stages}["S4"] == "ran" and s4.read_bytes() == before
    assert main(["verify", str(dataset_path("validation_bundle_2B", root, ctx))]) == 0


def test_stale_temporaries_next_to_outputs_are_swept(world, root):
    """Left by a dead writer without a workspace (its pid in the name) or by an engine from before
    workspaces (no pid, an hour old): the next run removes them; a live writer's stays."""
    pdir, _, ctx = world
    folder = dataset_path("rng_event_alias_pick_site", root, ctx).parent
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = [folder / f".tmp-part-00000.parquet-{dead}-0123456789ab", folder / ".tmp-part-00000.parquet-d784fcce0a3b"]
    live = folder / f".tmp-part-00000.parquet-{os.getpid()}-0123456789ab"
    for p in (*stale, live):
        p.write_bytes(b"partial")
    os.utime(stale[1], (0, 0))
    Pipeline(SEED, root, pdir).run()
    assert not any(p.exists() for p in stale) and live.exists()
    live.unlink()
    assert main(["verify", str(dataset_path("validation_bundle_2B", root, ctx))]) == 0
