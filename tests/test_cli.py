"""The command line: help, verify's exit codes, errors as one clear line."""

import subprocess
import sys

import pytest

from engine import bundle, publish
from engine.cli import main


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "certify" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--until" in out.stdout


@pytest.fixture
def bundle_dir(tmp_path):
    publish.publish(tmp_path / "b", bundle.make_bundle({"s7_audit_report.json": b'{"summary":"PASS"}\n'}))
    return tmp_path / "b"


def test_verify_passes_clean_bundle(bundle_dir, capsys):
    assert main(["verify", str(bundle_dir)]) == 0 and "PASS" in capsys.readouterr().out


def test_verify_fails_tampered_bundle(bundle_dir, capsys):
    member = bundle_dir / "s7_audit_report.json"
    member.write_bytes(member.read_bytes().replace(b"PASS", b"FAIL"))
    assert main(["verify", str(bundle_dir)]) == 2
    assert "s7_audit_report.json" in capsys.readouterr().err


def test_unknown_until_is_one_line_error(tmp_path, capsys):
    assert main(["run", "--seed", "1", "--runs-root", str(tmp_path), "--until", "S42", "--quiet"]) == 2
    assert "unknown state" in capsys.readouterr().err
