"""Policy loading: schema-validated, every bad file named with its field and rule."""

import json
import shutil

import pytest

from engine import policies
from engine.errors import EngineError

NAME = "certification_gates_v1"


@pytest.fixture
def pdir(tmp_path):
    shutil.copytree(policies.DEFAULT_POLICY_DIR, tmp_path / "policies")
    return tmp_path / "policies"


def _edit(pdir, fn):
    path = pdir / f"{NAME}.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("name", [n for n in policies.POLICY_NAMES if (policies.DEFAULT_POLICY_DIR / f"{n}.json").exists()])
def test_shipped_policy_validates(name):
    assert policies.load_policy(name).name == name


def test_malformed_json_named(pdir):
    (pdir / f"{NAME}.json").write_text('{"policy_id": ')
    with pytest.raises(EngineError, match=f"{NAME}.json.*malformed JSON"):
        policies.load_policy(NAME, pdir)


def test_unknown_field_rejected(pdir):
    _edit(pdir, lambda d: d.update(surprise=1))
    with pytest.raises(EngineError, match="additionalProperties"):
        policies.load_policy(NAME, pdir)


def test_wrong_type_names_field(pdir):
    _edit(pdir, lambda d: d["preconditions"].update(min_horizon_days="28"))
    with pytest.raises(EngineError, match="/preconditions/min_horizon_days"):
        policies.load_policy(NAME, pdir)


def test_nan_rejected(pdir):
    (pdir / f"{NAME}.json").write_text((pdir / f"{NAME}.json").read_text().replace("1.2e-7", "NaN"))
    with pytest.raises(EngineError, match="non-finite"):
        policies.load_policy(NAME, pdir)


def test_bytes_changed_after_sealing(pdir):
    p = policies.load_policy(NAME, pdir)
    sealed = {NAME: p.sha256}
    (pdir / f"{NAME}.json").write_bytes(p.path.read_bytes() + b" ")
    with pytest.raises(EngineError, match="changed after sealing"):
        policies.check_sealed(p, sealed)


def test_unsealed_policy_rejected(pdir):
    p = policies.load_policy(NAME, pdir)
    with pytest.raises(EngineError, match="not sealed"):
        policies.check_sealed(p, {})
