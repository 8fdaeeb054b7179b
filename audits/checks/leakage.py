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

from ..attack_results import MEMBERSHIP, RECONSTRUCTION
from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check
from .consistency import ONE_RUN_GUESS_FRACTION as ONE_RUN_GUESS_FRACTION  # re-exported: the check lives in .consistency
from .consistency import Consistency as Consistency
from .selection import _MIA_REMEDY, _MIA_WHAT, _fmt_ci, _plugin_guarantee, _select, _target, _unusable


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
