"""The publish law: write-once outputs, atomic and idempotent.

Every output is written into a temporary path, fsynced and renamed into place. A run's temporary
paths live in its private workspace `<runs root>/tmp/w<pid>-<uuid>-<host>/`, never inside a
published folder; a run sweeps the workspaces of dead processes (kill -9) before it starts. If the
target already exists, identical bytes are a no-op ("identical") and different bytes abort with
PublishConflict, unless the caller proved the old bytes superseded, in which case they are swapped
out only once the whole new group is staged. A group of outputs (S2's index + blob, a bundle
folder) is all or nothing: every conflict is detected before anything is renamed, and a failure
mid-way removes what the group had already placed and restores what it had swapped out. The
check-and-rename step holds the runs root's lock, so concurrent runs on one root serialise there
(and only there).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq

from .contracts import DEFAULT_PARQUET, ParquetSettings
from .errors import EngineError, PublishConflict
from .identity import file_sha256, folder_files

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # not POSIX: runs on one root are not serialised
    fcntl = None

WRITTEN, IDENTICAL = "written", "identical"
PARTITION_META = b"seg2b.partition"


def parquet_bytes(table: pa.Table, partition: str, settings: ParquetSettings = DEFAULT_PARQUET) -> bytes:
    """Deterministic Parquet bytes of a table, stamped with its partition label, encoded with its
    dataset's settings (`contracts.Dataset.parquet`)."""
    meta = dict(table.schema.metadata or {})
    meta[PARTITION_META] = partition.encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, row_group_size=1 << 20, **settings.writer_options())
    return buf.getvalue()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------------------------------
# temporary files: never in published folders


WORKSPACES = "tmp"  # folder of the runs root holding every run's private workspace
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:64] or "host"
_WORKSPACE_NAME = re.compile(r"^w(\d+)-[0-9a-f]{12}-(.+)$")


