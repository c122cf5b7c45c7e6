"""The command line: help, verify's exit codes, errors as one clear line."""

import contextlib
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


@pytest.mark.parametrize("args,says", [
    (["--executor", "local", "--workers", "2"], "--workers and --scheduler need --executor dask"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--workers", "0"], "below 1"),
])
def test_executor_options_are_checked_before_anything_is_written(tmp_path, capsys, args, says):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) if "below 1" in says else contextlib.nullcontext():  # argparse exits
        assert main(["run", "--seed", "1", "--runs-root", str(root), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not root.exists()
