"""Provenance and roster checks, on :mod:`forge_secure.crypto`.

- ``roster-freshness``: the roster in the evidence is signed by a threshold of its admins
  (TUF-style, Samuel et al. 2010), not older than one this machine already trusted (checked
  without remembering anything), not expired and not about to.
- ``provenance``: every bundle verifies against the roster (DSSE signature, signer listed,
  not revoked, key valid when sealed and now, payload digest), its signer is allowed by the
  policy; every plugin in ``plugins/`` is the content of a verified bundle (with the
  recipient's decryption key the bundle is opened in a scratch directory and the adapter
  weights' sha256 compared; without it, the plugin's DP claim and base digest must equal the
  signed ones, and the weights are reported as unbound); and every merged version's parents
  chain, digest by digest, to such plugins (or to other chained merged versions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from forge_secure.errors import ForgeError

from ..findings import Finding, Status
from .base import Check, CheckSettings, register_check
from .dp import bad_evidence, missing_evidence

if TYPE_CHECKING:
    from forge_secure.crypto.bundle import Verified

SECONDS_PER_DAY = 86400


def _now(evidence) -> int:
    from forge_secure.crypto import _time

    return evidence.options.now if evidence.options.now is not None else _time.now()


def trusted_roster(evidence):
    """(roster or None, finding-ready error or None): read and trust the evidence's roster,
    remembering nothing on this machine."""
    from forge_secure.crypto.roster import read_roster, trust

    if evidence.roster_path is None:
        return None, None
    try:
        roster = read_roster(evidence.roster_path)
        return trust(roster, now=_now(evidence), remember=False), None
    except ForgeError as e:
        return None, e


@register_check("roster-freshness")
class RosterFreshness(Check):
    title = "Trust roster"
    description = "The roster is signed by enough admins, is not a rollback, has not expired, and stays valid for the policy's margin."

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        min_days_to_expiry: float = 7.0
        max_days_to_expiry: float = 400.0

        def validate(self) -> None:
            if self.min_days_to_expiry < 0:
                raise self.bad("min_days_to_expiry", self.min_days_to_expiry, ">= 0")
            if self.max_days_to_expiry <= self.min_days_to_expiry:
                raise self.bad("max_days_to_expiry", self.max_days_to_expiry, "larger than min_days_to_expiry")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from forge_secure.crypto.roster import read_roster

        if evidence.roster_path is None:
            return missing_evidence(self.name, settings, "roster.json", "copy the consortium's current roster.json into the evidence")
        roster, err = trusted_roster(evidence)
        if err is not None:
            ev = {"reason_code": err.code}
            try:
                ev.update(
                    {
                        k: v
                        for k, v in read_roster(evidence.roster_path).describe(_now(evidence)).items()
                        if k in ("version", "expires", "valid_signatures", "threshold")
                    }
                )
            except ForgeError:
                pass
            return [
                Finding(
                    self.name,
                    Status.FAIL,
                    "roster.json",
                    f"the roster is not trusted: {err}",
                    ev,
                    remedy=err.fix or "get the current, signed roster from the consortium",
                )
            ]
        now = _now(evidence)
        days_left = (roster.expires - now) / SECONDS_PER_DAY
        d = roster.describe(now)
        ev = {
            "consortium": d["consortium"],
            "version": d["version"],
            "expires": d["expires"],
            "days_to_expiry": round(days_left, 3),
            "valid_signatures": d["valid_signatures"],
            "threshold": d["threshold"],
            "sites": len(d["sites"]),
            "revocations": len(d["revocations"]),
            "roster_sha256": d["sha256"],
            "min_days_to_expiry": settings.min_days_to_expiry,
            "max_days_to_expiry": settings.max_days_to_expiry,
        }
        if days_left < settings.min_days_to_expiry:
            return [
                Finding(
                    self.name,
                    Status.FAIL,
                    "roster.json",
                    f"the roster expires in {days_left:.1f} days (policy: at least {settings.min_days_to_expiry:g})",
                    ev,
                    remedy="the admins must re-sign the roster with a later --expires (forge roster sign), then re-run the audit",
                )
            ]
        if days_left > settings.max_days_to_expiry:
            return [
                Finding(
                    self.name,
                    Status.WARN,
                    "roster.json",
                    f"the roster is valid for {days_left:.0f} more days, longer than the policy's {settings.max_days_to_expiry:g}",
                    ev,
                    remedy="shorten the roster's validity so revocations propagate (forge roster sign --expires)",
                )
            ]
        return [
            Finding(
                self.name,
                Status.PASS,
                "roster.json",
                f"roster v{d['version']} of {d['consortium']} is trusted and valid for {days_left:.1f} more days",
                ev,
            )
        ]


def _claim(meta: dict):
    from forge_secure.numbers import jsonable  # the one codec; canonical: the exact encoding the sealer signs

    dp = meta.get("dp")
    return jsonable(dp, canonical=True) if isinstance(dp, dict) else None


def _base_digest(meta: dict):
    base = meta.get("base")
    return base.get("digest") if isinstance(base, dict) else None


@register_check("provenance")
class Provenance(Check):
    title = "Provenance: signatures, roster and lineage"
    description = (
        "Verifies every sealed bundle against the roster (signature, signer listed and not revoked, payload digest), "
        "links each plugin to a verified bundle, and follows each merged version's parents back to them."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        allowed_signers: tuple[str, ...] = ()
        require_weight_binding: bool = True
        require_lineage: bool = True

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from forge_secure.crypto.bundle import verify

        if not evidence.bundles:
            return missing_evidence(
                self.name, settings, "sealed bundles (bundles/*.forge)", "copy the bundles the sites sent into bundles/"
            )
        findings: list[Finding] = []
        roster, err = trusted_roster(evidence)
        if roster is None:
            why = f"the roster is not trusted ({err})" if err else "there is no roster.json"
            return [
                Finding(
                    self.name,
                    Status.FAIL,
                    b.rel,
                    f"cannot verify: {why}",
                    {"reason_code": getattr(err, "code", "evidence.no_roster")},
                    remedy="add the consortium's current signed roster.json to the evidence",
                )
                for b in evidence.bundles
            ]
        now = _now(evidence)
        verified: dict[str, object] = {}
        seen_ids: dict[str, str] = {}
        from forge_secure.fileio import scratch_directory

        with scratch_directory("audit") as scratch:  # opened bundles: private, swept if a killed audit leaves them
            for i, b in enumerate(evidence.bundles):
                if progress:
                    progress(f"verifying {b.rel}", i, len(evidence.bundles))
                opened_meta = opened_digest = None
                v: Verified | None
                try:
                    if evidence.options.decryption_key is not None:
                        # open verifies before it decrypts: its verification is the one used (no second pass)
                        v, opened_digest, opened_meta = self._open(b.path, roster, evidence, Path(scratch) / f"open-{i}", now)
                    else:
                        v = verify(b.path, roster, now=now, state_dir=Path(scratch) / "roster-state", root=roster)
                except ForgeError as e:
                    failed = e
                    try:  # only a bundle that failed to open: did it verify? (to say which step refused it)
                        v = verify(b.path, roster, now=now, state_dir=Path(scratch) / "roster-state", root=roster)
                    except ForgeError as e2:
                        failed, v = e2, None
                    if v is None:
                        findings.append(
                            Finding(
                                self.name,
                                Status.FAIL,
                                b.rel,
                                f"bundle rejected: {failed}",
                                {"reason_code": failed.code},
                                remedy=failed.fix or "do not use this bundle; ask the site to seal again",
                            )
                        )
                        continue
                ev = {
                    "site": v.site,
                    "signer_key_id": v.signer,
                    "sequence": v.sequence,
                    "submission_id": v.submission_id,
                    "created": v.created,
                    "bundle_sha256": v.bundle_sha256,
                    "roster_version": v.roster_version,
                    "algorithms": v.algorithms.get("signature", []),
                }
                if v.submission_id in seen_ids:
                    findings.append(
                        Finding(
                            self.name,
                            Status.FAIL,
                            b.rel,
                            f"duplicate of {seen_ids[v.submission_id]} (same submission id)",
                            ev,
                            remedy="remove the duplicate; a submission may be merged once",
                        )
                    )
                    continue
                seen_ids[v.submission_id] = b.rel
                if settings.allowed_signers and v.site not in settings.allowed_signers:
                    findings.append(
                        Finding(
                            self.name,
                            Status.FAIL,
                            b.rel,
                            f"signed by {v.site}, which the policy does not allow",
                            ev,
                            remedy=f"only accept submissions from: {', '.join(settings.allowed_signers)}",
                        )
                    )
                    continue
                if evidence.options.decryption_key is not None:
                    if opened_digest is None:
                        findings.append(
                            Finding(
                                self.name,
                                Status.FAIL,
                                b.rel,
                                f"verified, but cannot be opened: {failed}",
                                {**ev, "reason_code": failed.code},
                                remedy=failed.fix or "check the decryption key given to the audit",
                            )
                        )
                        continue
                    ev["adapter_sha256"] = opened_digest
                verified[b.rel] = (v, ev, opened_meta)
                findings.append(
                    Finding(
                        self.name,
                        Status.PASS,
                        b.rel,
                        f"signature by {v.site} verifies; signer in roster v{v.roster_version}, not revoked; payload digest matches",
                        ev,
                    )
                )
        findings += self._link_plugins(evidence, settings, verified)
        return findings

    def _open(self, path: Path, roster, evidence, out: Path, now: int) -> tuple[Verified, str, dict]:
        """(what open_bundle verified, sha256 of the opened adapter, the opened forge.json): the
        bundle is opened (verified, then decrypted) once, and its content read through the
        plugins' one gateway (schema, adapter digest, finite weights, base digest)."""
        from forge_secure.crypto.bundle import open_bundle
        from forge_secure.crypto.replay import ReplayStore
        from forge_secure.plugins.record import read_plugin

        opened = open_bundle(
            path,
            evidence.options.decryption_key,
            roster,
            out,
            passphrase=evidence.options.passphrase,
            now=now,
            replay=ReplayStore(out.parent / f"{out.name}-replay"),
            state_dir=out.parent / "roster-state",
            root=roster,
        )
        record = read_plugin(opened.out)
        return opened.verified, record.adapter_sha256 or "", record.meta

    def _link_plugins(self, evidence, settings, verified: dict) -> list[Finding]:
        findings = []
        chained: set[str] = set()
        used: set[str] = set()
        for item in evidence.plugins:
            if item.data is None or not item.ok:
                findings.append(bad_evidence(self.name, item))
                continue
            digest = item.extra["adapter_digest"]
            site = item.data.get("site")
            recorded = (item.data.get("adapter") or {}).get("sha256") if isinstance(item.data.get("adapter"), dict) else None
            if recorded is not None and recorded != digest:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        "its weights do not match the adapter digest its forge.json records",
                        {"adapter_sha256": digest, "recorded_sha256": recorded},
                        remedy="the weights were replaced after training; re-open the plugin from its verified bundle",
                        plugin=item.rel,
                        claim="weights-binding",
                        basis="re-derived",
                    )
                )
                continue
            match, bound, edited = None, False, False
            for rel, (v, ev, opened_meta) in verified.items():
                if rel in used:
                    continue
                if "adapter_sha256" in ev:
                    if ev["adapter_sha256"] == digest:
                        # the weights are the signed ones; the manifest (DP record, base, site) must be too
                        match, bound, edited = rel, True, opened_meta != item.data
                        break
                elif v.site == site and v.dp == _claim(item.data) and v.base_digest == _base_digest(item.data):
                    match = rel
                    break
            ev = {"adapter_sha256": digest, "site": site}
            if match is None:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        "no verified bundle holds this plugin (its site, signed DP claim or base differ, or its weights differ)",
                        ev,
                        remedy="audit only plugins opened from verified bundles; re-open the site's bundle with forge open",
                        plugin=item.rel,
                        claim="weights-binding",
                        basis="claimed",
                    )
                )
                continue
            used.add(match)
            chained.add(digest)
            ev["bundle"] = match
            if edited:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"its weights match {match}, but its forge.json differs from the signed one in that bundle (edited after opening)",
                        {**ev, "weights_bound": True, "manifest_bound": False},
                        remedy="judge only the plugin as opened from its verified bundle: re-open it with forge open",
                        plugin=item.rel,
                        claim="weights-binding",
                        basis="verified",
                    )
                )
            elif bound:
                findings.append(
                    Finding(
                        self.name,
                        Status.PASS,
                        item.rel,
                        f"weights and forge.json match the opened content of {match}",
                        {**ev, "weights_bound": True, "manifest_bound": True},
                        plugin=item.rel,
                        claim="weights-binding",
                        basis="verified",
                    )
                )
            else:
                status = Status.FAIL if settings.require_weight_binding else Status.WARN
                findings.append(
                    Finding(
                        self.name,
                        status,
                        item.rel,
                        f"site, signed DP claim and base match {match}; the weights are not bound (no decryption key given)",
                        {**ev, "weights_bound": False},
                        remedy="run the audit with --decryption-key (the consortium "
                        "recipient key) to bind the weights to the signed payload",
                        plugin=item.rel,
                        claim="weights-binding",
                        basis="claimed",
                    )
                )
        # merged versions, in dependency order: a parent may be a plugin or an already chained merge
        pending = [m for m in evidence.merged]
        progress_made = True
        results: dict[str, Finding] = {}
        while pending and progress_made:
            progress_made = False
            for item in list(pending):
                if item.data is None or not item.ok:
                    results[item.rel] = bad_evidence(self.name, item)
                    pending.remove(item)
                    progress_made = True
                    continue
                parents = item.data.get("parents") if isinstance(item.data.get("parents"), list) else None
                if not parents:
                    results[item.rel] = Finding(
                        self.name,
                        Status.FAIL if settings.require_lineage else Status.WARN,
                        item.rel,
                        "merged version records no parents",
                        {"adapter_sha256": item.extra["adapter_digest"]},
                        remedy="merge with forge merge, which records the parents' digests",
                        plugin=item.rel,
                        claim="weights-binding",
                        basis="claimed",
                    )
                    pending.remove(item)
                    progress_made = True
                    continue
                digests = [p.get("digest") if isinstance(p, dict) else None for p in parents]
                if all(d in chained for d in digests):
                    chained.add(item.extra["adapter_digest"])
                    results[item.rel] = Finding(
                        self.name,
                        Status.PASS,
                        item.rel,
                        f"all {len(digests)} parents chain to verified bundles (the merge itself is the merger's record)",
                        {"parents": digests, "adapter_sha256": item.extra["adapter_digest"]},
                        plugin=item.rel,
                        claim="weights-binding",
                        basis="claimed",
                    )
                    pending.remove(item)
                    progress_made = True
        for item in pending:
            digests = [p.get("digest") if isinstance(p, dict) else None for p in item.data.get("parents", [])]
            missing = [d for d in digests if d not in chained]
            results[item.rel] = Finding(
                self.name,
                Status.FAIL if settings.require_lineage else Status.WARN,
                item.rel,
                f"{len(missing)} of {len(digests)} parents do not chain to a verified bundle",
                {"unchained_parents": missing, "parents": digests},
                remedy="include every parent plugin (opened from its verified bundle) "
                "in the evidence, or re-merge from verified plugins only",
                plugin=item.rel,
                claim="weights-binding",
                basis="claimed",
            )
        findings += [results[m.rel] for m in evidence.merged if m.rel in results]
        return findings


__all__ = ["Provenance", "RosterFreshness", "trusted_roster"]
