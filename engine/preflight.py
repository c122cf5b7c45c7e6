"""What a run checks before it may change a byte of the runs root.

A rejected input must leave the published tree as it was: no output withdrawn, none replaced, no
new partial partition. So every input is validated here, completely, before the first stage runs:

* command-line values: the seed (unsigned 64-bit), the shard size;
* the runs root: a folder (or nothing yet), with no symbolic link on any path the run will touch
  (a link could send a write or a removal outside the root);
* policies: syntax and schema when loaded (engine.policies), then every rule a stage states on its
  own policies without data (each stage spec's `check_policy`, engine/stages.py);
* a user-supplied upstream folder: the gate law and every table (upstream_import.validate);
* a user-supplied roster: the whole roster against the merchants it will be routed for.

Rules that depend on data the run itself produces (an audit that fails, say) still stop a run
later; those are outcomes of the engine, not bad inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import EngineError, from_os_error
from .identity import file_sha256

MAX_SEED = (1 << 64) - 1


def check_seed(seed) -> int:
    """The seed as an int in [0, 2^64 - 1] (it is packed as an unsigned 64-bit word into RNG keys)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            seed = int(str(seed), 10)
        except ValueError:
            raise EngineError("--seed", repr(seed), "must be a decimal integer") from None
    if not 0 <= seed <= MAX_SEED:
        raise EngineError("--seed", str(seed), "must be an unsigned 64-bit integer (0 .. 2^64 - 1)")
    return seed


def check_shard_merchants(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise EngineError("--shard-merchants", repr(n), "a shard holds at least one merchant (an integer >= 1)")
    return n


def check_runs_root(root: Path) -> None:
    """The runs root is a folder, or does not exist yet below a folder."""
    root = Path(root)
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                raise EngineError(p, "(runs root)",
                                  "is a file, not a folder" if p == root else "a parent of the runs root is a file")
            return


def check_no_links(root: Path, paths: Iterable[Path]) -> None:
    """No symbolic link on the way from the runs root to any of `paths` (the root itself may be one)."""
    root = Path(root)
    seen: set[Path] = set()
    for path in paths:
        current = root
        for part in Path(path).relative_to(root).parts:
            current = current / part
            if current in seen:
                continue
            seen.add(current)
            if current.is_symlink():
                raise EngineError(current, "(link)", "symbolic link inside the runs root; refused "
                                  "(a run must not write or remove through it)")
            if not current.exists():
                break


def user_roster_digest(path: Path) -> str:
    """SHA-256 of a user roster file's bytes: part of the run identity (a different roster is a
    different run, never a republish at the same paths)."""
    path = Path(path)
    if not path.exists():
        raise EngineError(path, "(file)", "roster file not found")
    if not path.is_file():
        raise EngineError(path, "(file)", "roster is not a regular file")
    try:
        return file_sha256(path)
    except OSError as exc:
        raise from_os_error(exc, path) from None


def check_inputs(stages, policies: dict, seed: int, upstream_files: dict | None = None, upstream_dir: Path | None = None,
                 roster_file: Path | None = None) -> None:
    """Every policy rule, the upstream folder and the user roster, before anything is written."""
    for stage in stages:
        if stage.check_policy is not None:
            stage.check_policy({n: policies[n] for n in stage.policies})
    merchants = None
    if upstream_files is not None:
        from .states import upstream_import

        merchants = upstream_import.validate(upstream_files, upstream_dir)
    if roster_file is not None:
        from . import roster, world
        from .calendar import day_range

        if merchants is None:  # the built-in world: build it in memory, as the world stage will
            wp = policies["world_policy_v1"]
            merchants = world.build_world(wp.data, seed, world.world_fingerprint(wp.sha256)).merchants
        roster.load_user_roster(roster_file, merchants, day_range(policies["day_effect_policy_v1"].data))
