"""S8 bundle: published only on an S7 PASS, verifies under the bundle law once written, vouches for
the run's outputs outside it, and any flipped byte (member, index, flag or vouched-for output)
makes verification fail."""

from __future__ import annotations

import json

import pytest

from engine.bundle import FLAG, INDEX, OUTPUTS, verify_bundle
from engine.errors import EngineError
from engine.identity import canonical_json, sha256_hex
from engine.states import s8_bundle
from tests.helpers import context

CTX = context(7)
MF = CTX.mf
RECEIPT = {"component": "2B.S0", "manifest_fingerprint": MF, "seed": 7, "verified_at_utc": CTX.created_utc,
           "policies": {"alias_layout_policy_v1": "11" * 32}, "sealed_inputs": ["alias_layout_policy_v1"]}
SEALED = [{"asset_id": "alias_layout_policy_v1", "version_tag": "1.1.0", "sha256_hex": "11" * 32,
           "path": "policies/alias_layout_policy_v1.json", "partition": ""}]


def report(*statuses: str, **overrides) -> dict:
    checks = [{"id": f"CHECK.{i}", "status": st, "detail": "synthetic"} for i, st in enumerate(statuses)]
    failed = sum(st == "FAIL" for st in statuses)
    rep = {"component": "2B.S7", "manifest_fingerprint": MF, "seed": 7, "created_utc": CTX.created_utc,
           "checks": checks, "metrics": {"arrivals": 10},
           "summary": {"overall": "FAIL" if failed else "PASS", "passed": len(checks) - failed, "failed": failed}}
    return {**rep, **overrides}


BUNDLE_PATH = f"data/layer1/2B/validation/seed=7/manifest_fingerprint={MF}"
OUTPUT_BYTES = {"data/layer1/2B/s1_site_weights/part-00000.parquet": b"s1 rows",
                "logs/layer1/2B/rng/events/alias_pick_group/part-00000.parquet": b"group events"}
PUBLISHED = [{"dataset_id": p.split("/")[-2], "path": p, "sha256_hex": sha256_hex(b)} for p, b in OUTPUT_BYTES.items()]


def inputs(rep: dict) -> dict:
    return {"s0_gate_receipt": RECEIPT, "sealed_inputs": SEALED, "s7_audit_report": rep}


def run_s8(rep: dict, published=PUBLISHED) -> dict:
    return s8_bundle.run(inputs(rep), {}, CTX, published=published, bundle_path=BUNDLE_PATH)


def write(bundle: dict, runs_root):
    """The bundle at its published place in `runs_root`, next to the outputs it vouches for."""
    for rel, data in OUTPUT_BYTES.items():
        (runs_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (runs_root / rel).write_bytes(data)
    root = runs_root / BUNDLE_PATH
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in bundle.items():
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def bundle():
    return run_s8(report("PASS", "PASS"))["validation_bundle_2B"]


def test_pass_publishes_a_bundle_that_verifies(bundle, tmp_path):
    assert set(bundle) == {"s0_gate_receipt_2B.json", "sealed_inputs_2B.json", "s7_audit_report.json", OUTPUTS, INDEX, FLAG}
    # Members are the canonical bytes of the evidence, so their digests equal the published datasets'.
    assert bundle["s7_audit_report.json"] == canonical_json(report("PASS", "PASS"))
    assert bundle["s0_gate_receipt_2B.json"] == canonical_json(RECEIPT)
    index = json.loads(bundle[INDEX])
    assert [e["path"] for e in index] == sorted(set(bundle) - {INDEX, FLAG})
    assert all(e["sha256_hex"] == sha256_hex(bundle[e["path"]]) for e in index)
    flag = verify_bundle(write(bundle, tmp_path))
    assert bundle[FLAG] == f"sha256_hex = {flag}\n".encode()
    # Same evidence, same bytes.
    assert run_s8(report("PASS", "PASS"))["validation_bundle_2B"] == bundle


def test_fail_report_publishes_nothing():
    with pytest.raises(EngineError, match="S7 did not PASS; no bundle is published") as exc:
        run_s8(report("PASS", "FAIL"))
    assert (exc.value.where, exc.value.field) == ("s7_audit_report", "summary.overall")


@pytest.mark.parametrize("bad", [
    report("PASS", "FAIL", summary={"overall": "PASS", "passed": 2, "failed": 0}),  # summary contradicts its checks
    report(summary={"overall": "PASS", "passed": 0, "failed": 0}),  # no checks at all
    report("PASS", seed=8),  # another seed's report
    report("PASS", manifest_fingerprint="cd" * 32),  # another manifest's report
    {k: v for k, v in report("PASS").items() if k != "summary"},
], ids=["contradiction", "no-checks", "other-seed", "other-mf", "no-summary"])
def test_untrustworthy_pass_is_refused(bad):
    with pytest.raises(EngineError):
        run_s8(bad)


@pytest.mark.parametrize("rel", ["s0_gate_receipt_2B.json", "sealed_inputs_2B.json", "s7_audit_report.json",
                                 OUTPUTS, INDEX, FLAG])
def test_any_flipped_byte_fails_verification(bundle, tmp_path, rel):
    root = write(bundle, tmp_path)
    data = bytearray((root / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / rel).write_bytes(bytes(data))
    with pytest.raises(EngineError):
        verify_bundle(root)


def test_bundle_without_output_digests_is_refused():
    with pytest.raises(EngineError, match="routed data"):
        run_s8(report("PASS"), published=None)


@pytest.mark.parametrize("rel", sorted(OUTPUT_BYTES))
def test_a_changed_output_fails_verification(bundle, tmp_path, rel):
    root = write(bundle, tmp_path)
    verify_bundle(root)
    (tmp_path / rel).write_bytes(OUTPUT_BYTES[rel][:-1] + b"X")
    with pytest.raises(EngineError, match="bundle vouches for"):
        verify_bundle(root)


def test_a_file_slipped_into_an_output_folder_fails_verification(bundle, tmp_path):
    root = write(bundle, tmp_path)
    rel = sorted(OUTPUT_BYTES)[0]
    ((tmp_path / rel).parent / "part-00001.parquet").write_bytes(b"forged rows")
    with pytest.raises(EngineError, match="does not vouch for"):
        verify_bundle(root)


@pytest.mark.parametrize("edit", [lambda b: b + b"\n", lambda b: b" " + b, lambda b: b.replace(b"\n", b"\r\n")],
                         ids=["extra-newline", "leading-space", "crlf"])
@pytest.mark.parametrize("rel", [INDEX, FLAG])
def test_index_and_flag_have_one_byte_form(bundle, tmp_path, rel, edit):
    root = write(bundle, tmp_path)
    (root / rel).write_bytes(edit((root / rel).read_bytes()))
    with pytest.raises(EngineError):
        verify_bundle(root)


def test_missing_or_extra_file_fails_verification(bundle, tmp_path):
    root = write(bundle, tmp_path / "missing")
    (root / "sealed_inputs_2B.json").unlink()
    with pytest.raises(EngineError, match="missing"):
        verify_bundle(root)
    root = write(bundle, tmp_path / "extra")
    (root / "notes.txt").write_bytes(b"unsealed")
    with pytest.raises(EngineError, match="not listed"):
        verify_bundle(root)
