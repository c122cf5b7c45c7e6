"""The bundle law: index + flag over members in path order; any tampering is caught."""

import pytest

from engine import bundle, publish
from engine.errors import EngineError


@pytest.fixture
def published(tmp_path):
    files = bundle.make_bundle({"b.json": b"{}\n", "a/x.bin": b"\x00\x01"})
    publish.publish(tmp_path / "bundle", files)
    return tmp_path / "bundle"


def test_fresh_bundle_verifies(published):
    assert len(bundle.verify_bundle(published)) == 64


@pytest.mark.parametrize("member", ["b.json", "a/x.bin", "index.json", "_passed.flag"])
def test_flipped_byte_fails(published, member):
    p = published / member
    data = bytearray(p.read_bytes())
    data[0] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(EngineError):
        bundle.verify_bundle(published)


def test_malformed_flag_named(published):
    (published / "_passed.flag").write_bytes(b"sha256 = nothex\n")
    with pytest.raises(EngineError, match="malformed flag"):
        bundle.verify_bundle(published)


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/path", "a\\b"])
def test_unsafe_index_paths_rejected(bad):
    files = bundle.make_bundle({"ok": b"1"})
    escaped, digest = bad.replace("\\", "\\\\"), "0" * 64
    files["index.json"] = f'[{{"path": "{escaped}", "sha256_hex": "{digest}"}}]'.encode()
    with pytest.raises(EngineError, match="path"):
        bundle.verify_members(files, "b")


def test_unlisted_member_rejected(published):
    (published / "extra.txt").write_bytes(b"sneaky")
    with pytest.raises(EngineError, match="not listed"):
        bundle.verify_bundle(published)
