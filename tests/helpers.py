"""What several test modules share, in one place (test modules never import from each other, and
conftest.py holds fixtures only):

- `context`: the Context a state test runs under;
- policies: `edited_policy` (one shipped policy edited in memory), `policy_variant` (a policy
  folder with edits applied), the small world (`SMALL_WORLD`, `small_policies`), `tree_state`;
- the synthetic S3/S4 world (`make_world`) and the runners over it (`run_s3`, `run_s4`) that the
  S3, S4, metric and certificate tests use, and `placed_world` (merchants and sites placed by hand);
- `private_root`: a test's own copy of a runs root some fixture published, to change freely.

Every helper builds something new on each call; nothing here holds state between tests.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from engine.context import Context
from engine.policies import DEFAULT_POLICY_DIR, load_policy
from engine.states import s3_day_effects, s4_group_weights

# ---------------------------------------------------------------------------------------- context

CREATED = "2026-01-01T00:00:00.000000Z"
SITE_PK = ["merchant_id", "legal_country_iso", "site_order"]


def context(seed: int = 42, **overrides) -> Context:
    """A state's run context: fixed identities, the sealed clock at 2026-01-01 and a known
    upstream identity (the RNG streams' key); `overrides` replace any field."""
    fields = dict(manifest_fingerprint="ab" * 32, parameter_hash="cd" * 32, run_id="ef" * 16, created_utc=CREATED,
                  upstream_identity="12" * 32)
    return Context(seed=seed, **{**fields, **overrides})


# --------------------------------------------------------------------------------------- policies


def edited_policy(name: str, **changes):
    """The shipped policy `name` with `changes` applied in memory (keys are '/'-separated paths);
    its digest is zeroed so it can never pass for the shipped one."""
    base = load_policy(name)
    data = copy.deepcopy(base.data)
    for path, value in changes.items():
        node, keys = data, path.split("/")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return dataclasses.replace(base, data=data, sha256="0" * 64)


def policy_variant(tmp: Path, edits: dict, *, folder: str = "policies", base: Path = DEFAULT_POLICY_DIR) -> Path:
    """A copy of the policy folder `base` (the default one unless given) at `tmp / folder`, with
    `edits` = {policy name: fn(data) -> None} applied."""
    target = Path(tmp) / folder
    shutil.copytree(base, target)
    for name, fn in edits.items():
        path = target / f"{name}.json"
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data, indent=1))
    return target


def world_size(n: int):
    """An edit of world_policy_v1 (for `policy_variant`): a world of `n` merchants."""
    return lambda d: d.update(n_merchants=n)


SMALL_WORLD = {  # 24 merchants, one week, 3 active days: world..S8 in well under a second
    "world_policy_v1": world_size(24),
    "day_effect_policy_v1": lambda d: d.update(day_range={"start": "2026-01-05", "end": "2026-01-11"}),
    "roster_policy_v1": lambda d: d.update(min_active_days=3),
}


def small_policies(tmp: Path, edits: dict | None = None) -> Path:
    """The small world's policy folder, with further `edits` = {policy name: fn(data) -> None}."""
    merged = dict(SMALL_WORLD)
    for name, fn in (edits or {}).items():
        first = merged.get(name)
        merged[name] = (lambda d, a=first, b=fn: (a(d) if a else None, b(d))) if first else fn
    return policy_variant(tmp, merged)


