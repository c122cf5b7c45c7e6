"""The publish law: atomic, idempotent, conflict-aborting, all or nothing."""

import os

import pytest

from engine import publish
from engine.errors import PublishConflict


def test_first_publish_writes(tmp_path):
    assert publish.publish(tmp_path / "a/b.bin", b"x") == publish.WRITTEN


def test_identical_reemit_is_skipped(tmp_path):
    publish.publish(tmp_path / "b.bin", b"x")
    assert publish.publish(tmp_path / "b.bin", b"x") == publish.IDENTICAL


def test_different_reemit_aborts(tmp_path):
    publish.publish(tmp_path / "b.bin", b"x")
    with pytest.raises(PublishConflict, match="different bytes"):
        publish.publish(tmp_path / "b.bin", b"y")


def test_folder_differing_member_list_aborts(tmp_path):
    publish.publish(tmp_path / "f", {"a": b"1"})
    with pytest.raises(PublishConflict, match="member list"):
        publish.publish(tmp_path / "f", {"a": b"1", "b": b"2"})


def test_group_is_all_or_nothing_on_conflict(tmp_path):
    publish.publish(tmp_path / "exists.bin", b"old")
    with pytest.raises(PublishConflict):
        publish.publish_group([(tmp_path / "new.bin", b"n"), (tmp_path / "exists.bin", b"new")])
    assert not (tmp_path / "new.bin").exists()


def test_crash_mid_group_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = os.replace

    def crash_on_second(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(publish.os, "replace", crash_on_second)
    with pytest.raises(OSError):
        publish.publish_group([(tmp_path / "x/one.bin", b"1"), (tmp_path / "y/two", {"m": b"2"})])
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_crash_during_write_leaves_no_target(tmp_path, monkeypatch):
    def boom(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(publish, "_write_synced", boom)
    with pytest.raises(OSError):
        publish.publish(tmp_path / "t.bin", b"abc")
    assert list(tmp_path.rglob("*")) == []
