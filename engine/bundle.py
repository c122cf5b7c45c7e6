"""The validation-bundle law shared by the 1B upstream bundle, S0's gate and S8.

A bundle is a folder of member files plus `index.json` (sorted array of {path, sha256_hex}, paths
relative, never listing itself or the flag) and `_passed.flag` (`sha256_hex = <hex64>` + newline),
where the digest is SHA-256 over the raw bytes of the indexed members concatenated in path order.
A bundle may also vouch for files outside it: its `outputs.json` member lists their paths (relative
to the runs root) and digests, and the consumer check re-hashes them once the flag verifies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import jsonio
from .errors import EngineError
from .identity import canonical_json, check_bundle_path, file_sha256, flag_line, parse_flag, sha256_hex

INDEX = "index.json"
FLAG = "_passed.flag"
OUTPUTS = "outputs.json"  # member of a bundle that vouches for data outside it (the S8 bundle)


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


def outputs_member(bundle_path: str, outputs: list[dict[str, str]]) -> bytes:
    """The OUTPUTS member: where the bundle sits in its runs root and the digest of every output
    it vouches for there ({dataset_id, path, sha256_hex}, paths relative to the runs root)."""
    rows = sorted(({"dataset_id": o["dataset_id"], "path": o["path"], "sha256_hex": o["sha256_hex"]} for o in outputs),
                  key=lambda o: o["path"].encode())
    for o in rows:
        problem = check_bundle_path(o["path"])
        if problem:
            raise EngineError("bundle", o["path"], problem)
    if len({o["path"] for o in rows}) != len(rows):
        raise EngineError("bundle", OUTPUTS, "an output path is listed twice")
    return canonical_json({"bundle": bundle_path, "outputs": rows})


def _no_links(base: Path, rel: str, what: str) -> Path:
    """base/rel, refusing any symbolic link on the way (a link could make a check read other bytes)."""
    path = Path(base)
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink():
            raise EngineError(str(path), "(link)", f"{what} path holds a symbolic link; refused")
    return path


def verify_bundle(root: Path, runs_root: Path | None = None, canonical: bool = True) -> str:
    """The flag digest of a bundle folder that verifies; otherwise an EngineError naming what failed.

    The consumer check ("no PASS, no read"): members against index and flag, index and flag in
    their one canonical byte form, then every output the bundle vouches for (its OUTPUTS member)
    re-hashed in the runs root the bundle sits in (or `runs_root`)."""
    root = Path(root)
    if root.is_symlink():
        raise EngineError(str(root), "(folder)", "bundle folder is a symbolic link; refused")
    if not root.is_dir():
        raise EngineError(str(root), "(folder)", "bundle folder missing" if not root.exists() else "not a folder")
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise EngineError(str(p), "(link)", "bundle member is a symbolic link; refused")
        if p.is_file():
            files[p.relative_to(root).as_posix()] = p.read_bytes()
    flag = verify_members(files, root, canonical=canonical)
    if OUTPUTS in files:
        verify_outputs(files[OUTPUTS], root, runs_root)
    return flag


def verify_outputs(raw: bytes, bundle_dir: Path, runs_root: Path | None = None) -> int:
    """Re-hash every output an OUTPUTS member lists; returns how many. Runs only after the flag
    verified, so the list itself is sealed."""
    where = f"{bundle_dir}/{OUTPUTS}"
    doc = jsonio.loads(raw, where)
    rows = doc.get("outputs") if isinstance(doc, dict) else None
    if not (isinstance(doc, dict) and set(doc) == {"bundle", "outputs"} and isinstance(doc["bundle"], str)
            and isinstance(rows, list) and all(isinstance(o, dict) and set(o) == {"dataset_id", "path", "sha256_hex"}
                                               and all(isinstance(v, str) for v in o.values()) for o in rows)):
        raise EngineError(where, "(document)", "want {bundle, outputs: [{dataset_id, path, sha256_hex}]}")
    if raw != outputs_member(doc["bundle"], rows):
        raise EngineError(where, "(document)", "not in canonical form (sorted, unique paths, canonical JSON)")
    here = Path(bundle_dir).resolve()
    parts = Path(doc["bundle"]).parts
    if runs_root is None:
        if check_bundle_path(doc["bundle"]) or len(parts) >= len(here.parts) or here.parts[-len(parts):] != parts:
            raise EngineError(where, "bundle", f"the bundle is not at its published place {doc['bundle']!r}; "
                              "name the runs root to verify a moved bundle")
        runs_root = Path(*here.parts[: -len(parts)])
    runs_root = Path(runs_root)
    listed: dict[Path, set[str]] = {}
    for o in rows:
        path = _no_links(runs_root, o["path"], "output")
        if not path.is_file():
            raise EngineError(str(path), o["dataset_id"], "output the bundle vouches for is missing")
        if file_sha256(path) != o["sha256_hex"]:
            raise EngineError(str(path), o["dataset_id"], "output bytes differ from the digest the bundle vouches for")
        listed.setdefault(path.parent, set()).add(path.name)
    # A file slipped into an output's folder would be read by a consumer that lists the folder.
    for folder, names in listed.items():
        extra = sorted(p.name for p in folder.iterdir() if p.name not in names and not p.is_dir())
        if extra:
            raise EngineError(str(folder / extra[0]), "(file)",
                              "file in a published output folder that the bundle does not vouch for")
    return len(rows)


def verify_members(files: dict[str, bytes], where: str | Path, canonical: bool = False) -> str:
    """Verify a bundle given as {relative path: bytes}; returns the flag digest.

    Only index.json is parsed before the digests check out: no member is read as data first
    ("no PASS, no read"). `canonical`: index and flag must also be exactly the bytes make_bundle
    writes (the engine's own bundles; an upstream's may format its index freely).
    """
    flag_path, index_path = f"{where}/{FLAG}", f"{where}/{INDEX}"
    flag = _read_flag(files, flag_path, canonical)
    index, paths = _read_index(files, index_path, canonical)
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


def _read_flag(files: dict[str, bytes], flag_path: str, canonical: bool) -> str:
    """The digest the bundle's flag states (in its canonical form too when `canonical`)."""
    if FLAG not in files:
        raise EngineError(flag_path, "(file)", "missing _passed.flag")
    flag = parse_flag(files[FLAG])
    if flag is None:
        raise EngineError(flag_path, "(content)", "malformed flag: want one line 'sha256_hex = <64 lowercase hex>'")
    if canonical and files[FLAG] != flag_line(flag):
        raise EngineError(flag_path, "(content)", "flag not in its canonical form 'sha256_hex = <hex64>' + one newline")
    return flag


def _read_index(files: dict[str, bytes], index_path: str, canonical: bool) -> tuple[list[dict[str, str]], list[str]]:
    """(entries, paths) of the bundle's index.json: an array of {path, sha256_hex} with safe, unique
    paths that list neither the index nor the flag (sorted canonical JSON too when `canonical`)."""
    if INDEX not in files:
        raise EngineError(index_path, "(file)", "missing index.json")
    index = jsonio.loads(files[INDEX], index_path)
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
    if canonical and (paths != sorted(paths, key=str.encode) or files[INDEX] != canonical_json(index)):
        raise EngineError(index_path, "(document)", "index not in its canonical form (sorted by path, canonical JSON)")
    return index, paths
