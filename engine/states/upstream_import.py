"""A user-supplied upstream as a pipeline stage (instead of the built-in world).

The folder holds `merchants.parquet`, `site_locations.parquet`, `site_timezones.parquet` and a
`validation/` bundle (index.json, _passed.flag, upstream_manifest.json naming the SHA-256 of each
table). Bytes are taken verbatim, so S0 verifies the user's own flag and digests; `run` parses
nothing. Before a run writes anything, `validate` checks the whole folder: the gate law (flag,
manifest digests of exactly these tables) and every table under its contract (exact schema, key
order and uniqueness, finite coordinates in range, IANA time zones, referential integrity), so a
bad upstream is refused while the runs root is still untouched.
"""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .. import contracts, jsonio
from ..bundle import verify_members
from ..context import Context
from ..errors import EngineError, from_os_error
from ..identity import parse_flag, sha256_hex

READS = ()
POLICIES = ()
WRITES = ("merchants", "site_locations", "site_timezones", "validation_bundle_1B", "world_card")
CONTEXT = ("seed",)  # the user's bytes, verbatim
TABLES = ("merchants", "site_locations", "site_timezones")
MANIFEST = "upstream_manifest.json"
CHANNELS = ("card_present", "card_not_present", "omni")
_ISO2 = r"^[A-Z]{2}$"


def run(inputs: dict, policies: dict, ctx: Context, *, upstream_files: dict[str, bytes]) -> dict:
    """`upstream_files`: the folder's bytes by relative path (`read_folder`), read once by the pipeline."""
    files = upstream_files
    out = {name: files[f"{name}.parquet"] for name in TABLES}
    out["validation_bundle_1B"] = {rel[len("validation/"):]: data for rel, data in files.items() if rel.startswith("validation/")}
    # Content, not the folder it came from: the same upstream copied elsewhere is the same run.
    out["world_card"] = {"source": "user-supplied upstream", "upstream_flag_sha256": parse_flag(files["validation/_passed.flag"])}
    return out


# ---------------------------------------------------------------------------------------------
# reading and validating the folder


