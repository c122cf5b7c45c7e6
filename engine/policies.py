"""Policies are data: every tunable number lives in a JSON file validated by its JSON Schema.

`policies/<name>.json` is validated against `policies/schemas/<name>.schema.json`
(`additionalProperties: false` throughout). A policy is identified by the SHA-256 of its bytes;
S0 seals those digests and every later state re-checks them (`check_sealed`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from .errors import EngineError
from .identity import sha256_hex

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"

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


def schema_path(name: str, policy_dir: Path) -> Path:
    return Path(policy_dir) / "schemas" / f"{name}.schema.json"


def parse_policy_bytes(name: str, raw: bytes, where: Path, policy_dir: Path) -> dict:
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(where, "(document)", f"malformed JSON: {exc}") from None
    except ValueError as exc:
        raise EngineError(where, "(document)", str(exc)) from None
    schema_file = schema_path(name, policy_dir)
    if not schema_file.exists():
        schema_file = schema_path(name, DEFAULT_POLICY_DIR)
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        e = errors[0]
        raise EngineError(where, _json_pointer(e.absolute_path), f"schema rule '{e.validator}' violated: {e.message}")
    return data


def _reject_constant(token: str):
    raise ValueError(f"non-finite number {token} is not allowed")


def load_policy(name: str, policy_dir: Path | None = None) -> Policy:
    policy_dir = Path(policy_dir or DEFAULT_POLICY_DIR)
    path = policy_dir / f"{name}.json"
    if not path.exists():
        raise EngineError(path, "(file)", f"policy {name} not found")
    raw = path.read_bytes()
    return Policy(name=name, path=path, sha256=sha256_hex(raw), data=parse_policy_bytes(name, raw, path, policy_dir))


def load_policies(policy_dir: Path | None = None, names=POLICY_NAMES) -> dict[str, Policy]:
    return {name: load_policy(name, policy_dir) for name in names}


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

    Written under the runs root (content-addressed), so the run still reads policies from one folder.
    """
    import shutil

    base = Path(base or DEFAULT_POLICY_DIR)
    raws = {n: Path(p).read_bytes() for n, p in replacements.items()}
    from .identity import folder_digest

    tag = sha256_hex(folder_digest(base).encode() + b"".join(n.encode() + b"\0" + r for n, r in sorted(raws.items())))[:16]
    target = Path(runs_root) / "policy_overlays" / tag
    if not target.exists():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(base, tmp)
        for n, raw in raws.items():
            (tmp / f"{n}.json").write_bytes(raw)
        tmp.rename(target)
    return target
