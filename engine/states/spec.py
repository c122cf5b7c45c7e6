"""The state protocol: what the pipeline may know about a state, and what a state hands back.

A state is declared once, by a `StateSpec` (the table is `engine/stages.py`). The pipeline reads
nothing else: it never asks a state's name what to do. A state's module keeps its `READS`,
`WRITES`, `POLICIES` (and `CONTEXT`, `SHARDED`, `check_policy`) because its own code and tests
use them; `StateSpec.of` copies them, so the spec and the module cannot disagree.

Extras are inputs that are not datasets (a path, file bytes, the run's output digests). A spec
names them in `extras`; the pipeline resolves every name from its one table of providers and
passes them to `run` as keyword arguments, so a state's signature says what it needs.

What a state returns is a mapping of dataset id to data, plus two keys of the executors' wire
format (engine/executors.py, engine/shards.py own it, so it stays a mapping): `run_shard` hands its
shard partial to `finish` under `PART`, and `finish` (or `run`) may add the stage report under
`REPORT`. `StateOutputs.of` is the one place the pipeline turns that mapping into typed fields.
The states do not import this module: it would join their code version (engine/receipts.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..receipts import DEFAULT_CONTEXT

Returned = Mapping[str, Any]  # dataset id (or PART, REPORT) -> data

PART = "_part"  # a shard's partial, for `finish` (engine/executors.py pops it)
REPORT = "_report"  # the stage report that rides along with the tables in the run report

# The extras a provider exists for (engine/pipeline.py, EXTRAS); tests/test_state_protocol.py
# checks both sides.
EXTRA_NAMES = ("assets", "bundle_path", "published", "upstream_files", "user_roster")


@dataclass(frozen=True)
class StateSpec:
    name: str
    module: ModuleType  # code version and, for sharded states, where executors find the hooks
    run: Callable[..., Returned]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    policies: tuple[str, ...]
    context: tuple[str, ...] = DEFAULT_CONTEXT  # the run facts the state's bytes depend on
    run_shard: Callable[..., Returned] | None = None
    finish: Callable[..., Returned] | None = None
    check_policy: Callable[[dict[str, Any]], None] | None = None
    extras: tuple[str, ...] = ()
    seals: tuple[str, ...] = ()  # datasets sealed by digest (S0): part of the input key, and the `assets` extra
    checks_seal: bool = False  # runs after the seal: its policies and sealed inputs must still match it
    bundle: str | None = None  # the validation bundle whose path is the `bundle_path` extra

    def __post_init__(self) -> None:
        unknown = set(self.extras) - set(EXTRA_NAMES)
        if unknown:
            raise ValueError(f"{self.name}: no provider for extras {sorted(unknown)}")
        if self.run_shard is not None and self.extras:
            raise ValueError(f"{self.name}: shard hooks take no extras (executors call them without)")
        # Executors resolve the hooks through the module (a Dask worker imports it by name).
        for hook in ("run_shard", "finish"):
            if getattr(self, hook) is not None and getattr(self.module, hook, None) is not getattr(self, hook):
                raise ValueError(f"{self.name}: {hook} must be the module's own")

    @property
    def sharded(self) -> bool:
        return self.run_shard is not None

    @classmethod
    def of(cls, name: str, module: ModuleType, **declared: Any) -> StateSpec:
        """The spec of a state module, from what it declares; `declared` overrides or adds."""
        sharded = getattr(module, "SHARDED", False)
        fields: dict[str, Any] = {
            "run": module.run, "reads": tuple(module.READS), "writes": tuple(module.WRITES),
            "policies": tuple(module.POLICIES), "context": tuple(getattr(module, "CONTEXT", DEFAULT_CONTEXT)),
            "check_policy": getattr(module, "check_policy", None),
            "run_shard": module.run_shard if sharded else None, "finish": module.finish if sharded else None,
        }
        return cls(name=name, module=module, **(fields | declared))


@dataclass
class StateOutputs:
    """What a state produced: datasets by id (frames, bytes, JSON documents, folders, or files the
    executor staged), the stage report, and a shard's partial."""

    tables: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)
    part: Any = None

    @classmethod
    def of(cls, returned: Returned) -> StateOutputs:
        tables = dict(returned)
        return cls(tables, tables.pop(REPORT, None) or {}, tables.pop(PART, None))


def for_run(stages: tuple[StateSpec, ...], alternatives: tuple[StateSpec, ...],
            supplied: set[str]) -> tuple[StateSpec, ...]:
    """The stages of a run: each replaced by an alternative whose extras the run supplies."""
    chosen = {a.name: a for a in alternatives if a.extras and set(a.extras) <= supplied}
    return tuple(chosen.get(s.name, s) for s in stages)
