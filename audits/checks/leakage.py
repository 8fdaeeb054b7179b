"""Leakage checks on attack results: membership inference, reconstruction, and consistency of
the empirical privacy lower bound with the claimed epsilon.

- Membership: ROC AUC and TPR at low FPR (Carlini et al. 2022, "Membership Inference Attacks
  From First Principles"), recomputed from the per-record scores with seeded bootstrap
  intervals; the FPR actually reached is reported with each TPR.
- Reconstruction: success rate with a Clopper-Pearson interval against the ReRo bound of the
  target's re-derived DP guarantee (Balle et al. 2022; Hayes et al. 2023): min(e^eps kappa +
  delta, the DP-SGD bound from sigma, q, T).
- Consistency: an empirical epsilon lower bound (Jagielski et al. 2020 with Clopper-Pearson
  intervals, threshold chosen on a separate half; Steinke, Nasr, Jagielski 2023 one-run
  audit when membership was drawn by fair coin flips) above the claimed epsilon proves the
  claim false, whatever the manifest says. Next to it stands the *ceiling* of the sample: the
  largest epsilon even a perfect attack on it could show (:func:`attacks.metrics.one_run_epsilon_ceiling`,
  :func:`attacks.metrics.clopper_pearson_epsilon_ceiling`). A claim above the ceiling can be
  neither confirmed nor contradicted: the check is INCONCLUSIVE, never PASS.

Which results count (:func:`audits.attack_results.attack_evidence`): the auditor's own (the
audit ran the attack), and the site's only when every score is re-derived from per-record
signals. Any other site file is listed as "not counted" and does not change the verdict: an
adversarial site controls what it writes there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forge_secure.errors import ForgeError
from forge_secure.numbers import decode

from ..accounting import rederive_epsilon
from ..attack_results import MEMBERSHIP, RECONSTRUCTION, attack_evidence, target_refs
from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check
from .dp import bad_evidence, dp_record, missing_evidence

#: the one-run audit's guesses in this check: IN for the top 10 %, OUT for the bottom 10 % of
#: scores (attacks.metrics.one_run_audit's defaults, fixed before looking at the labels)
ONE_RUN_GUESS_FRACTION = 0.1


def _target(evidence, result):
    for ref in result.refs:
        found = evidence.find_plugin(ref)
        if found is not None:
            return found
    return None


def _named_target(evidence, ae) -> str:
    """The plugin an attack file names (for a file that was not parsed), or ""."""
    data = ae.item.data if isinstance(ae.item.data, dict) else {}
    for ref in target_refs(data):
        found = evidence.find_plugin(ref)
        if found is not None:
            return found.rel
    return ""


def _unusable(check: str, item, err: ForgeError, **fields) -> Finding:
    return Finding(
        check,
        Status.FAIL,
        item.rel,
        f"attack results cannot be evaluated: {err}",
        {"reason_code": err.code},
        remedy=err.fix or "re-run the attack with more records and keep its results file",
        **fields,
    )


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _select(check: str, evidence, settings, kind: str, what: str, remedy: str, claim: str):
    """(counted AttackEvidence list, findings for files that are not counted or unusable).
    When nothing counts, the findings end with the missing-evidence finding (FAIL when the
    policy requires the evidence)."""
    counted, findings = [], []
    for ae in attack_evidence(evidence, kind):
        if not ae.counted:
            plugin = _named_target(evidence, ae)
            if ae.kind is None and ae.note.startswith("not recognised"):
                findings.append(Finding(check, Status.SKIP, ae.item.rel, f"not counted: {ae.note}", {"origin": ae.origin}, plugin=plugin))
                continue
            status = Status.WARN if ae.suspicious else Status.SKIP
            findings.append(
                Finding(
                    check,
                    status,
                    ae.item.rel,
                    ae.note if ae.note.startswith("not counted") else f"not counted: {ae.note}",
                    {"origin": ae.origin, "counted": False},
                    plugin=plugin,
                    claim=claim,
                    basis="claimed",
                    remedy="the site's signals are inconsistent: ask the site why, and run the attack yourself" if ae.suspicious else "",
                )
            )
            continue
        if ae.error is not None:
            findings.append(
                bad_evidence(check, type(ae.item)(ae.item.rel, ae.item.path, error=ae.error), remedy=getattr(ae.error, "fix", "") or remedy)
            )
            continue
        counted.append(ae)
    if not counted:
        not_counted = sum(1 for f in findings if f.status in (Status.SKIP, Status.WARN))
        extra = f" ({not_counted} site-supplied file(s) not counted)" if not_counted else ""
        findings += missing_evidence(check, settings, what + extra, remedy)
    return counted, findings


_MIA_WHAT = "membership attack results the audit can count (auditor-run, or re-derivable from per-record signals)"
_MIA_REMEDY = (
    "run forge attack mia on each plugin yourself and pass its results with forge audit --attack-results FILE "
    "(kept outside the evidence directory)"
)


@register_check("membership")
class MembershipLeakage(Check):
    title = "Membership-inference leakage"
    description = (
        "Recomputes ROC AUC and TPR at 0.1 % and 1 % FPR of each counted membership attack (auditor-run, or re-derived "
        "from per-record signals) from its per-record scores, with bootstrap intervals and the FPR actually reached, and "
        "compares them with the policy's maxima. Site-supplied results without signals are listed, not counted."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        max_auc: float = 0.6
        max_tpr_at_0_1pct_fpr: float = 0.01
        max_tpr_at_1pct_fpr: float = 0.05
        n_boot: int = 500
        confidence: float = 0.95
        seed: int = 0
        fail_on: str = "lower-bound"

        def validate(self) -> None:
            if self.fail_on not in ("lower-bound", "estimate"):
                raise self.bad("fail_on", self.fail_on, "'lower-bound' or 'estimate'")
            if not (0.5 <= self.max_auc <= 1):
                raise self.bad("max_auc", self.max_auc, "in [0.5, 1]")
            for name in ("max_tpr_at_0_1pct_fpr", "max_tpr_at_1pct_fpr"):
                if not (0 <= getattr(self, name) <= 1):
                    raise self.bad(name, getattr(self, name), "in [0, 1]")
            if self.n_boot < 50:
                raise self.bad("n_boot", self.n_boot, "at least 50")
            if not (0.5 < self.confidence < 1):
                raise self.bad("confidence", self.confidence, "in (0.5, 1)")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        counted, findings = _select(self.name, evidence, settings, MEMBERSHIP, _MIA_WHAT, _MIA_REMEDY, "membership-leakage")
        for ae in counted:
            if progress:
                progress(f"membership metrics: {ae.item.rel}", 0, 1)
            findings.append(self._judge(evidence, ae, settings))
        return findings

    def _judge(self, evidence, ae, settings) -> Finding:
        from attacks.metrics import clopper_pearson_epsilon_ceiling, roc

        item, res = ae.item, ae.result
        target = _target(evidence, res)
        fields = {"plugin": target.rel if target else "", "claim": "membership-leakage", "basis": ae.basis}
        try:
            m = membership_metrics(res.scores, res.labels, n_boot=settings.n_boot, confidence=settings.confidence, seed=settings.seed)
        except ForgeError as e:  # e.g. one class only: this file fails, the others are still judged
            return _unusable(self.name, item, e, **fields)
        limits = {0.001: settings.max_tpr_at_0_1pct_fpr, 0.01: settings.max_tpr_at_1pct_fpr}
        g = _plugin_guarantee(target)
        ev = {
            "attack": res.attack,
            "target": target.rel if target else ", ".join(res.refs) or "(not named)",
            "origin": ae.origin,
            "members": m["members"],
            "non_members": m["non_members"],
            "auc": m["auc"]["value"],
            "auc_ci": m["auc"]["ci"],
            "max_auc": settings.max_auc,
            "confidence": settings.confidence,
            "bootstrap_seed": settings.seed,
            # the largest epsilon any attack on this sample could demonstrate (a perfect one)
            "epsilon_ceiling": clopper_pearson_epsilon_ceiling(m["members"], m["non_members"], alpha=1 - settings.confidence),
            "claimed_epsilon": g["claimed_epsilon"] if g else "(unknown)",
        }
        problems, above, unresolved = [], [], []
        by_bound = settings.fail_on == "lower-bound"

        def judge(value: float, ci, limit: float, text: str, established: bool = True) -> None:
            if value > limit and (not by_bound or (ci[0] > limit and established)):
                problems.append(text)
            elif value > limit:
                above.append(text)

        judge(
            m["auc"]["value"],
            m["auc"]["ci"],
            settings.max_auc,
            f"AUC {m['auc']['value']:.3f} {_fmt_ci(m['auc']['ci'])} > {settings.max_auc:g}",
        )
        for row in m["tpr_at_fpr"]:
            tag = "0_1pct" if row["target_fpr"] == 0.001 else "1pct"
            limit = limits[row["target_fpr"]]
            ev[f"tpr_at_{tag}_fpr"] = row["tpr"]
            ev[f"tpr_at_{tag}_fpr_ci"] = row["ci"]
            ev[f"fpr_reached_for_{tag}"] = row["fpr_reached"]
            ev[f"max_tpr_at_{tag}_fpr"] = limit
            ev[f"fpr_hi_for_{tag}"] = row["fpr_hi"]
            judge(
                row["tpr"],
                row["ci"],
                limit,
                f"TPR {row['tpr']:.3f} {_fmt_ci(row['ci'])} at FPR {row['fpr_reached']:.4f} "
                f"(upper {row['fpr_hi']:.4f}; target {row['target_fpr']:g}) > {limit:g}",
                established=row["fpr_hi"] <= row["target_fpr"],
            )
            if row["min_resolvable_fpr"] > row["target_fpr"]:
                unresolved.append(f"{row['target_fpr']:g}")
        fpr, tpr, _ = roc(res.scores, res.labels)
        step = max(1, len(fpr) // 400)
        plot = Plot(
            "roc",
            f"ROC (log-log): {res.attack} on {ev['target']}",
            (
                {
                    "label": f"{res.attack} (AUC {m['auc']['value']:.3f})",
                    "fpr": fpr[::step].tolist() + [1.0],
                    "tpr": tpr[::step].tolist() + [1.0],
                },
            ),
            limit=0.01,
            limit_label="FPR 1 %",
        )
        if problems:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                "membership leakage above the policy: " + "; ".join(problems),
                ev,
                remedy="re-train the target with more noise (smaller epsilon) or fewer epochs, then re-run the attack",
                plots=(plot,),
                **fields,
            )
        if above:
            return Finding(
                self.name,
                Status.WARN,
                item.rel,
                "above the policy, but not significantly at this sample size: " + "; ".join(above),
                ev,
                remedy="attack with more records (or reference models) to settle it; if it holds, re-train with more noise",
                plots=(plot,),
                **fields,
            )
        if unresolved:
            return Finding(
                self.name,
                Status.WARN,
                item.rel,
                f"within the policy where measurable; TPR at FPR {', '.join(unresolved)} "
                f"cannot be resolved with {m['non_members']} non-members",
                ev,
                remedy=f"attack with more records (at least {int(1 / min(float(u) for u in unresolved))} "
                "non-members) to measure the low-FPR tail",
                plots=(plot,),
                **fields,
            )
        return Finding(
            self.name,
            Status.PASS,
            item.rel,
            f"AUC {m['auc']['value']:.3f} {_fmt_ci(m['auc']['ci'])} and low-FPR TPRs within the policy "
            f"(this sample cannot show an epsilon above {ev['epsilon_ceiling']:.2f})",
            ev,
            plots=(plot,),
            **fields,
        )


def membership_metrics(scores, labels, *, n_boot: int, confidence: float, seed: int) -> dict:
    """AUC and TPR at 0.1 % / 1 % FPR with the toolkit's one interval method each
    (:func:`attacks.metrics.auc_interval`, :func:`attacks.metrics.tpr_at_fpr_interval`: the same
    as in attack results files). TPR at the target FPR is *established* above a limit only when
    TPR_lo > limit and fpr_hi <= target (TPR is monotone in FPR)."""
    import numpy as np

    from attacks.metrics import auc_interval, roc_auc, tpr_at_fpr_interval

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos < 2 or n_neg < 2:  # any interval needs two of each
        from forge_secure.errors import ForgeDataError

        raise ForgeDataError(
            f"{n_pos} members and {n_neg} non-members are too few to measure leakage",
            fix="attack at least 2 members and 2 non-members (in practice hundreds)",
            code="evidence.too_few_records",
        )
    auc = {"value": roc_auc(s, y), "ci": list(auc_interval(s, y, n_boot=n_boot, confidence=confidence, seed=seed))}
    rows = [tpr_at_fpr_interval(s, y, target, confidence) for target in (0.001, 0.01)]
    return {"members": n_pos, "non_members": n_neg, "auc": auc, "tpr_at_fpr": rows}


def _plugin_guarantee(target) -> dict | None:
    """Re-derived (epsilon, delta) and DP-SGD parameters of a target plugin, or None without DP."""
    if target is None or target.data is None:
        return None
    if target.data.get("kind") == "merged":  # post-processing: its claim is the largest of its parents'
        dp = target.data.get("dp") if isinstance(target.data.get("dp"), dict) else {}
        try:
            claimed = decode(dp.get("epsilon", "inf"))  # the one codec
        except ValueError:
            return None
        return {"claimed_epsilon": claimed, "enabled": False, "merged": True}
    try:
        rec = dp_record(target.data, target.rel)
    except ForgeError:
        return None
    out = {"claimed_epsilon": rec["claimed_epsilon"], "enabled": rec["enabled"]}
    if rec["enabled"]:
        out.update(rec)
        acc = rec["accountant"] if rec["accountant"] in ("prv", "rdp", "gdp") else "prv"
        try:
            out["rederived_epsilon"] = rederive_epsilon([(rec["noise_multiplier"], rec["sample_rate"], rec["steps"])], rec["delta"], acc)
        except ForgeError:
            return None
    return out


@register_check("reconstruction")
class ReconstructionLeakage(Check):
    title = "Reconstruction leakage"
    description = (
        "Compares each counted reconstruction attack's success rate (Clopper-Pearson interval) with the ReRo bound "
        "implied by the target's re-derived DP guarantee, and with the policy's maximum success rate. Only the auditor's "
        "own results count: a site's per-trial outcomes cannot be re-derived."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        max_success_rate: float = 0.5
        confidence: float = 0.95
        mc_samples: int = 100_000
        seed: int = 0

        def validate(self) -> None:
            if not (0 < self.max_success_rate <= 1):
                raise self.bad("max_success_rate", self.max_success_rate, "in (0, 1]")
            if not (0.5 < self.confidence < 1):
                raise self.bad("confidence", self.confidence, "in (0.5, 1)")
            if self.mc_samples < 1000:
                raise self.bad("mc_samples", self.mc_samples, "at least 1000")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from attacks.metrics import clopper_pearson
        from attacks.reconstruction.bounds import rero_bound_dp, rero_bound_dpsgd

        counted, findings = _select(
            self.name,
            evidence,
            settings,
            RECONSTRUCTION,
            "reconstruction attack results the audit ran itself (forge audit --attack-results)",
            "run forge attack recon on the plugins yourself and pass its results with forge audit --attack-results FILE",
            "",
        )
        bars: list = []
        for ae in counted:
            item, res = ae.item, ae.result
            target = _target(evidence, res)
            fields = {"plugin": target.rel if target else "", "basis": ae.basis}
            g = _plugin_guarantee(target)
            rate = res.successes / res.trials
            lo, hi = clopper_pearson(res.successes, res.trials, settings.confidence)
            bound, how = 1.0, "no DP guarantee: no bound"
            if g and g["enabled"]:
                generic = rero_bound_dp(g["rederived_epsilon"], g["delta"], res.kappa) if math.isfinite(g["rederived_epsilon"]) else 1.0
                mc = rero_bound_dpsgd(
                    g["noise_multiplier"], g["sample_rate"], g["steps"], res.kappa, samples=settings.mc_samples, seed=settings.seed
                ).bound
                bound, how = min(generic, mc), "min(e^eps kappa + delta, DP-SGD Monte Carlo bound)"
            ev = {
                "attack": res.attack,
                "target": target.rel if target else ", ".join(res.refs) or "(not named)",
                "origin": ae.origin,
                "successes": res.successes,
                "trials": res.trials,
                "success_rate": rate,
                "success_ci": [lo, hi],
                "confidence": settings.confidence,
                "kappa": res.kappa,
                "rero_bound": bound,
                "bound_method": how,
                "max_success_rate": settings.max_success_rate,
                "stated": res.stated,
                # the highest lower confidence bound any attack could reach with this many trials (all succeed)
                "success_lo_ceiling": clopper_pearson(res.trials, res.trials, settings.confidence)[0],
            }
            bars.append({"label": item.path.stem, "value": rate, "bound": bound})
            if lo > bound:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"success rate {rate:.3f} (CI low {lo:.3f}) exceeds the ReRo "
                        f"bound {bound:.3f} of the DP claim: the claim does not hold",
                        ev,
                        remedy="treat the target as not differentially private; check its training for a DP bug and re-train",
                        **fields,
                    )
                )
            elif rate > settings.max_success_rate:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"success rate {rate:.3f} exceeds the policy maximum {settings.max_success_rate:g}",
                        ev,
                        remedy="re-train with more noise or a smaller epsilon, then re-run the attack",
                        **fields,
                    )
                )
            else:
                findings.append(
                    Finding(
                        self.name,
                        Status.PASS,
                        item.rel,
                        f"success rate {rate:.3f} [{lo:.3f}, {hi:.3f}] within the bound {bound:.3f} and the policy",
                        ev,
                        **fields,
                    )
                )
        if bars:
            plot = Plot(
                "bars",
                "Reconstruction success rate (bar) and ReRo bound (marker)",
                tuple(bars),
                y_label="success rate",
                limit=settings.max_success_rate,
                limit_label="policy maximum",
            )
            findings[-1] = findings[-1].replace(plots=findings[-1].plots + (plot,))
        return findings


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
