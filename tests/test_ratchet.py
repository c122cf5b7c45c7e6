"""The CI ratchet: a band drop fails, an unexpected rise fails until the lock is updated."""

import copy

import pytest

from certification.record import compare_with_lock, lock_from_record


def record(band_s4_01="B+", t_str_05=True, verdict="PASS_BPLUS"):
    return {
        "lane": "certify", "verdict": verdict, "seeds": [42],
        "per_seed": {"42": {
            "gates": {"T-S1-01": {"band": "B+", "values": {"s1_residual_median": 0.01}},
                      "T-S4-01": {"band": band_s4_01, "values": {"s4_max_p_median": 0.77}}},
            "structural": {"T-STR-05": {"ok": t_str_05, "detail": ""}}}},
        "cross_seed": {"T-X-01": "B+"},
    }


@pytest.fixture
def lock():
    return lock_from_record(record())


def test_same_bands_pass(lock):
    assert compare_with_lock(lock, record()) == []


def test_band_drop_fails(lock):
    assert any("dropped B+ -> B" in p for p in compare_with_lock(lock, record(band_s4_01="B", verdict="PASS_BPLUS")))


def test_band_rise_fails_until_relocked():
    lock = lock_from_record(record(band_s4_01="B", verdict="PASS_B"))
    assert any("rose B -> B+" in p for p in compare_with_lock(lock, record(verdict="PASS_B")))


def test_structural_regression_fails(lock):
    assert any("T-STR-05" in p for p in compare_with_lock(lock, record(t_str_05=False)))


def test_missing_seed_fails(lock):
    rec = copy.deepcopy(record())
    rec["per_seed"] = {}
    assert any("not in this run" in p for p in compare_with_lock(lock, rec))