def tree_state(root: Path) -> dict[str, str]:
    """Every entry under `root` (recursively): files by SHA-256, links by target, folders by name,
    so any added, removed or changed entry shows."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link -> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "folder"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def private_root(root: Path, tmp: Path) -> Path:
    """A copy of the runs root `root` at `tmp / "runs"` (links kept as links): a test that writes
    into a root a module or session fixture published works on this, never on the shared one."""
    return Path(shutil.copytree(root, Path(tmp) / "runs", symlinks=True))


# ------------------------------------------------------------------------- the synthetic S3/S4 world

# Real IANA zones, most popular first (popularity ~ rank^-0.9), covering every area and a few
# Fri/Sat-weekend zones.
TZ_POOL = [
    "America/New_York", "Europe/London", "Europe/Paris", "Europe/Berlin", "America/Chicago",
    "America/Los_Angeles", "Asia/Tokyo", "Asia/Shanghai", "Asia/Kolkata", "America/Sao_Paulo",
    "Europe/Madrid", "Europe/Rome", "Australia/Sydney", "America/Toronto", "America/Mexico_City",
    "Asia/Singapore", "Asia/Dubai", "Europe/Amsterdam", "Asia/Seoul", "America/Denver",
    "Europe/Warsaw", "Europe/Istanbul", "Asia/Riyadh", "Africa/Johannesburg", "Africa/Lagos",
    "Asia/Jakarta", "Asia/Bangkok", "America/Bogota", "America/Argentina/Buenos_Aires", "Europe/Stockholm",
    "Europe/Zurich", "Europe/Vienna", "Europe/Brussels", "Europe/Lisbon", "Europe/Dublin",
    "Asia/Manila", "Asia/Hong_Kong", "Asia/Taipei", "America/Lima", "America/Santiago",
    "Africa/Cairo", "Africa/Nairobi", "Asia/Karachi", "Asia/Dhaka", "Europe/Athens",
    "Australia/Perth", "Pacific/Auckland", "America/Halifax", "Asia/Jerusalem", "Atlantic/Reykjavik",
    "Indian/Mauritius", "Pacific/Honolulu", "Asia/Tehran", "America/Caracas",
]
CLASSES = ["grocery", "restaurants", "fuel", "apparel", "electronics", "general_merchandise", "pharmacy",
           "lodging", "travel", "transport", "digital"]


def make_world(n_merchants=300, seed=0, single_share=0.5):
    """(merchants, site_timezones, s1_site_weights) in contract shapes with a realistic topology:
    about `single_share` of the merchants in one tzid, the rest in 2..8 tzids with uneven site
    counts, and non-uniform (Dirichlet) S1 weights; ids span the whole u64 range."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, len(TZ_POOL) + 1) ** 0.9
    pop /= pop.sum()
    country = {t: chr(65 + i // 26) + chr(65 + i % 26) for i, t in enumerate(TZ_POOL)}
    mids = np.unique(rng.integers(1, np.iinfo(np.uint64).max, size=n_merchants, dtype=np.uint64))
    n = mids.size
    classes = rng.choice(CLASSES, size=n)
    sites = np.maximum(2, np.round(np.exp(rng.normal(np.log(16), 0.8, n)))).astype(int)
    k_multi = rng.choice(np.arange(2, 9), size=n, p=[.36, .12, .11, .11, .1, .1, .1])
    k = np.where(rng.random(n) < single_share, 1, np.minimum(k_multi, sites))
    st_m, st_c, st_o, st_t, weights = [], [], [], [], []
    for i in range(n):
        tzs = rng.choice(TZ_POOL, size=k[i], replace=False, p=pop)
        # uneven site counts: one site per tz, the rest by a Dirichlet-weighted multinomial
        alloc = 1 + rng.multinomial(sites[i] - k[i], rng.dirichlet(np.full(k[i], 0.8)))
        for t, c in zip(tzs, alloc):
            st_m += [mids[i]] * c
            st_c += [country[t]] * c
            st_o += list(range(1, c + 1))
            st_t += [t] * c
        weights.append(rng.dirichlet(np.full(sites[i], 1.5)))
    merchants = pl.DataFrame({
        "merchant_id": pl.Series(mids, dtype=pl.UInt64),
        "home_country_iso": ["US"] * n,
        "mcc": pl.Series(rng.integers(4000, 6000, n), dtype=pl.Int32),
        "merchant_class": classes.tolist(),
        "channel": rng.choice(["card_present", "card_not_present", "omni"], n).tolist(),
        "is_virtual": (classes == "digital").tolist(),
    })
    st = pl.DataFrame({"merchant_id": pl.Series(np.array(st_m, dtype=np.uint64), dtype=pl.UInt64),
                       "legal_country_iso": st_c, "site_order": pl.Series(st_o, dtype=pl.Int32), "tzid": st_t})
    s1 = st.select(SITE_PK).with_columns(p_weight=pl.Series(np.concatenate(weights)))
    st = st.with_columns(tzid_source=pl.lit("synthetic")).sort(SITE_PK)
    return merchants, st, s1.sort(SITE_PK)


def placed_world(merchants: list[tuple[int, str, str]], sites: list[tuple[int, str, str, int]]):
    """(merchants, site_timezones) placed by hand: merchants as (merchant_id, home_country_iso,
    merchant_class), each with mcc 5411, card present, not virtual; sites as (merchant_id,
    legal_country_iso, tzid, count), `count` sites in that zone, numbered within (merchant,
    country), in PK order."""
    n = len(merchants)
    frame = pl.DataFrame({"merchant_id": pl.Series([m[0] for m in merchants], dtype=pl.UInt64),
                          "home_country_iso": [m[1] for m in merchants], "mcc": pl.Series([5411] * n, dtype=pl.Int32),
                          "merchant_class": [m[2] for m in merchants], "channel": ["card_present"] * n,
                          "is_virtual": [False] * n})
    rows = [(mid, iso, tz) for mid, iso, tz, count in sites for _ in range(count)]
    st = (pl.DataFrame(rows, schema={"merchant_id": pl.UInt64, "legal_country_iso": pl.String, "tzid": pl.String}, orient="row")
          .with_columns(site_order=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("merchant_id", "legal_country_iso"))
          .select(*SITE_PK, "tzid", tzid_source=pl.lit("synthetic")).sort(SITE_PK))
    return frame, st


def day_policy(**changes):
    return edited_policy("day_effect_policy_v1", **changes)


def mix_policy(**changes):
    return edited_policy("group_mix_regularizer_v1", **changes)


def run_s3(world, policy=None, ctx=None, **changes):
    """S3 over a `make_world` world: four weeks from Monday 2026-01-05 unless `policy` is given
    (`changes` edit that default policy)."""
    merchants, st, _ = world
    pol = policy or day_policy(day_range={"start": "2026-01-05", "end": "2026-02-01"}, **changes)
    return s3_day_effects.run({"merchants": merchants, "site_timezones": st}, {"day_effect_policy_v1": pol}, ctx or context())


def run_s4(world, s3_df, policy=None):
    """S4 over a `make_world` world and its S3 table, with the shipped regulariser unless `policy`."""
    _, st, s1 = world
    return s4_group_weights.run({"s1_site_weights": s1, "site_timezones": st, "s3_day_effects": s3_df},
                  {"group_mix_regularizer_v1": policy or mix_policy()}, context())
