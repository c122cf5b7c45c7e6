"""Policies are data: every tunable number lives in a JSON file validated by its JSON Schema.

`policies/<name>.json` is read as strict JSON (engine.jsonio: no duplicate keys, no non-finite
numbers however spelled) and validated against the package's `policies/schemas/<name>.schema.json`
(`additionalProperties: false` throughout), whichever folder the policy comes from. A policy is
identified by the SHA-256 of its bytes; S0 seals those digests and every later state re-checks them (`check_sealed`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from . import jsonio
from .errors import EngineError, from_os_error
from .identity import sha256_hex


def package_folder(package: str, checkout_dir: str) -> Path:
    """A folder of package data: the installed package's files, or the checkout's folder when the
    project runs uninstalled from its sources."""
    from importlib import resources

    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / checkout_dir


DEFAULT_POLICY_DIR = package_folder("seg2b_policies", "policies")

# The policy packs of the plan plus the world, roster and certification packs.
POLICY_NAMES = (
    "alias_layout_policy_v1",
    "day_effect_policy_v1",
    "group_mix_regularizer_v1",
    "route_rng_policy_v1",
    "virtual_edge_policy_v1",
    "world_policy_v1",
    "roster_policy_v1",
    "certification_gates_v1",
)
# What the engine reads and S0 seals: every pack but the certification thresholds, which score
# a run without changing it (editing a threshold must not change any dataset).
ENGINE_POLICY_NAMES = tuple(n for n in POLICY_NAMES if n != "certification_gates_v1")


@dataclass(frozen=True)
class Policy:
    name: str
    path: Path
    sha256: str
    data: dict[str, Any] = field(repr=False)

    def __getitem__(self, key):
        return self.data[key]


def _json_pointer(path) -> str:
    return "/" + "/".join(str(p) for p in path) if path else "(document root)"


def schema_path(name: str, policy_dir: Path | None = None) -> Path:
    """The schema of policy `name`: always the package's own (a policy folder cannot bring its own
    schemas and so switch validation off). `policy_dir` is ignored and kept for callers."""
    return DEFAULT_POLICY_DIR / "schemas" / f"{name}.schema.json"


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    path = schema_path(name)
    if not path.is_file():
        raise EngineError(path, "(file)", f"no schema ships for policy {name}")
    return jsonschema.Draft202012Validator(json.loads(path.read_bytes()))


def parse_policy_bytes(name: str, raw: bytes, where: Path, policy_dir: Path | None = None) -> dict:
    """Policy bytes as data: strict JSON (engine.jsonio), then the package's JSON Schema."""
    data = jsonio.loads(raw, where)
    try:
        errors = sorted(_validator(name).iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    except RecursionError:
        raise EngineError(where, "(document)", "too deeply nested to validate") from None
    if errors:
        e = errors[0]
        raise EngineError(where, _json_pointer(e.absolute_path), f"schema rule '{e.validator}' violated: {e.message}")
    return data


def _policy_file(path: Path, name: str) -> bytes:
    """The bytes of a policy file; a missing file, a folder or a link in its place is refused."""
    if path.is_symlink():
        raise EngineError(path, "(file)", f"policy {name} is a symbolic link; input folders must hold regular files")
    if not path.exists():
        raise EngineError(path, "(file)", f"policy {name} not found")
    if not path.is_file():
        raise EngineError(path, "(file)", f"policy {name} is not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise from_os_error(exc, path) from None


def load_policy(name: str, policy_dir: Path | None = None, path: Path | None = None) -> Policy:
    """Policy `name` from `policy_dir` (or from the file `path`, e.g. a --world-policy)."""
    if path is None:
        policy_dir = Path(policy_dir or DEFAULT_POLICY_DIR)
        if policy_dir.exists() and not policy_dir.is_dir():
            raise EngineError(policy_dir, "(folder)", "the policy folder is a file")
        path = policy_dir / f"{name}.json"
    path = Path(path)
    raw = _policy_file(path, name)
    return Policy(name=name, path=path, sha256=sha256_hex(raw), data=parse_policy_bytes(name, raw, path))


def load_policies(policy_dir: Path | None = None, names=POLICY_NAMES,
                  overrides: dict[str, Path] | None = None) -> dict[str, Policy]:
    """Every named policy from one folder, except those `overrides` names (name -> file)."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise EngineError("policies", ",".join(unknown), "an override names no policy of this run")
    return {name: load_policy(name, policy_dir, overrides.get(name)) for name in names}


def check_sealed(policy: Policy, sealed_digests: dict[str, str]) -> None:
    """A policy read after S0 must still have the bytes S0 sealed."""
    current = sha256_hex(policy.path.read_bytes())
    sealed = sealed_digests.get(policy.name)
    if sealed is None:
        raise EngineError(policy.path, policy.name, "policy was not sealed by S0")
    if current != sealed or policy.sha256 != sealed:
        raise EngineError(policy.path, "sha256", f"policy bytes changed after sealing (sealed {sealed[:12]}, now {current[:12]})")


def overlay_dir(base: Path | None, replacements: dict[str, Path], runs_root: Path) -> Path:
    """A policy folder equal to `base` except for the named replacement files.

    Written under the runs root, content-addressed (the tag is a digest of every policy file it
    holds), so the run still reads policies from one folder. Every replacement is parsed and
    schema-checked before anything is written. The folder is assembled in a private temporary
    folder and renamed into place; when a concurrent call wins the rename, its folder is used
    once its content is confirmed equal.
    """
    import os

    from .publish import remove_tree, workspace

    base = Path(base or DEFAULT_POLICY_DIR)
    names = [n for n in POLICY_NAMES if n in replacements or (base / f"{n}.json").exists() or (base / f"{n}.json").is_symlink()]
    raws = {}
    for name in names:
        path = Path(replacements[name]) if name in replacements else base / f"{name}.json"
        raws[name] = _policy_file(path, name)
        parse_policy_bytes(name, raws[name], path)
    tag = sha256_hex(b"".join(n.encode() + b"\0" + sha256_hex(raws[n]).encode() for n in sorted(raws)))[:16]
    target = Path(runs_root) / "policy_overlays" / tag
    if target.is_symlink():
        raise EngineError(target, "(folder)", "a symbolic link inside the runs root is refused")
    if not target.exists():
        with workspace(runs_root) as ws:
            tmp = ws / f"overlay-{tag}"
            tmp.mkdir()
            for name, raw in raws.items():
                (tmp / f"{name}.json").write_bytes(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                remove_tree(tmp)  # a concurrent call placed the same folder first
    have = {p.name: p for p in target.iterdir()} if target.is_dir() else {}
    want = {f"{n}.json": raw for n, raw in raws.items()}
    if set(have) != set(want) or any(have[f].is_symlink() or have[f].read_bytes() != raw for f, raw in want.items()):
        raise EngineError(target, "(folder)", "policy overlay holds other bytes than its tag names (edited by hand?); remove it")
    return target
