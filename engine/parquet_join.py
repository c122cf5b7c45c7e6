"""Parquet files encoded apart, joined into the bytes one writer would have written.

A big table is written in row groups of exactly ROW_GROUP rows (engine/shards.py), and a row
group's pages depend on its rows alone: no page holds an offset into the file. So row groups can
be encoded in separate processes, each into a file of its own, and joined afterwards: the pages
are copied as they are, and only the footer (Thrift, compact protocol) changes: the row groups
of every piece in order, their file offsets shifted by where their pages now start, and the
total row count. Every other byte of the footer (schema, key-value metadata, created_by) is the
first piece's, which is what a single writer with the same schema writes.

The footer is decoded into a generic tree and encoded back with the rules of the C++ Thrift
writer (ascending short field deltas, short list headers below 15 elements); `join_files`
refuses a piece whose footer does not survive that round trip byte for byte, so a Parquet
writer that one day writes something this codec does not model fails loudly instead of
producing other bytes. The tests compare joined files with single-writer files.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from .errors import EngineError

MAGIC = b"PAR1"
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)

# FileMetaData, RowGroup, ColumnChunk and ColumnMetaData fields (parquet.thrift) that hold file offsets.
FMD_NUM_ROWS, FMD_ROW_GROUPS = 3, 4
RG_COLUMNS, RG_FILE_OFFSET, RG_ORDINAL = 1, 5, 7
CC_FILE_OFFSET, CC_META, CC_OFFSET_INDEX, CC_COLUMN_INDEX = 2, 3, 4, 6
CMD_OFFSETS = (9, 10, 11, 14)  # data page, index page, dictionary page, bloom filter


# ---------------------------------------------------------------------------------------------
# Thrift compact protocol: a struct is a list of [field id, type, value]


def _varint(b: bytes, i: int) -> tuple[int, int]:
    shift = out = 0
    while True:
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        if not c & 0x80:
            return out, i
        shift += 7


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _read(b: bytes, i: int, t: int):  # noqa: C901 (one branch per Thrift compact type)
    if t in (TRUE, FALSE):
        return t == TRUE, i
    if t == BYTE:
        return struct.unpack_from("b", b, i)[0], i + 1
    if t in (I16, I32, I64):
        v, i = _varint(b, i)
        return _unzigzag(v), i
    if t == DOUBLE:
        return struct.unpack_from("<d", b, i)[0], i + 8
    if t == BINARY:
        n, i = _varint(b, i)
        return bytes(b[i:i + n]), i + n
    if t in (LIST, SET):
        head = b[i]
        i += 1
        n, et = head >> 4, head & 0x0F
        if n == 15:
            n, i = _varint(b, i)
        items = []
        for _ in range(n):
            if et in (TRUE, FALSE):
                items.append(b[i] == 1)
                i += 1
            else:
                v, i = _read(b, i, et)
                items.append(v)
        return (et, items), i
    if t == MAP:
        n, i = _varint(b, i)
        if not n:
            return (0, 0, []), i
        kt, vt = b[i] >> 4, b[i] & 0x0F
        i += 1
        items = []
        for _ in range(n):
            k, i = _read(b, i, kt)
            v, i = _read(b, i, vt)
            items.append((k, v))
        return (kt, vt, items), i
    if t == STRUCT:
        fields, last = [], 0
        while True:
            head = b[i]
            i += 1
            if head == STOP:
                return fields, i
            delta, ft = head >> 4, head & 0x0F
            if delta:
                fid = last + delta
            else:
                v, i = _varint(b, i)
                fid = _unzigzag(v)
            v, i = _read(b, i, ft)
            fields.append([fid, ft, v])
            last = fid
    raise ValueError(f"unknown Thrift compact type {t}")


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int, bits: int) -> int:
    return ((n << 1) ^ (n >> (bits - 1))) & ((1 << bits) - 1)


def _write(out: bytearray, t: int, v) -> None:  # noqa: C901 (one branch per Thrift compact type)
    if t == BYTE:
        out += struct.pack("b", v)
    elif t == I16:
        _put_varint(out, _zigzag(v, 16))
    elif t == I32:
        _put_varint(out, _zigzag(v, 32))
    elif t == I64:
        _put_varint(out, _zigzag(v, 64))
    elif t == DOUBLE:
        out += struct.pack("<d", v)
    elif t == BINARY:
        _put_varint(out, len(v))
        out += v
    elif t in (LIST, SET):
        et, items = v
        if len(items) < 15:
            out.append(len(items) << 4 | et)
        else:
            out.append(0xF0 | et)
            _put_varint(out, len(items))
        for x in items:
            if et in (TRUE, FALSE):
                out.append(1 if x else 2)
            else:
                _write(out, et, x)
    elif t == MAP:
        kt, vt, items = v
        _put_varint(out, len(items))
        if items:
            out.append(kt << 4 | vt)
            for k, x in items:
                _write(out, kt, k)
                _write(out, vt, x)
    elif t == STRUCT:
        last = 0
        for fid, ft, x in v:
            if ft in (TRUE, FALSE):
                ft = TRUE if x else FALSE
            if 0 < fid - last <= 15:
                out.append((fid - last) << 4 | ft)
            else:
                out.append(ft)
                _put_varint(out, _zigzag(fid, 16))
            if ft not in (TRUE, FALSE):
                _write(out, ft, x)
            last = fid
        out.append(STOP)
    else:
        raise ValueError(f"unknown Thrift compact type {t}")


def decode_struct(data: bytes) -> list:
    value, end = _read(data, 0, STRUCT)
    if end != len(data):
        raise ValueError("trailing bytes after the Thrift struct")
    return value


def encode_struct(value: list) -> bytes:
    out = bytearray()
    _write(out, STRUCT, value)
    return bytes(out)


def _field(struct_value: list, fid: int):
    for f in struct_value:
        if f[0] == fid:
            return f
    return None


# ---------------------------------------------------------------------------------------------
# joining


def footer_of(path: Path) -> tuple[int, bytes]:
    """(length of the pages, i.e. where the footer starts, minus the leading magic; footer bytes)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - 8)
        tail = fh.read(8)
        if size < 12 or tail[4:] != MAGIC:
            raise EngineError(path, "(parquet)", "not a Parquet file (no trailing magic)")
        n = struct.unpack("<I", tail[:4])[0]
        fh.seek(size - 8 - n)
        return size - 8 - n - len(MAGIC), fh.read(n)