def read_folder(folder: Path) -> dict[str, bytes]:
    """The bytes of the three tables and of every file of `validation/`; links are refused (a link
    could smuggle bytes from elsewhere into the published tree)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EngineError(folder, "(folder)", "user-supplied upstream folder missing" if not folder.exists() else "not a folder")
    files = {}
    try:
        for name in TABLES:
            path = folder / f"{name}.parquet"
            if path.is_symlink():
                raise EngineError(path, "(file)", "symbolic link in an input folder; refused")
            if not path.is_file():
                raise EngineError(path, "(file)", "user-supplied upstream table missing")
            files[path.name] = path.read_bytes()
        vdir = folder / "validation"
        if vdir.is_symlink():
            raise EngineError(vdir, "(folder)", "symbolic link in an input folder; refused")
        if not vdir.is_dir():
            raise EngineError(vdir, "(folder)", "user-supplied upstream has no validation bundle")
        for p in sorted(vdir.rglob("*")):
            if p.is_symlink():
                raise EngineError(p, "(file)", "symbolic link in an input folder; refused")
            if p.is_file():
                files["validation/" + p.relative_to(vdir).as_posix()] = p.read_bytes()
    except OSError as exc:
        raise from_os_error(exc) from None
    return files


def validate(files: dict[str, bytes], folder: Path) -> pl.DataFrame:
    """Refuse an upstream that S0 or any state would refuse later; returns its merchants table."""
    folder = Path(folder)
    bundle = {rel[len("validation/"):]: data for rel, data in files.items() if rel.startswith("validation/")}
    verify_members(bundle, folder / "validation")
    where = folder / "validation" / MANIFEST
    if MANIFEST not in bundle:
        raise EngineError(where, "(file)", "the 1B bundle carries no upstream manifest")
    manifest = jsonio.loads(bundle[MANIFEST], where)
    listed = manifest.get("datasets") if isinstance(manifest, dict) else None
    for name in TABLES:
        entry = listed.get(name) if isinstance(listed, dict) else None
        want = entry.get("sha256_hex") if isinstance(entry, dict) else None
        if want != sha256_hex(files[f"{name}.parquet"]):
            raise EngineError(folder / f"{name}.parquet", "sha256_hex",
                              f"bytes differ from the digest the 1B bundle certifies ({str(want)[:12]})")
    t = {name: _table(name, files[f"{name}.parquet"], folder / f"{name}.parquet") for name in TABLES}
    _check_merchants(t["merchants"], folder / "merchants.parquet")
    _check_sites(t["site_locations"], t["site_timezones"], t["merchants"], folder)
    return t["merchants"]


def _table(name: str, data: bytes, where: Path) -> pl.DataFrame:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise EngineError(where, name, f"unreadable Parquet: {exc}") from None
    contracts.check_schema(table.schema.remove_metadata(), name, where)
    df = pl.from_arrow(table)
    if df.height == 0:
        raise EngineError(where, "(rows)", "table has no rows")
    for col, n_null in zip(df.columns, df.null_count().row(0)):
        if n_null:
            raise EngineError(where, col, f"{n_null} null value(s); column is non-nullable")
    try:
        contracts.check_key_order(name, df)
    except EngineError as exc:
        raise EngineError(where, exc.field, exc.rule) from None
    return df


def _first(mask: pl.Series) -> int | None:
    return int(mask.arg_max()) if mask.any() else None


def _refuse(df: pl.DataFrame, mask: pl.Series, where: Path, column: str, rule: str) -> None:
    row = _first(mask)
    if row is not None:
        raise EngineError(where, f"row {row} {column}", f"{rule} (got {df[column][row]!r})")


def _check_merchants(m: pl.DataFrame, where: Path) -> None:
    _refuse(m, ~m["home_country_iso"].str.contains(_ISO2), where, "home_country_iso", "must be an ISO 3166 alpha-2 code")
    _refuse(m, ~m["channel"].is_in(list(CHANNELS)), where, "channel", f"must be one of {CHANNELS}")
    _refuse(m, m["merchant_class"].str.strip_chars() == "", where, "merchant_class", "must not be empty")


def _check_sites(loc: pl.DataFrame, tz: pl.DataFrame, merchants: pl.DataFrame, folder: Path) -> None:
    where = folder / "site_locations.parquet"
    lat, lon = loc["lat_deg"], loc["lon_deg"]
    _refuse(loc, ~lat.is_finite().fill_null(False) | (lat.abs() > 90), where, "lat_deg", "latitude must be finite, in [-90, 90]")
    _refuse(loc, ~lon.is_finite().fill_null(False) | (lon.abs() > 180), where, "lon_deg",
            "longitude must be finite, in [-180, 180]")
    _refuse(loc, ~loc["legal_country_iso"].str.contains(_ISO2), where, "legal_country_iso", "must be an ISO 3166 alpha-2 code")
    _refuse(loc, loc["site_order"] < 1, where, "site_order", "must be >= 1")
    known = loc["merchant_id"].is_in(merchants["merchant_id"].implode())
    _refuse(loc, ~known, where, "merchant_id", "merchant not in merchants.parquet")
    unsited = ~merchants["merchant_id"].is_in(loc["merchant_id"].unique().implode())
    _refuse(merchants, unsited, folder / "merchants.parquet", "merchant_id", "merchant has no site in site_locations.parquet")

    where = folder / "site_timezones.parquet"
    key = list(contracts.SITE_PK)
    if tz.height != loc.height or not tz.select(key).equals(loc.select(key)):
        differ = tz.select(key).join(loc.select(key), on=key, how="anti")
        row = differ.row(0, named=True) if differ.height else None
        raise EngineError(where, f"site {tuple(row.values())}" if row else "(rows)",
                          "must hold exactly the sites of site_locations.parquet, in the same order")
    _refuse(tz, tz["tzid_source"].str.strip_chars() == "", where, "tzid_source", "must not be empty")
    for name in tz["tzid"].unique().sort().to_list():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*", name) or not _known_zone(name):
            _refuse(tz, tz["tzid"] == name, where, "tzid", "not an IANA time zone known to zoneinfo")


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
