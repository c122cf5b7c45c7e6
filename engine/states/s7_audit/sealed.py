"""Checks of the sealed inputs: the S0 receipt, the policies it sealed, and the S1 site key sets."""

from __future__ import annotations

from ...identity import sha256_hex
from .audit import SITE_PK, Audit
from .registry import Blocked, Outcome, examples, global_check, preparation


class SealedInputs(Audit):
    @preparation
    def receipt_policies(self) -> dict[str, str]:
        sealed = self.inputs["s0_gate_receipt"].get("policies")
        if not isinstance(sealed, dict) or not all(isinstance(v, str) for v in sealed.values()):
            raise Blocked("s0_gate_receipt.policies is not a {name: sha256 hex} mapping")
        return sealed

    @global_check("S0.RECEIPT", pass_detail=lambda f: "receipt matches the run; sealed_inputs well-formed")
    def receipt(self) -> Outcome:
        """Receipt identity (mf, seed, sealed clock) and sealed_inputs well-formed."""
        rec, sealed = self.inputs["s0_gate_receipt"], self.inputs["sealed_inputs"]
        problems = []
        for key, want in (("manifest_fingerprint", self.ctx.mf), ("seed", self.ctx.seed),
                          ("verified_at_utc", self.ctx.created_utc)):
            if rec.get(key) != want:
                problems.append(f"receipt {key} = {rec.get(key)!r}, run has {want!r}")
        rows = sealed if isinstance(sealed, list) else sealed.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "asset_id" in r for r in rows):
            problems.append("sealed_inputs is not a list of rows with asset_id")
        else:
            ids = [r["asset_id"] for r in rows]
            if ids != sorted(ids) or len(set(ids)) != len(ids):
                problems.append("sealed_inputs rows are not unique and sorted by asset_id")
            listed = rec.get("sealed_inputs")
            if isinstance(listed, list) and sorted(listed) != sorted(ids):
                problems.append("receipt sealed_inputs ids differ from the sealed_inputs rows")
        return problems, {}

    @global_check("POLICY.DIGESTS", metrics={"policies_checked": "policies_checked"},
                  pass_detail=lambda f: f"{f['policies_checked']} policies match their sealed digests")
    def policy_digests(self) -> Outcome:
        """Every policy given still has the digest S0 sealed (the loaded object and fresh file bytes)."""
        sealed = self.receipt_policies
        rows = self.inputs["sealed_inputs"]
        rows = rows if isinstance(rows, list) else rows.get("rows", [])
        sealed_rows = {r.get("asset_id"): r.get("sha256_hex") for r in rows if isinstance(r, dict)}
        problems = []
        if not self.policies:
            # Nothing re-hashed proves nothing: the pipeline hands S7 every policy S0 sealed.
            problems.append("no policies given to re-check")
        unchecked = sorted(set(sealed) - set(self.policies))
        if unchecked and self.policies:
            problems.append(f"sealed policies not given for re-check: {unchecked}")
        for name in sorted(self.policies):
            pol = self.policies[name]
            want = sealed.get(name)
            if want is None:
                problems.append(f"{name}: not sealed in the receipt")
                continue
            if sealed_rows.get(name) != want:
                problems.append(f"{name}: sealed_inputs row {str(sealed_rows.get(name))[:12]} != receipt {want[:12]}")
            if pol.sha256 != want:
                problems.append(f"{name}: loaded digest {pol.sha256[:12]} != sealed {want[:12]}")
            try:
                fresh = sha256_hex(pol.path.read_bytes())
            except OSError as exc:
                problems.append(f"{name}: cannot re-read {pol.path}: {exc}")
                continue
            if fresh != want:
                problems.append(f"{name}: file bytes changed after sealing ({fresh[:12]} != sealed {want[:12]})")
        return problems, {"policies_checked": len(self.policies)}

    @global_check("S1.SITE_KEYSET", metrics={"sites": "sites", "merchants": "merchants"},
                  pass_detail=lambda f: f"{f['sites']} sites, same keys in S1 and site_timezones")
    def site_keyset(self) -> Outcome:
        """S1 and site_timezones hold the same unique site keys."""
        sites = self.sites
        s1, tz = sites.weights, sites.timezones
        problems = []
        for name, df in (("s1_site_weights", s1), ("site_timezones", tz)):
            dups = df.select(SITE_PK).is_duplicated().sum()
            if dups:
                problems.append(f"{name}: {dups} rows share a site key")
        if not sites.same_keys:
            only_s1 = s1.select(SITE_PK).join(tz.select(SITE_PK), on=SITE_PK, how="anti")
            only_tz = tz.select(SITE_PK).join(s1.select(SITE_PK), on=SITE_PK, how="anti")
            if only_s1.height:
                problems.append(f"{only_s1.height} S1 sites without a tzid{examples(only_s1.rows())}")
            if only_tz.height:
                problems.append(f"{only_tz.height} site_timezones sites without S1 weight{examples(only_tz.rows())}")
        return problems, {"sites": s1.height, "merchants": int(s1["merchant_id"].n_unique())}
