"""The stage table: one StateSpec per state, in run order, and the alternatives a run may choose.

This is the one place that knows which state needs what beyond its datasets (engine/states/spec.py
says what each field means); engine/pipeline.py runs whatever this table declares.
"""

from __future__ import annotations

from .states import (
    arrival_roster,
    s0_gate,
    s1_site_weights,
    s2_alias_tables,
    s3_day_effects,
    s4_group_weights,
    s5_router,
    s6_edge_router,
    s7_audit,
    s8_bundle,
    upstream_import,
    upstream_world,
)
from .states.spec import StateSpec, for_run

ENGINE_POLICIES = s0_gate.POLICIES
# S0 seals the tables of the stages before it, so a later stage can prove it read them unchanged.
SEALED_TABLES = ("merchants", "site_locations", "site_timezones", "s5_arrival_roster")

STAGES = (
    StateSpec.of("world", upstream_world),
    StateSpec.of("roster", arrival_roster),
    StateSpec.of("S0", s0_gate, seals=SEALED_TABLES, extras=("assets", "bundle_path"), bundle="validation_bundle_1B"),
    StateSpec.of("S1", s1_site_weights, checks_seal=True),
    StateSpec.of("S2", s2_alias_tables, checks_seal=True),
    StateSpec.of("S3", s3_day_effects, checks_seal=True),
    StateSpec.of("S4", s4_group_weights, checks_seal=True),
    StateSpec.of("S5", s5_router, checks_seal=True),
    StateSpec.of("S6", s6_edge_router, checks_seal=True),
    # S7 re-checks every policy digest S0 sealed, so any policy edit is its input.
    StateSpec.of("S7", s7_audit, checks_seal=True, policies=ENGINE_POLICIES),
    StateSpec.of("S8", s8_bundle, checks_seal=True, extras=("published", "bundle_path"), bundle="validation_bundle_2B"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)

# Each replaces the stage of its name when the run supplies every extra it declares.
ALTERNATIVES = (
    # --upstream DIR: the user's tables and 1B bundle, verbatim, instead of the built world.
    StateSpec.of("world", upstream_import, extras=("upstream_files",)),
    # --roster FILE: the user's roster, read whole (it has no merchant order to shard by).
    StateSpec.of("roster", arrival_roster, run=arrival_roster.run_user, run_shard=None, finish=None,
                 extras=("user_roster",)),
)


def stages_for(supplied: set[str]) -> tuple[StateSpec, ...]:
    """The stages of a run given the extras its options supply (`upstream_files`, `user_roster`)."""
    return for_run(STAGES, ALTERNATIVES, supplied)
