"""The hash laws: canonical JSON, digests of files and folders, identity tokens, bundle flags.

parameter_hash  = SHA-256 over sorted (policy file name, SHA-256 of its bytes), each name
                  length-prefixed.
manifest_fp     = SHA-256 over the upstream manifest digest and the parameter hash (and a user
                  roster's digest, when the run routes one).
upstream id     = SHA-256 over the three upstream tables' digests: what the RNG keys hang off.
run_id          = first 32 hex of SHA-256(seed, mf, parameter_hash).
bundle flag     = SHA-256 over the raw bytes of the indexed files concatenated in path order,
                  written as one line `sha256_hex = <hex64>`.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FLAG_RE = re.compile(rb"\Asha256_hex = ([0-9a-f]{64})\n?\Z")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8, trailing newline: one byte form per value."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n").encode()


def length_prefixed(data: bytes) -> bytes:
    """The one length-prefix convention of every hash law: LE u64 length, then the bytes."""
    return struct.pack("<Q", len(data)) + data


_lp = length_prefixed


def folder_files(root: Path) -> list[str]:
    """Relative POSIX paths of every file under root, sorted as byte strings."""
    root = Path(root)
    return sorted((p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()), key=str.encode)


def folder_digest(root: Path, exclude: Iterable[str] = ()) -> str:
    """SHA-256 over (length-prefixed relative path, file bytes) in sorted relative-path order."""
    skip = set(exclude)
    h = hashlib.sha256()
    for rel in folder_files(root):
        if rel in skip:
            continue
        h.update(_lp(rel.encode()))
        h.update(_lp((Path(root) / rel).read_bytes()))
    return h.hexdigest()


def parameter_hash(policy_digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(policy_digests, key=str.encode):
        h.update(_lp(name.encode()))
        h.update(bytes.fromhex(policy_digests[name]))
    return h.hexdigest()


def manifest_fingerprint(upstream_manifest_digest: str, param_hash: str, roster_digest: str | None = None) -> str:
    """A user roster, when there is one, is part of the manifest: its digest is folded in (after a
    length-prefixed tag), so runs over the built roster keep the fingerprint they always had."""
    data = _lp(b"2B.manifest.v1") + bytes.fromhex(upstream_manifest_digest) + bytes.fromhex(param_hash)
    if roster_digest is not None:
        data += _lp(b"2B.user_roster.v1") + bytes.fromhex(roster_digest)
    return hashlib.sha256(data).hexdigest()


UPSTREAM_TABLES = ("merchants", "site_locations", "site_timezones")


def upstream_identity(table_digests: dict[str, str]) -> str:
    """What 2B's draws run over: SHA-256 over the digests of the three upstream tables' bytes, in a
    fixed order. Content, not policy: the built-in world and a user's copy of the same tables give
    the same identity, and an edit to any 2B policy leaves it alone."""
    h = hashlib.sha256(length_prefixed(b"2B.upstream.v1"))
    for name in UPSTREAM_TABLES:
        h.update(length_prefixed(name.encode()) + bytes.fromhex(table_digests[name]))
    return h.hexdigest()


def run_id(seed: int, mf: str, param_hash: str) -> str:
    return hashlib.sha256(struct.pack("<Q", seed) + bytes.fromhex(mf) + bytes.fromhex(param_hash)).hexdigest()[:32]


def flag_line(digest_hex: str) -> bytes:
    return f"sha256_hex = {digest_hex}\n".encode()


def parse_flag(data: bytes) -> str | None:
    """The digest of a well-formed flag, or None."""
    m = FLAG_RE.match(data)
    return m.group(1).decode() if m else None


def check_bundle_path(rel: str) -> str | None:
    """Why a bundle member path is unsafe, or None when it is a clean relative path."""
    if not rel or rel.startswith("/"):
        return "path must be relative (no leading '/')"
    if "\\" in rel:
        return "path must not contain '\\'"
    if any(part == ".." for part in rel.split("/")):
        return "path must not contain '..'"
    return None


def site_ids(merchant_id: Iterable[int], legal_country_iso: Iterable[str], site_order: Iterable[int]) -> NDArray[np.uint64]:
    """site_id = LE u64 of bytes 24..31 of SHA-256("{merchant_id}:{iso}:{site_order}").

    One digest per site (a site table, never per arrival); the tails are gathered in one buffer.
    """
    sha = hashlib.sha256
    tails = b"".join(sha(f"{m}:{c}:{s}".encode()).digest()[24:32]
                     for m, c, s in zip(merchant_id, legal_country_iso, site_order))
    return np.frombuffer(tails, dtype="<u8").astype(np.uint64)
