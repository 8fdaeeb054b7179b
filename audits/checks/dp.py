"""Differential-privacy checks: claims re-derived from the recorded mechanism, and delta.

The DP record of a plugin (``forge.json`` -> ``dp``) holds the noise multiplier sigma, the
sample rate q, the number of steps T, delta and the accountant. The epsilon is recomputed from
``[(sigma, q, T)]`` (Abadi et al. 2016, DP-SGD; accountants in :mod:`audits.accounting`), and
the manifest's own ``epsilon`` is only compared against it. The fields must also agree with
each other (:func:`cross_field`): q = batch size / rows, T = epochs x ceil(rows / batch size),
rows within what the data commitment allows. All of this is the site's own record: it shows a
manifest is self-consistent, never that training happened as written (only replay does).

delta: a delta near 1/n permits a mechanism that publishes a random record outright with
probability about delta * n (Dwork and Roth 2014, Sec. 2.3, which asks for delta "less than
the inverse of any polynomial in the size of the database"). For medical records the default
policy asks delta <= 1e-5 *and* delta * n <= 0.01 (a 1 % chance, at most, that such a
catastrophic release happens at all), which is what
:func:`forge_secure.privacy.accountants.default_delta` (min(1e-5, 1/n^2)) gives at every n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from forge_secure.errors import ForgeDataError, ForgeError
from forge_secure.numbers import decode

from ..accounting import ACCOUNTANTS, rederive
from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check


def _num(value: Any, where: str) -> float:
    try:
        if isinstance(value, str) and decode(value) != math.inf:  # only infinity is written as a string
            raise ValueError(value)
        return decode(value)  # the one codec
    except ValueError:
        raise ForgeDataError(
            f"{where} = {value!r} is not a number", fix="the manifest is corrupt or was edited", code="audit.dp_record"
        ) from None


def dp_record(meta: dict, rel: str) -> dict:
    """The DP record of a plugin manifest, type-checked. Raises ForgeDataError."""
    dp = meta.get("dp")
    if not isinstance(dp, dict):
        raise ForgeDataError(
            f"{rel}/forge.json has no 'dp' record", fix="the manifest is incomplete; re-train with forge train", code="audit.dp_record"
        )
    enabled = dp.get("enabled")
    if not isinstance(enabled, bool):
        raise ForgeDataError(
            f"{rel}/forge.json dp.enabled = {enabled!r} is not true/false",
            fix="the manifest is corrupt or was edited",
            code="audit.dp_record",
        )
    out: dict[str, Any] = {"enabled": enabled, "claimed_epsilon": _num(dp.get("epsilon", "inf"), f"{rel} dp.epsilon")}
    if enabled:
        for key in ("noise_multiplier", "sample_rate", "delta"):
            out[key] = _num(dp.get(key), f"{rel} dp.{key}")
        steps = dp.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise ForgeDataError(
                f"{rel} dp.steps = {steps!r} is not an integer", fix="the manifest is corrupt or was edited", code="audit.dp_record"
            )
        out["steps"] = steps
        out["accountant"] = str(dp.get("accountant", "prv"))
    return out


def _section(meta: dict, key: str) -> dict:
    """``meta[key]`` when it is a JSON object, else ``{}`` (a missing or mistyped section)."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def training_rows(meta: dict) -> int | None:
    rows = (meta.get("data") or {}).get("rows") if isinstance(meta.get("data"), dict) else None
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0 else None


def bad_evidence(check: str, item, remedy: str = "restore the file from the tool that wrote it, or re-run that step", **fields) -> Finding:
    err = item.error
    return Finding(
        check,
        Status.FAIL,
        item.rel,
        f"unreadable evidence: {err}",
        evidence={"reason_code": getattr(err, "code", "evidence.bad")},
        remedy=remedy,
        **fields,
    )


