"""The ``consistency`` check: an empirical epsilon lower bound (Jagielski et al. 2020 with
Clopper-Pearson intervals, threshold chosen on a separate half; Steinke, Nasr, Jagielski 2023
one-run audit when membership was drawn by fair coin flips) above the claimed epsilon proves
the claim false, whatever the manifest says. Next to it stands the *ceiling* of the sample: the
largest epsilon even a perfect attack on it could show. A claim above the ceiling can be
neither confirmed nor contradicted: the check is INCONCLUSIVE, never PASS.

It counts the same membership results as :mod:`.leakage` (:mod:`.selection`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forge_secure.errors import ForgeError

from ..attack_results import MEMBERSHIP
from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check
from .selection import _MIA_REMEDY, _MIA_WHAT, _plugin_guarantee, _select, _target, _unusable

#: the one-run audit's guesses in this check: IN for the top 10 %, OUT for the bottom 10 % of
#: scores (attacks.metrics.one_run_audit's defaults, fixed before looking at the labels)
ONE_RUN_GUESS_FRACTION = 0.1


@register_check("consistency")
class Consistency(Check):
    title = "Empirical privacy vs the claim"
    description = (
        "Derives an empirical epsilon lower bound from each counted membership attack (Clopper-Pearson with a held-out "
        "threshold; the one-run audit when membership was drawn by fair coin flips), next to the ceiling of its sample "
        "(the most a perfect attack could show). A lower bound above the claimed epsilon proves the claim false; a claim "
        "above the ceiling is INCONCLUSIVE: that sample can neither confirm nor contradict it."
    )

    METHODS = ("clopper-pearson", "one-run", "both")
    REMOVED = {
        "canary_audit": "the site-volunteered canary audit was removed: a lying site never "
        "volunteers its canaries (the auditor-canaries check replaces it)",
        "canary_k_plus_fraction": "removed with the site-volunteered canary audit",
        "canary_k_minus_fraction": "removed with the site-volunteered canary audit",
    }

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        method: str = "both"
        confidence: float = 0.95
        seed: int = 0

        def validate(self) -> None:
            if self.method not in Consistency.METHODS:
                raise self.bad("method", self.method, f"one of {', '.join(Consistency.METHODS)}")
            if not (0.5 < self.confidence < 1):
                raise self.bad("confidence", self.confidence, "in (0.5, 1)")

        @classmethod
        def from_table(cls, table: dict):
            from forge_secure.errors import ForgeConfigError

            gone = sorted(set(table) & set(Consistency.REMOVED))
            if gone:
                raise ForgeConfigError(
                    f"policy setting(s) {', '.join(gone)} in [checks.consistency] no longer exist: {Consistency.REMOVED[gone[0]]}",
                    fix="delete them from the policy (see forge audit --print-default-policy)",
                    code="policy.unknown_key",
                )
            return super().from_table(table)

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        counted, findings = _select(self.name, evidence, settings, MEMBERSHIP, _MIA_WHAT, _MIA_REMEDY, "epsilon")
        bars: list = []
        for ae in counted:
            findings.append(self._judge(evidence, ae, settings, bars))
        if bars:
            plot = Plot(
                "bars",
                "Empirical epsilon lower bound (bar), claimed epsilon (marker) and the sample's ceiling",
                tuple(bars),
                y_label="epsilon",
            )
            findings[-1] = findings[-1].replace(plots=findings[-1].plots + (plot,))
        return findings

    def _judge(self, evidence, ae, settings, bars: list) -> Finding:
        from attacks.metrics import clopper_pearson_epsilon_ceiling, one_run_audit, one_run_epsilon_ceiling, split_clopper_pearson_epsilon

        item, res = ae.item, ae.result
        target = _target(evidence, res)
        g = _plugin_guarantee(target)
        if g is None:
            return Finding(
                self.name,
                Status.FAIL if settings.required else Status.SKIP,
                item.rel,
                "the attacked plugin is not in the evidence (or has no DP record), so its claim cannot be audited",
                {"target_refs": list(res.refs)},
                remedy="put the attacked plugin directory under plugins/ or merged/",
            )
        fields = {"plugin": target.rel, "claim": "epsilon", "basis": ae.basis}
        claimed = g["claimed_epsilon"]
        delta = g.get("delta", 0.0) if g["enabled"] else 0.0
        alpha = 1 - settings.confidence
        coin_flip, coin_note = _coin_flip_membership(res, target)
        methods = ["clopper-pearson", "one-run"] if settings.method == "both" else [settings.method]
        if "one-run" in methods and not coin_flip:
            methods.remove("one-run")
        if not methods:
            methods = ["clopper-pearson"]
        per = alpha / len(methods)  # Bonferroni over the methods tried
        bounds, ceilings = {}, {}
        m = int(res.scores.size)
        members, non_members = int(res.labels.sum()), int(m - res.labels.sum())
        try:
            if "one-run" in methods:
                k = max(1, int(round(ONE_RUN_GUESS_FRACTION * m)))
                bounds["one-run"] = one_run_audit(res.scores, res.labels, k_plus=k, k_minus=k, delta=delta, p_target=per)["epsilon_lb"]
                ceilings["one-run"] = one_run_epsilon_ceiling(min(2 * k, m), m=m, delta=delta, p_target=per)
            if "clopper-pearson" in methods:
                bounds["clopper-pearson"] = split_clopper_pearson_epsilon(
                    res.scores, res.labels, delta=delta, alpha=per, seed=settings.seed
                )["epsilon_lb"]
                ceilings["clopper-pearson"] = clopper_pearson_epsilon_ceiling(
                    members - members // 2, non_members - non_members // 2, delta=delta, alpha=per
                )
        except ForgeError as e:  # e.g. too few records to split: this file fails, the others are still judged
            return _unusable(self.name, item, e, **fields)
        eps_lb, ceiling = max(bounds.values()), max(ceilings.values())
        ev = {
            "target": target.rel,
            "attack": res.attack,
            "origin": ae.origin,
            "claimed_epsilon": claimed,
            "delta": delta,
            "empirical_epsilon_lb": eps_lb,
            "lower_bounds": bounds,
            "epsilon_ceiling": ceiling,
            "ceilings": ceilings,
            "records": m,
            "confidence": settings.confidence,
            "bonferroni_alpha_per_method": per,
            "coin_flip_membership": coin_flip,
        }
        if coin_note:
            ev["one_run_not_applied"] = coin_note
        if g["enabled"]:
            ev["rederived_epsilon"] = g["rederived_epsilon"]
        bars.append({"label": target.path.name, "value": eps_lb, "claimed": claimed, "bound": ceiling})
        if eps_lb > claimed:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"empirical epsilon lower bound {eps_lb:.3f} ({settings.confidence:.0%}) "
                f"exceeds the claimed epsilon {claimed:g} of {target.rel}: the DP claim is false",
                ev,
                remedy="reject the plugin; the site's training did not give the privacy "
                "it claims (check for missing noise or an edited manifest)",
                **fields,
            )
        if g["enabled"] and eps_lb > g["rederived_epsilon"]:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"empirical epsilon lower bound {eps_lb:.3f} exceeds the epsilon "
                f"{g['rederived_epsilon']:.3f} re-derived from the recorded noise",
                ev,
                remedy="the DP training or its record is broken; reject the plugin and investigate the training run",
                **fields,
            )
        if math.isinf(claimed):
            return Finding(
                self.name,
                Status.SKIP,
                item.rel,
                f"{target.rel} claims no finite epsilon; nothing to contradict (see dp-claims)",
                ev,
                **fields,
            )
        if claimed > ceiling:
            return Finding(
                self.name,
                Status.INCONCLUSIVE,
                item.rel,
                f"cannot tell: on {m} records even a perfect attack could show at most epsilon {ceiling:.2f}, below the claimed "
                f"{claimed:g} of {target.rel}; the lower bound {eps_lb:.3f} neither confirms nor contradicts the claim",
                ev,
                remedy=_settle(claimed, per),
                **fields,
            )
        return Finding(
            self.name,
            Status.PASS,
            item.rel,
            f"empirical lower bound {eps_lb:.3f} is consistent with the claimed "
            f"epsilon {claimed:g} (this sample could have shown up to {ceiling:.2f})",
            ev,
            **fields,
        )


def _settle(claimed: float, p_target: float) -> str:
    """What would let an audit settle a claim above its sample's ceiling."""
    from attacks.metrics import one_run_guesses_needed

    r = one_run_guesses_needed(claimed, p_target=p_target)
    return (
        f"audit with a larger sample: a one-run audit needs at least {r} guesses, all right, to demonstrate epsilon {claimed:g} "
        f"(about {math.ceil(r / (2 * ONE_RUN_GUESS_FRACTION))} coin-flip records at this check's guess rate); use auditor-issued "
        "canaries (the auditor-canaries check) or verify the training by replay"
    )


def _coin_flip_membership(res, target) -> tuple[bool, str | None]:
    """Whether the one-run audit applies to an attack's labels: membership drawn by independent
    fair coin flips (Steinke, Nasr, Jagielski 2023), as the attack file states *and* as the
    target's own forge.json commits to (include_prob 1/2; the same seed when the file names it).
    A merged version's members are its parents' draws; the file's statement is used for it."""
    if not res.coin_flip:
        return False, "the attack file does not state fair coin-flip membership"
    if target.data.get("kind") == "merged":
        return True, None
    data = target.data.get("data") if isinstance(target.data.get("data"), dict) else {}
    record = data.get("membership")
    if not isinstance(record, dict):
        record = {}
    p = record.get("include_prob")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or abs(float(p) - 0.5) > 1e-12:
        return False, f"{target.rel}/forge.json records no fair coin-flip draw of its training set"
    if res.membership_seed_sha256 is not None and res.membership_seed_sha256 != record.get("seed_sha256"):
        return False, f"the attack's membership seed is not the one {target.rel}/forge.json commits to"
    return True, None
