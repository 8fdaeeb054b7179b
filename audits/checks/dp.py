"""Differential-privacy checks: claims re-derived from the recorded mechanism, delta < 1/n.

The DP record of a plugin (``forge.json`` -> ``dp``) holds the noise multiplier sigma, the
sample rate q, the number of steps T, delta and the accountant. The epsilon is recomputed from
``[(sigma, q, T)]`` (Abadi et al. 2016, DP-SGD; accountants in :mod:`audits.accounting`), and
the manifest's own ``epsilon`` is only compared against it. delta must stay below 1/n for n
training records (Dwork and Roth 2014, Sec. 2.3: delta >= 1/n permits releasing a record).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from forge_secure.errors import ForgeDataError, ForgeError

from ..accounting import ACCOUNTANTS, rederive
from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check


def _num(value: Any, where: str) -> float:
    if isinstance(value, str) and value in ("inf", "Infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ForgeDataError(f"{where} = {value!r} is not a number", fix="the manifest is corrupt or was edited", code="audit.dp_record")
    return float(value)


def dp_record(meta: dict, rel: str) -> dict:
    """The DP record of a plugin manifest, type-checked. Raises ForgeDataError."""
    dp = meta.get("dp")
    if not isinstance(dp, dict):
        raise ForgeDataError(f"{rel}/forge.json has no 'dp' record", fix="the manifest is incomplete; re-train with forge train", code="audit.dp_record")
    enabled = dp.get("enabled")
    if not isinstance(enabled, bool):
        raise ForgeDataError(f"{rel}/forge.json dp.enabled = {enabled!r} is not true/false", fix="the manifest is corrupt or was edited", code="audit.dp_record")
    out = {"enabled": enabled, "claimed_epsilon": _num(dp.get("epsilon", "inf"), f"{rel} dp.epsilon")}
    if enabled:
        for key in ("noise_multiplier", "sample_rate", "delta"):
            out[key] = _num(dp.get(key), f"{rel} dp.{key}")
        steps = dp.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise ForgeDataError(f"{rel} dp.steps = {steps!r} is not an integer", fix="the manifest is corrupt or was edited", code="audit.dp_record")
        out["steps"] = steps
        out["accountant"] = str(dp.get("accountant", "prv"))
    return out


def training_rows(meta: dict) -> int | None:
    rows = (meta.get("data") or {}).get("rows") if isinstance(meta.get("data"), dict) else None
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0 else None


def bad_evidence(check: str, item, remedy: str = "restore the file from the tool that wrote it, or re-run that step") -> Finding:
    err = item.error
    return Finding(
        check, Status.FAIL, item.rel, f"unreadable evidence: {err}",
        evidence={"reason_code": getattr(err, "code", "evidence.bad")}, remedy=remedy,
    )


def missing_evidence(check: str, settings: CheckSettings, what: str, remedy: str) -> list[Finding]:
    if settings.required:
        return [Finding(check, Status.FAIL, "(evidence)", f"no {what} in the evidence directory", evidence={"required": True}, remedy=remedy)]
    return [Finding(check, Status.SKIP, "(evidence)", f"no {what} in the evidence directory; not required by the policy")]


def trained_plugins(evidence) -> list:
    """Plugins trained by a site (not merged versions), including unreadable ones."""
    out = []
    for item in evidence.plugins + evidence.merged:
        if item.ok and item.data.get("kind") == "merged":
            continue
        out.append(item)
    return out


@register_check("dp-claims")
class DpClaims(Check):
    title = "Differential-privacy claims, re-derived"
    description = (
        "Recomputes each plugin's epsilon from its recorded noise multiplier, sample rate and steps "
        "with the accountant, compares it with the claimed epsilon and with the policy's maximum."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        max_epsilon: float = 8.0
        accountant: str = "prv"
        claim_tolerance: float = 0.05
        require_dp: bool = True

        def validate(self) -> None:
            if not (self.max_epsilon > 0):
                raise self.bad("max_epsilon", self.max_epsilon, "a number > 0")
            if self.accountant not in ACCOUNTANTS:
                raise self.bad("accountant", self.accountant, f"one of {', '.join(ACCOUNTANTS)}")
            if not (0 <= self.claim_tolerance < 1):
                raise self.bad("claim_tolerance", self.claim_tolerance, "in [0, 1)")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        plugins = trained_plugins(evidence)
        if not plugins:
            return missing_evidence(self.name, settings, "trained plugins (plugins/<name>/forge.json)", "add the opened plugin directories under plugins/")
        findings, bars = [], []
        for item in plugins:
            if not item.ok and item.data is None:
                findings.append(bad_evidence(self.name, item))
                continue
            try:
                rec = dp_record(item.data, item.rel)
                findings.append(self._judge(item, rec, settings, bars))
            except ForgeError as e:
                findings.append(Finding(self.name, Status.FAIL, item.rel, f"DP record unusable: {e}", evidence={"reason_code": e.code}, remedy="re-train the plugin with forge train; never edit forge.json by hand"))
        if bars:
            findings[-1] = _with_plot(findings[-1], Plot("bars", "Re-derived epsilon per plugin", tuple(bars), y_label="epsilon", limit=settings.max_epsilon, limit_label="policy maximum"))
        return findings

    def _judge(self, item, rec: dict, settings, bars: list) -> Finding:
        claimed = rec["claimed_epsilon"]
        if not rec["enabled"]:
            status = Status.FAIL if settings.require_dp else Status.WARN
            return Finding(
                self.name, status, item.rel, "trained without differential privacy (no noise)",
                evidence={"dp_enabled": False, "claimed_epsilon": claimed},
                remedy="re-train the plugin with DP (forge train without --no-dp) before it leaves the site",
            )
        history = [(rec["noise_multiplier"], rec["sample_rate"], rec["steps"])]
        delta = rec["delta"]
        recorded_acc = rec["accountant"] if rec["accountant"] in ACCOUNTANTS else settings.accountant
        eps_recorded, used_recorded = rederive(history, delta, recorded_acc)
        eps_policy, used_policy = (eps_recorded, used_recorded) if recorded_acc == settings.accountant else rederive(history, delta, settings.accountant)
        ev = {
            "noise_multiplier": rec["noise_multiplier"], "sample_rate": rec["sample_rate"], "steps": rec["steps"],
            "delta": delta, "claimed_epsilon": claimed, "recorded_accountant": rec["accountant"],
            "rederived_epsilon": eps_recorded, "rederived_with": used_recorded, "policy_accountant": used_policy,
            "policy_accountant_epsilon": eps_policy, "max_epsilon": settings.max_epsilon,
        }
        bars.append({"label": item.path.name, "value": eps_policy, "claimed": claimed})
        if claimed < eps_recorded * (1 - settings.claim_tolerance):
            return Finding(
                self.name, Status.FAIL, item.rel,
                f"claims epsilon {claimed:.3g}, but its recorded noise, sample rate and steps give {eps_recorded:.3g} ({used_recorded})",
                evidence=ev, remedy="treat the plugin as epsilon {:.3g}; reject it or re-train with more noise or fewer steps".format(eps_recorded),
            )
        if eps_policy > settings.max_epsilon:
            return Finding(
                self.name, Status.FAIL, item.rel,
                f"re-derived epsilon {eps_policy:.3g} ({used_policy}) exceeds the policy maximum {settings.max_epsilon:g}",
                evidence=ev, remedy="re-train with a larger noise multiplier, fewer epochs or a smaller sample rate (forge train --target-epsilon)",
            )
        return Finding(self.name, Status.PASS, item.rel, f"epsilon {eps_policy:.3g} at delta {delta:.2g} re-derived; claim {claimed:.3g} holds", evidence=ev)


def _with_plot(f: Finding, plot: Plot) -> Finding:
    return Finding(f.check, f.status, f.subject, f.summary, f.evidence, f.remedy, f.plots + (plot,))


@register_check("delta")
class DeltaBelowOneOverN(Check):
    title = "delta below 1/n"
    description = "Each plugin's delta times its number of training records must stay below the policy's bound (1 means delta < 1/n)."

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        max_delta_times_n: float = 1.0

        def validate(self) -> None:
            if not (0 < self.max_delta_times_n <= 1):
                raise self.bad("max_delta_times_n", self.max_delta_times_n, "in (0, 1]")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        plugins = trained_plugins(evidence)
        if not plugins:
            return missing_evidence(self.name, settings, "trained plugins (plugins/<name>/forge.json)", "add the opened plugin directories under plugins/")
        findings = []
        for item in plugins:
            if item.data is None:
                findings.append(bad_evidence(self.name, item))
                continue
            try:
                rec = dp_record(item.data, item.rel)
            except ForgeError as e:
                findings.append(Finding(self.name, Status.FAIL, item.rel, f"DP record unusable: {e}", evidence={"reason_code": e.code}, remedy="re-train the plugin with forge train"))
                continue
            if not rec["enabled"]:
                findings.append(Finding(self.name, Status.SKIP, item.rel, "no DP guarantee to check (trained without noise; see dp-claims)"))
                continue
            n = training_rows(item.data)
            if n is None:
                findings.append(Finding(self.name, Status.FAIL, item.rel, "the manifest does not record the number of training rows", evidence={"delta": rec["delta"]}, remedy="re-train with forge train, which records data.rows"))
                continue
            dn = rec["delta"] * n
            ev = {"delta": rec["delta"], "rows": n, "delta_times_n": dn, "one_over_n": 1.0 / n, "max_delta_times_n": settings.max_delta_times_n}
            if dn >= settings.max_delta_times_n:
                findings.append(Finding(
                    self.name, Status.FAIL, item.rel, f"delta {rec['delta']:.3g} is not below {settings.max_delta_times_n:g}/n = {settings.max_delta_times_n / n:.3g} for n = {n}",
                    evidence=ev, remedy=f"re-train with --delta below {settings.max_delta_times_n / n:.3g}",
                ))
            else:
                findings.append(Finding(self.name, Status.PASS, item.rel, f"delta {rec['delta']:.3g} < {settings.max_delta_times_n:g}/n (n = {n})", evidence=ev))
        return findings