def temp_sibling(target: Path) -> Path:
    """A temporary name next to `target` (only for writes without a workspace); it names the
    writing process, so a sweep can tell a dead writer's leftovers from a live one's."""
    return target.with_name(f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def temp_path(target: Path, workspace: Path | None) -> Path:
    """Where the bytes of `target` are written before their rename: the workspace when there is one."""
    if workspace is None:
        return temp_sibling(Path(target))
    return Path(workspace) / f"{uuid.uuid4().hex[:12]}-{Path(target).name}"


def new_workspace(runs_root: Path) -> Path:
    """A private folder for one run's temporary files: `<runs root>/tmp/w<pid>-<uuid>-<host>`.

    It sits on the runs root's file system (so publishing is a rename) but outside every
    published folder, and its name says which process owns it (see sweep_workspaces)."""
    ws = Path(runs_root) / WORKSPACES / f"w{os.getpid()}-{uuid.uuid4().hex[:12]}-{_HOST}"
    for attempt in range(8):
        try:
            ws.mkdir(parents=True)
            return ws
        except FileNotFoundError:  # another run removed the emptied parent between our two mkdirs
            if attempt == 7:
                raise
    return ws


def remove_tree(path: Path) -> None:
    """Remove a file or folder if present (links are removed, never followed)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def drop_workspace(ws: Path | None) -> None:
    if ws is None:
        return
    remove_tree(ws)
    with suppress(OSError):
        ws.parent.rmdir()  # only when no other run has a workspace there


@contextmanager
def workspace(runs_root: Path) -> Iterator[Path]:
    ws = new_workspace(runs_root)
    try:
        yield ws
    finally:
        drop_workspace(ws)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def sweep_workspaces(runs_root: Path) -> list[Path]:
    """Remove the workspaces of dead processes of this host (kill -9, power loss); returns them.

    A workspace of a live process, or of another host, is never touched. Nothing is written when
    there is nothing to remove, so a read-only root is fine."""
    folder = Path(runs_root) / WORKSPACES
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []
    except OSError:
        return removed
    for entry in entries:
        m = _WORKSPACE_NAME.match(entry.name)
        if m and m.group(2) == _HOST and not _pid_alive(int(m.group(1))):
            try:
                remove_tree(entry)
                removed.append(entry)
            except OSError:
                pass
    return removed


_SIBLING = re.compile(r"^\.tmp-.+?-(?:(\d+)-)?[0-9a-f]{12}$")
LEGACY_TEMP_AGE_S = 3600


def sweep_siblings(folders: Iterable[str | Path]) -> list[Path]:
    """Remove temporaries left next to published outputs by dead writers: those of writes without
    a workspace (named with their pid) and those of engines before workspaces existed (no pid;
    removed once an hour old, longer than such a writer keeps one untouched). Returns them."""
    removed = []
    now = time.time()
    for folder in folders:
        try:
            entries = list(Path(folder).iterdir()) if Path(folder).is_dir() else []
        except OSError:
            continue
        for entry in entries:
            m = _SIBLING.match(entry.name)
            if not m:
                continue
            try:
                dead = not _pid_alive(int(m.group(1))) if m.group(1) else now - entry.lstat().st_mtime > LEGACY_TEMP_AGE_S
                if dead:
                    remove_tree(entry)
                    removed.append(entry)
            except OSError:
                pass
    return removed


@contextmanager
def root_lock(runs_root: Path | None) -> Iterator[None]:
    """Exclusive lock of a runs root (flock on the folder itself, so nothing is created): the
    check-and-rename step of every publish on one root happens one run at a time. The kernel
    drops the lock when its holder dies, kill -9 included."""
    if runs_root is None or fcntl is None:
        yield
        return
    Path(runs_root).mkdir(parents=True, exist_ok=True)
    fd = os.open(runs_root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@dataclass(frozen=True)
class Staged:
    """A file already written (and fsynced) into a temporary path (a workspace, or a sibling of
    its target), e.g. a table streamed shard by shard; publishing it is a rename, or a no-op if
    the target has its digest."""

    path: Path
    sha256: str
    rows: int = 0


REPLACE = "replace"  # internal state: present with other bytes, and the caller proved it superseded
Payload = bytes | dict[str, bytes] | Staged  # what publish_group places at a target: a file, a folder, a staged file


def _existing_state(target: Path, data: Payload, replace: frozenset[Path] = frozenset()) -> str | None:
    """None if absent, IDENTICAL if present with the same content, REPLACE if present with other
    content the caller may replace, else raise PublishConflict."""
    if not target.exists() and not target.is_symlink():
        return None
    try:
        _check_same(target, data)
    except PublishConflict:
        if target in replace:
            return REPLACE
        raise
    return IDENTICAL


def _check_same(target: Path, data: Payload) -> None:
    if target.is_symlink():
        raise PublishConflict(str(target), "(link)", "a symbolic link sits where an output is to be published")
    if isinstance(data, Staged):
        if target.is_dir() or file_sha256(target) != data.sha256:
            raise PublishConflict(str(target), "(bytes)", "already published with different bytes; refusing to overwrite")
        return
    if isinstance(data, dict):
        if not target.is_dir():
            raise PublishConflict(str(target), "(folder)", "a file exists where a folder is to be published")
        have = folder_files(target)
        if sorted(have, key=str.encode) != sorted(data, key=str.encode):
            raise PublishConflict(str(target), "(members)",
                                  "already published with a different member list; refusing to overwrite")
        for rel in have:
            if (target / rel).read_bytes() != data[rel]:
                raise PublishConflict(str(target / rel), "(bytes)",
                                      "already published with different bytes; refusing to overwrite")
        return
    if target.is_dir() or target.read_bytes() != data:
        raise PublishConflict(str(target), "(bytes)", "already published with different bytes; refusing to overwrite")


def _stage(target: Path, data: Payload, workspace: Path | None) -> Path:
    """Write `data` to a temporary path and return it; on any failure the temporary is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Staged):
        return Path(data.path)
    tmp = temp_path(target, workspace)
    try:
        if isinstance(data, dict):
            tmp.mkdir()
            for rel in sorted(data):
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                _write_synced(dest, data[rel])
            _fsync_dir(tmp)
        else:
            _write_synced(tmp, data)
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _remove(path: Path) -> None:
    remove_tree(path)