def _whole(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cross_field(meta: dict, rec: dict) -> tuple[dict, list[str]]:
    """Check that a DP record agrees with the training and data records of its forge.json.

    Returns ``(figures, problems)``: the recorded and the implied values, and one sentence per
    disagreement (empty when all agree). Floats are compared with a relative tolerance of
    1e-9 (rounding only). The rules, as ``forge train`` applies them:

    - rows n = ``data.rows`` (records trained on, included canaries too); when the commitment
      records a membership draw from ``pool_rows`` records, n <= pool_rows + canaries.count;
      when it records ``records`` and the canaries ``inserted``, n = records + inserted;
    - sample rate q = min(1, batch_size / n) (Poisson sampling, expected batch batch_size);
    - steps per epoch = ceil(n / batch_size), steps T = epochs x steps per epoch;
    - the accountant ``history``, when recorded, composes to exactly (sigma, q, T).
    """
    training, data, dp = _section(meta, "training"), _section(meta, "data"), _section(meta, "dp")
    rows, batch, epochs = _whole(data.get("rows")), _whole(training.get("batch_size")), _whole(training.get("epochs"))
    figures: dict = {"rows": rows, "batch_size": batch, "epochs": epochs, "sample_rate": rec["sample_rate"], "steps": rec["steps"]}
    if rows is None or batch is None or epochs is None or min(rows, batch, epochs) < 1:
        missing = [
            name for name, v in (("data.rows", rows), ("training.batch_size", batch), ("training.epochs", epochs)) if v is None or v < 1
        ]
        return figures, [f"cannot cross-check: {', '.join(missing)} missing or not a positive integer"]
    problems = []
    canaries = _section(data, "canaries")
    count = _whole(canaries.get("count")) or 0
    inserted = _whole(canaries.get("inserted", canaries.get("included")))
    membership = _section(data, "membership")
    pool = _whole(membership.get("pool_rows"))
    records = _whole(data.get("records"))
    figures.update({"canaries": count, "canaries_inserted": inserted, "pool_rows": pool, "records": records})
    if pool is not None and rows > pool + count:
        problems.append(f"data.rows {rows} exceeds the {pool} records of the membership pool plus {count} canaries")
    if inserted is not None and inserted > count:
        problems.append(f"{inserted} canaries inserted, but the commitment has only {count}")
    if records is not None and inserted is not None and rows != records + inserted:
        problems.append(f"data.rows {rows} != {records} records + {inserted} inserted canaries")
    q = min(1.0, batch / rows)
    spe = max(1, math.ceil(rows / batch))
    figures.update({"implied_sample_rate": q, "implied_steps_per_epoch": spe, "implied_steps": epochs * spe})
    if not math.isclose(rec["sample_rate"], q, rel_tol=1e-9, abs_tol=1e-15):
        problems.append(f"sample rate {rec['sample_rate']:.6g} != batch size {batch} / rows {rows} = {q:.6g}")
    recorded_spe = _whole(training.get("steps_per_epoch"))
    if recorded_spe is not None:
        figures["steps_per_epoch"] = recorded_spe
        if recorded_spe != spe:
            problems.append(f"steps per epoch {recorded_spe} != ceil(rows {rows} / batch size {batch}) = {spe}")
    if rec["steps"] != epochs * spe:
        problems.append(f"steps {rec['steps']} != epochs {epochs} x ceil({rows} / {batch}) = {epochs * spe}")
    history = dp.get("history")
    if history is not None:
        try:
            hist = [(float(h[0]), float(h[1]), int(h[2])) for h in history]
        except (TypeError, ValueError, IndexError):
            hist = None
        if (
            hist is None
            or sum(h[2] for h in hist) != rec["steps"]
            or any(
                not math.isclose(h[0], rec["noise_multiplier"], rel_tol=1e-9) or not math.isclose(h[1], rec["sample_rate"], rel_tol=1e-9)
                for h in hist
            )
        ):
            problems.append(
                f"the accountant history {history!r} does not compose to (sigma "
                f"{rec['noise_multiplier']:g}, q {rec['sample_rate']:g}, {rec['steps']} steps)"
            )
    return figures, problems


def missing_evidence(check: str, settings: CheckSettings, what: str, remedy: str) -> list[Finding]:
    if settings.required:
        return [
            Finding(check, Status.FAIL, "(evidence)", f"no {what} in the evidence directory", evidence={"required": True}, remedy=remedy)
        ]
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
            return missing_evidence(
                self.name, settings, "trained plugins (plugins/<name>/forge.json)", "add the opened plugin directories under plugins/"
            )
        findings: list[Finding] = []
        bars: list = []
        for item in plugins:
            if not item.ok and item.data is None:
                findings.append(bad_evidence(self.name, item))
                continue
            try:
                rec = dp_record(item.data, item.rel)
                if rec["enabled"]:
                    findings.append(self._cross_field(item, rec))
                findings.append(self._judge(item, rec, settings, bars))
            except ForgeError as e:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"DP record unusable: {e}",
                        evidence={"reason_code": e.code},
                        remedy="re-train the plugin with forge train; never edit forge.json by hand",
                        plugin=item.rel,
                        claim="dp-parameters",
                        basis="claimed",
                    )
                )
        if bars:
            findings[-1] = _with_plot(
                findings[-1],
                Plot(
                    "bars",
                    "Re-derived epsilon per plugin",
                    tuple(bars),
                    y_label="epsilon",
                    limit=settings.max_epsilon,
                    limit_label="policy maximum",
                ),
            )
        return findings

    def _cross_field(self, item, rec: dict) -> Finding:
        figures, problems = cross_field(item.data, rec)
        fields = {"plugin": item.rel, "claim": "dp-parameters", "basis": "re-derived"}
        if problems:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                "the DP record contradicts the training and data records: " + "; ".join(problems),
                evidence={**figures, "problems": problems},
                remedy="the manifest was edited or is corrupt: reject the plugin, or have the site re-train it with forge train",
                **fields,
            )
        return Finding(
            self.name,
            Status.PASS,
            item.rel,
            f"sample rate {rec['sample_rate']:.4g} = {figures['batch_size']}/{figures['rows']} and {rec['steps']} steps = "
            f"{figures['epochs']} x {figures['implied_steps_per_epoch']} agree with "
            "the training and data records (the site's record: replay verifies it)",
            evidence=figures,
            **fields,
        )

    def _judge(self, item, rec: dict, settings, bars: list) -> Finding:
        claimed = rec["claimed_epsilon"]
        if not rec["enabled"]:
            status = Status.FAIL if settings.require_dp else Status.WARN
            return Finding(
                self.name,
                status,
                item.rel,
                "trained without differential privacy (no noise)",
                evidence={"dp_enabled": False, "claimed_epsilon": claimed},
                remedy="re-train the plugin with DP (forge train without --no-dp) before it leaves the site",
                plugin=item.rel,
                claim="dp-parameters",
                basis="claimed",
            )
        fields = {"plugin": item.rel, "claim": "epsilon", "basis": "re-derived"}
        history = [(rec["noise_multiplier"], rec["sample_rate"], rec["steps"])]
        delta = rec["delta"]
        recorded_acc = rec["accountant"] if rec["accountant"] in ACCOUNTANTS else settings.accountant
        eps_recorded, used_recorded = rederive(history, delta, recorded_acc)
        eps_policy, used_policy = (
            (eps_recorded, used_recorded) if recorded_acc == settings.accountant else rederive(history, delta, settings.accountant)
        )
        ev = {
            "noise_multiplier": rec["noise_multiplier"],
            "sample_rate": rec["sample_rate"],
            "steps": rec["steps"],
            "delta": delta,
            "claimed_epsilon": claimed,
            "recorded_accountant": rec["accountant"],
            "rederived_epsilon": eps_recorded,
            "rederived_with": used_recorded,
            "policy_accountant": used_policy,
            "policy_accountant_epsilon": eps_policy,
            "max_epsilon": settings.max_epsilon,
        }
        bars.append({"label": item.path.name, "value": eps_policy, "claimed": claimed})
        if claimed < eps_recorded * (1 - settings.claim_tolerance):
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"claims epsilon {claimed:.3g}, but its recorded noise, sample rate and steps give {eps_recorded:.3g} ({used_recorded})",
                evidence=ev,
                remedy=f"treat the plugin as epsilon {eps_recorded:.3g}; reject it or re-train with more noise or fewer steps",
                **fields,
            )
        if eps_policy > settings.max_epsilon:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"re-derived epsilon {eps_policy:.3g} ({used_policy}) exceeds the policy maximum {settings.max_epsilon:g}",
                evidence=ev,
                remedy="re-train with a larger noise multiplier, fewer epochs or a smaller sample rate (forge train --target-epsilon)",
                **fields,
            )
        return Finding(
            self.name,
            Status.PASS,
            item.rel,
            f"epsilon {eps_policy:.3g} at delta {delta:.2g} re-derived; claim {claimed:.3g} holds",
            evidence=ev,
            **fields,
        )