def _shift(fields: list, fids, delta: int) -> None:
    # A zero offset means "absent" (no page can start before the leading magic): it stays zero.
    for f in fields:
        if f[0] in fids and f[2]:
            f[2] += delta


def join_footers(footers: list[bytes], body_lengths: list[int]) -> bytes:
    """The footer of the pieces' pages laid end to end after one leading magic."""
    meta = None
    groups: list = []
    rows = 0
    start = len(MAGIC)
    for raw, length in zip(footers, body_lengths):
        piece = decode_struct(raw)
        if encode_struct(piece) != raw:
            raise EngineError("parquet_join", "(footer)", "a piece's footer does not survive the Thrift round trip; "
                              "this Parquet writer writes something the joiner does not model")
        delta = start - len(MAGIC)
        for rg in (_field(piece, FMD_ROW_GROUPS) or [0, 0, (STRUCT, [])])[2][1]:
            _shift(rg, (RG_FILE_OFFSET,), delta)
            ordinal = _field(rg, RG_ORDINAL)
            if ordinal is not None:
                ordinal[2] = len(groups)
            for cc in _field(rg, RG_COLUMNS)[2][1]:
                _shift(cc, (CC_FILE_OFFSET, CC_OFFSET_INDEX, CC_COLUMN_INDEX), delta)
                cmd = _field(cc, CC_META)
                if cmd is not None:
                    _shift(cmd[2], CMD_OFFSETS, delta)
            groups.append(rg)
        rows += _field(piece, FMD_NUM_ROWS)[2]
        meta = meta or piece
        start += length
    _field(meta, FMD_NUM_ROWS)[2] = rows
    row_groups = _field(meta, FMD_ROW_GROUPS)
    if row_groups is None:
        raise EngineError("parquet_join", "(footer)", "a piece has no row_groups field")
    row_groups[2] = (STRUCT, groups)
    return encode_struct(meta)


def join_files(pieces: list[Path], out: Path) -> str:
    """Write the pieces (Parquet files with the same schema, each of whole row groups) as one
    file at `out` (fsynced) and return its SHA-256."""
    if not pieces:
        raise EngineError(out, "(parquet)", "nothing to join")
    lengths, footers = zip(*(footer_of(p) for p in pieces))
    footer = join_footers(list(footers), list(lengths))
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        def put(data: bytes) -> None:
            h.update(data)
            dst.write(data)

        put(MAGIC)
        for path, length in zip(pieces, lengths):
            with open(path, "rb") as src:
                src.seek(len(MAGIC))
                left = length
                while left:
                    chunk = src.read(min(left, 8 << 20))
                    if not chunk:
                        raise EngineError(path, "(parquet)", "piece shorter than its footer says")
                    put(chunk)
                    left -= len(chunk)
        put(footer + struct.pack("<I", len(footer)) + MAGIC)
        dst.flush()
        os.fsync(dst.fileno())
    return h.hexdigest()
