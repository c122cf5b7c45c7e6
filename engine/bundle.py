"""The validation-bundle law shared by the 1B upstream bundle, S0's gate and S8.

A bundle is a folder of member files plus `index.json` (sorted array of {path, sha256_hex}, paths
relative, never listing itself or the flag) and `_passed.flag` (`sha256_hex = <hex64>` + newline),
where the digest is SHA-256 over the raw bytes of the indexed members concatenated in path order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import EngineError
from .identity import canonical_json, check_bundle_path, flag_line, parse_flag, sha256_hex

INDEX = "index.json"
FLAG = "_passed.flag"


def make_bundle(members: dict[str, bytes]) -> dict[str, bytes]:
    """Members plus their index and flag, ready to publish as one folder."""
    for rel in members:
        problem = check_bundle_path(rel)
        if problem or rel in (INDEX, FLAG):
            raise EngineError("bundle", rel, problem or "reserved name")
    paths = sorted(members, key=str.encode)
    index = [{"path": p, "sha256_hex": sha256_hex(members[p])} for p in paths]
    h = hashlib.sha256()
    for p in paths:
        h.update(members[p])
    return {**members, INDEX: canonical_json(index), FLAG: flag_line(h.hexdigest())}


def verify_bundle(root: Path) -> str:
    """The flag digest of a bundle folder that verifies; otherwise an EngineError naming what failed."""
    root = Path(root)
    if not root.is_dir():
        raise EngineError(root, "(folder)", "bundle folder missing")
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return verify_members(files, root)


def verify_members(files: dict[str, bytes], where) -> str:
    """Verify a bundle given as {relative path: bytes}; returns the flag digest.

    Only index.json is parsed before the digests check out: no member is read as data first
    ("no PASS, no read").
    """
    flag_path, index_path = f"{where}/{FLAG}", f"{where}/{INDEX}"
    if FLAG not in files:
        raise EngineError(flag_path, "(file)", "missing _passed.flag")
    flag = parse_flag(files[FLAG])
    if flag is None:
        raise EngineError(flag_path, "(content)", "malformed flag: want one line 'sha256_hex = <64 lowercase hex>'")
    if INDEX not in files:
        raise EngineError(index_path, "(file)", "missing index.json")
    try:
        index = json.loads(files[INDEX])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(index_path, "(document)", f"malformed JSON: {exc}") from None
    if not isinstance(index, list) or not all(isinstance(e, dict) and set(e) == {"path", "sha256_hex"} for e in index):
        raise EngineError(index_path, "(document)", "index must be an array of {path, sha256_hex}")
    paths = [e["path"] for e in index]
    for i, rel in enumerate(paths):
        problem = check_bundle_path(rel) if isinstance(rel, str) else "path must be a string"
        if problem:
            raise EngineError(index_path, f"[{i}].path", problem)
        if rel in (INDEX, FLAG):
            raise EngineError(index_path, f"[{i}].path", "index must not list itself or the flag")
    if len(set(paths)) != len(paths):
        raise EngineError(index_path, "path", "duplicate paths in index")
    for e in index:
        if e["path"] not in files:
            raise EngineError(f"{where}/{e['path']}", "(file)", "indexed member missing")
        if sha256_hex(files[e["path"]]) != e["sha256_hex"]:
            raise EngineError(f"{where}/{e['path']}", "sha256_hex", "member bytes do not match index.json")
    unlisted = sorted(set(files) - set(paths) - {INDEX, FLAG})
    if unlisted:
        raise EngineError(f"{where}/{unlisted[0]}", "(file)", "file in bundle not listed in index.json")
    h = hashlib.sha256()
    for rel in sorted(paths, key=str.encode):
        h.update(files[rel])
    if h.hexdigest() != flag:
        raise EngineError(flag_path, "sha256_hex", f"flag digest {flag[:12]} does not match members ({h.hexdigest()[:12]})")
    return flag
