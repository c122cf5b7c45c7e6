"""`seg2b verify` covers the routed data: any changed byte in any published output of the seed or in
any file of the S8 bundle fails it ("no PASS, no read").

Outputs: every file the bundle vouches for, at sampled byte positions (first, last, middle and
seeded random ones). Bundle files: every byte position, checked in memory under the same law the
command uses, plus sampled positions on disk through the command itself.
"""

from __future__ import annotations

import io
import json
import random
import shutil

import polars as pl
import pyarrow.parquet as pq
import pytest

from engine.bundle import FLAG, INDEX, OUTPUTS, verify_bundle, verify_members
from engine.cli import main
from engine.errors import EngineError
from engine.pipeline import Pipeline, dataset_path
from tests.helpers import private_root, small_policies

SEED = 42
FLIPS = (0x01, 0x80, 0xFF)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("tamper")
    pdir = small_policies(base)
    root = base / "runs"
    result = Pipeline(SEED, root, pdir).run()
    bundle = dataset_path("validation_bundle_2B", root, result.ctx)
    outputs = json.loads((bundle / OUTPUTS).read_bytes())["outputs"]
    return root, bundle, outputs


@pytest.fixture
def own_run(run, tmp_path):
    """`run` in a private copy of its runs root: the tests that flip bytes on disk flip them here,
    never in the module's root."""
    root, bundle, outputs = run
    mine = private_root(root, tmp_path)
    return mine, mine / bundle.relative_to(root), outputs


def positions(size: int, k: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return sorted({0, size - 1, size // 2, *(rnd.randrange(size) for _ in range(k))})


def verify_rc(bundle, capsys) -> int:
    rc = main(["verify", str(bundle)])
    capsys.readouterr()
    return rc


def test_clean_run_verifies(run, capsys):
    _, bundle, outputs = run
    assert verify_rc(bundle, capsys) == 0
    ids = {o["dataset_id"] for o in outputs}
    assert {"s1_site_weights", "s2_alias_blob", "s2_alias_index", "s3_day_effects", "s4_group_weights",
            "rng_event_alias_pick_group", "rng_event_alias_pick_site", "rng_event_cdn_edge_pick", "rng_trace_s5",
            "rng_trace_s6", "s5_arrival_roster", "merchants", "site_locations", "site_timezones", "s7_audit_report"} <= ids


def test_every_output_file_detects_flipped_bytes(own_run, capsys):
    root, bundle, outputs = own_run
    tried = detected = 0
    for i, o in enumerate(outputs):
        path = root / o["path"]
        original = path.read_bytes()
        for j, pos in enumerate(positions(len(original), 5, i)):
            data = bytearray(original)
            data[pos] ^= FLIPS[j % len(FLIPS)]
            path.write_bytes(bytes(data))
            try:
                tried += 1
                detected += verify_rc(bundle, capsys) == 2
            finally:
                path.write_bytes(original)
    assert verify_rc(bundle, capsys) == 0
    assert tried >= 5 * len(outputs) and detected == tried, f"{detected}/{tried} flips detected"


def test_every_bundle_byte_is_sealed(run):
    """Every position of every bundle file (index, flag, outputs list, evidence), each flipped."""
    _, bundle, _ = run
    files = {p.name: p.read_bytes() for p in bundle.iterdir()}
    assert set(files) >= {INDEX, FLAG, OUTPUTS}
    tried = detected = 0
    for name, original in files.items():
        for pos in range(len(original)):
            data = bytearray(original)
            data[pos] ^= FLIPS[pos % len(FLIPS)]
            tried += 1
            try:
                verify_members({**files, name: bytes(data)}, bundle, canonical=True)
            except EngineError:
                detected += 1
    assert detected == tried, f"{detected}/{tried} flips detected"


def test_bundle_files_on_disk(own_run, capsys):
    _, bundle, _ = own_run
    for k, path in enumerate(sorted(bundle.iterdir())):
        original = path.read_bytes()
        for pos in positions(len(original), 3, 100 + k):
            data = bytearray(original)
            data[pos] ^= 0x01
            path.write_bytes(bytes(data))
            try:
                assert verify_rc(bundle, capsys) == 2, (path.name, pos)
            finally:
                path.write_bytes(original)


def test_well_formed_forgery_of_an_event_log_fails(own_run, capsys):
    """A valid Parquet file with other rows (same schema, same partition stamp) is still caught."""
    root, bundle, outputs = own_run
    entry = next(o for o in outputs if o["dataset_id"] == "rng_event_alias_pick_site")
    path = root / entry["path"]
    original = path.read_bytes()
    table = pq.read_table(path)
    forged = pl.from_arrow(table).with_columns(pl.col("site_order").reverse()).to_arrow().cast(table.schema)
    buf = io.BytesIO()
    pq.write_table(forged, buf, compression="zstd")
    try:
        path.write_bytes(buf.getvalue())
        assert verify_rc(bundle, capsys) == 2
    finally:
        path.write_bytes(original)


def test_slipped_in_file_and_whitespace_edits_fail(own_run, capsys):
    root, bundle, outputs = own_run
    extra = (root / outputs[0]["path"]).parent / "part-00001.parquet"
    extra.write_bytes(b"forged")
    try:
        assert verify_rc(bundle, capsys) == 2
    finally:
        extra.unlink()
    for name, edit in ((INDEX, lambda b: b.replace(b",", b", ", 1)), (INDEX, lambda b: b + b"\n"),
                       (FLAG, lambda b: b.rstrip(b"\n")), (FLAG, lambda b: b + b"\n")):
        path = bundle / name
        original = path.read_bytes()
        path.write_bytes(edit(original))
        try:
            assert verify_rc(bundle, capsys) == 2, name
        finally:
            path.write_bytes(original)
    assert verify_rc(bundle, capsys) == 0


def test_moved_bundle_verifies_only_against_its_runs_root(run, tmp_path, capsys):
    root, bundle, _ = run
    moved = tmp_path / "bundle"
    shutil.copytree(bundle, moved)
    with pytest.raises(EngineError, match="not at its published place"):
        verify_bundle(moved)
    assert main(["verify", str(moved), "--runs-root", str(root)]) == 0
    capsys.readouterr()