def publish_group(items: list[tuple[Path, Payload]], *, replace: Iterable[str | Path] = (),
                  withdraw: Iterable[str | Path] = (), workspace: Path | None = None, lock: Path | None = None) -> list[str]:
    """Publish files (bytes or Staged) and folders ({relative path: bytes}) all or nothing.

    `replace`: targets the caller has proved superseded (a receipt of other inputs); they are
    swapped for the new bytes only here, once the whole group is staged, and restored if the group
    fails. `withdraw`: superseded outputs with no successor, removed once the group is in place.
    `workspace`: where temporaries go (else next to their targets). `lock`: the runs root whose
    lock the check-and-rename step holds, so concurrent runs never see each other's half-placed
    group and a rollback can only remove what no other run relies on.

    Returns one status per item: "written" or "identical".
    """
    superseded = frozenset(Path(p) for p in replace)
    pre_staged = [Path(d.path) for _, d in items if isinstance(d, Staged)]
    with root_lock(lock):
        try:
            states = [_existing_state(Path(t), d, superseded) for t, d in items]
        except BaseException:
            for tmp in pre_staged:
                _remove(tmp)
            raise
        for (_, d), st in zip(items, states):
            if isinstance(d, Staged) and st == IDENTICAL:
                _remove(Path(d.path))
        aside = _place_group(items, states, workspace)
        for old, _ in aside:
            _remove(old)
        for path in withdraw:
            _remove(Path(path))
    return [IDENTICAL if st == IDENTICAL else WRITTEN for st in states]


def _place_group(items: list[tuple[Path, Payload]], states: list[str | None],
                 workspace: Path | None) -> list[tuple[Path, Path]]:
    """Stage every item still to publish (state None or REPLACE), then rename each into place; an
    item whose target appeared since the check becomes IDENTICAL in `states` (or raises
    PublishConflict). On any failure the group is rolled back: staged temporaries and placed
    targets are removed and the outputs swapped out are restored. Returns the (swapped-out
    temporary, target) pairs, for the caller to remove once the group stands."""
    todo = [(i, Path(t), d) for i, ((t, d), st) in enumerate(zip(items, states)) if st in (None, REPLACE)]
    staged: list[tuple[int, Path, Path]] = []
    placed: list[Path] = []
    aside: list[tuple[Path, Path]] = []
    try:
        for i, target, data in todo:
            staged.append((i, _stage(target, data, workspace), target))
        while staged:
            i, tmp, target = staged[0]
            if states[i] == REPLACE and (target.exists() or target.is_symlink()):
                old = temp_path(target, workspace)
                os.replace(target, old)
                aside.append((old, target))
            elif target.exists() or target.is_symlink():
                # Appeared since the check: a writer that does not take the lock. Identical
                # bytes are the same output; anything else is a conflict.
                _check_same(target, items[i][1])
                _remove(tmp)
                staged.pop(0)
                states[i] = IDENTICAL
                continue
            os.replace(tmp, target)
            staged.pop(0)
            placed.append(target)
            _fsync_dir(target.parent)
    except BaseException:
        for _, tmp, _ in staged:
            _remove(tmp)
        for target in placed:
            _remove(target)
        for old, target in reversed(aside):
            if not target.exists():
                os.replace(old, target)
        raise
    return aside


def publish(target: Path, data: bytes | dict[str, bytes]) -> str:
    return publish_group([(target, data)])[0]


def replace_file(target: Path, data: bytes, workspace: Path | None = None) -> None:
    """Atomic overwrite, for mutable bookkeeping (receipts, pointers), never for datasets."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target, workspace)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def remove_output(target: Path) -> None:
    """Withdraw a superseded output (outside publish_group, which withdraws when a successor lands)."""
    if not Path(target).exists():
        return
    _remove(Path(target))


def read_parquet_table(path: Path, dataset_id: str, schema: pa.Schema, partition: str | None) -> pa.Table:
    """Read a published table, checking its exact schema and that it belongs to this partition
    (partition None: bytes taken verbatim from elsewhere, e.g. a user-supplied upstream)."""
    if not Path(path).exists():
        raise EngineError(str(path), dataset_id, "dataset missing (partition not published)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EngineError(str(path), dataset_id, f"unreadable Parquet: {exc}") from None
    got = (table.schema.metadata or {}).get(PARTITION_META)
    if partition is not None and got is not None and got.decode() != partition:
        raise EngineError(str(path), "seg2b.partition", f"content is stamped {got.decode()!r}, not {partition!r}")
    from .contracts import check_schema

    if not table.schema.remove_metadata().equals(schema):
        check_schema(table.schema.remove_metadata(), dataset_id, path)
    return table
