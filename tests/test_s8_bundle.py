"""S8 bundle: published only on an S7 PASS, verifies under the bundle law once written, and any
flipped byte (member, index or flag) makes verification fail."""

from __future__ import annotations

import json

import pytest

from engine.bundle import FLAG, INDEX, verify_bundle
from engine.context import Context
from engine.errors import EngineError
from engine.identity import canonical_json, sha256_hex
from engine.states import s8_bundle

MF = "ab" * 32
CTX = Context(seed=7, manifest_fingerprint=MF, parameter_hash="cd" * 32, run_id="ef" * 16,
              created_utc="2026-01-01T00:00:00.000000Z", upstream_identity="12" * 32)
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


def inputs(rep: dict) -> dict:
    return {"s0_gate_receipt": RECEIPT, "sealed_inputs": SEALED, "s7_audit_report": rep}


def write(bundle: dict, root):
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in bundle.items():
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def bundle():
    return s8_bundle.run(inputs(report("PASS", "PASS")), {}, CTX)["validation_bundle_2B"]


def test_pass_publishes_a_bundle_that_verifies(bundle, tmp_path):
    assert set(bundle) == {"s0_gate_receipt_2B.json", "sealed_inputs_2B.json", "s7_audit_report.json", INDEX, FLAG}
    # Members are the canonical bytes of the evidence, so their digests equal the published datasets'.
    assert bundle["s7_audit_report.json"] == canonical_json(report("PASS", "PASS"))
    assert bundle["s0_gate_receipt_2B.json"] == canonical_json(RECEIPT)
    index = json.loads(bundle[INDEX])
    assert [e["path"] for e in index] == sorted(set(bundle) - {INDEX, FLAG})
    assert all(e["sha256_hex"] == sha256_hex(bundle[e["path"]]) for e in index)
    flag = verify_bundle(write(bundle, tmp_path / "b"))
    assert bundle[FLAG] == f"sha256_hex = {flag}\n".encode()
    # Same evidence, same bytes.
    assert s8_bundle.run(inputs(report("PASS", "PASS")), {}, CTX)["validation_bundle_2B"] == bundle


def test_fail_report_publishes_nothing():
    with pytest.raises(EngineError, match="S7 did not PASS; no bundle is published") as exc:
        s8_bundle.run(inputs(report("PASS", "FAIL")), {}, CTX)
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
        s8_bundle.run(inputs(bad), {}, CTX)


@pytest.mark.parametrize("rel", ["s0_gate_receipt_2B.json", "sealed_inputs_2B.json", "s7_audit_report.json", INDEX, FLAG])
def test_any_flipped_byte_fails_verification(bundle, tmp_path, rel):
    root = write(bundle, tmp_path / "b")
    data = bytearray((root / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / rel).write_bytes(bytes(data))
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