def _with_plot(f: Finding, plot: Plot) -> Finding:
    return f.replace(plots=f.plots + (plot,))


@register_check("delta")
class DeltaCheck(Check):
    title = "delta small enough for medical records"
    description = (
        "Each plugin's delta must not exceed the policy's maximum, and delta times its number of training records "
        "(about the chance that a record is published outright) must not exceed the policy's bound."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        max_delta: float = 1e-5
        max_delta_times_n: float = 0.01

        def validate(self) -> None:
            if not (0 < self.max_delta < 1):
                raise self.bad("max_delta", self.max_delta, "in (0, 1)")
            if not (0 < self.max_delta_times_n <= 1):
                raise self.bad("max_delta_times_n", self.max_delta_times_n, "in (0, 1]")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        plugins = trained_plugins(evidence)
        if not plugins:
            return missing_evidence(
                self.name, settings, "trained plugins (plugins/<name>/forge.json)", "add the opened plugin directories under plugins/"
            )
        findings = []
        for item in plugins:
            fields = {"plugin": item.rel, "claim": "delta", "basis": "re-derived"}
            if item.data is None:
                findings.append(bad_evidence(self.name, item, **fields))
                continue
            try:
                rec = dp_record(item.data, item.rel)
            except ForgeError as e:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"DP record unusable: {e}",
                        evidence={"reason_code": e.code},
                        remedy="re-train the plugin with forge train",
                        **fields,
                    )
                )
                continue
            if not rec["enabled"]:
                findings.append(
                    Finding(self.name, Status.SKIP, item.rel, "no DP guarantee to check (trained without noise; see dp-claims)", **fields)
                )
                continue
            n = training_rows(item.data)
            if n is None:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        "the manifest does not record the number of training rows",
                        evidence={"delta": rec["delta"]},
                        remedy="re-train with forge train, which records data.rows",
                        **fields,
                    )
                )
                continue
            delta = rec["delta"]
            dn = delta * n
            limit = min(settings.max_delta, settings.max_delta_times_n / n)
            ev = {
                "delta": delta,
                "rows": n,
                "delta_times_n": dn,
                "one_over_n": 1.0 / n,
                "max_delta": settings.max_delta,
                "max_delta_times_n": settings.max_delta_times_n,
                "largest_allowed_delta": limit,
            }
            rounding = 1 + 1e-9
            problems = []
            if delta > settings.max_delta * rounding:
                problems.append(f"delta {delta:.3g} exceeds the policy maximum {settings.max_delta:g}")
            if dn > settings.max_delta_times_n * rounding:
                problems.append(
                    f"delta x n = {dn:.3g} exceeds {settings.max_delta_times_n:g} for n = {n} "
                    f"(a record could be published outright with probability about {dn:.2g})"
                )
            if problems:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        "; ".join(problems),
                        evidence=ev,
                        remedy=f"re-train with --delta {limit:.3g} or less (the default "
                        f"min(1e-5, 1/n^2) = {min(1e-5, 1.0 / n**2):.3g} fits)",
                        **fields,
                    )
                )
            else:
                findings.append(
                    Finding(
                        self.name,
                        Status.PASS,
                        item.rel,
                        f"delta {delta:.3g} <= {settings.max_delta:g} and delta x n = {dn:.3g} <= {settings.max_delta_times_n:g} (n = {n})",
                        evidence=ev,
                        **fields,
                    )
                )
        return findings
