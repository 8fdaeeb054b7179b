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
  claim false, whatever the manifest says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forge_secure.errors import ForgeError

from ..accounting import rederive_epsilon
from ..attack_results import MEMBERSHIP, RECONSTRUCTION, read_membership, read_reconstruction, result_kind
from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check
from .dp import bad_evidence, dp_record, missing_evidence


def _results(evidence, kind: str):
    """(item, parsed result or None, error finding or None) for every attack file of ``kind``."""
    out = []
    for item in evidence.attacks:
        if not item.ok:
            out.append((item, None, item.error))
            continue
        k = result_kind(item.data)
        if k is None:
            out.append((item, None, None))
            continue
        if k != kind:
            continue
        try:
            parsed = read_membership(item.rel, item.data) if kind == MEMBERSHIP else read_reconstruction(item.rel, item.data)
            out.append((item, parsed, None))
        except ForgeError as e:
            out.append((item, None, e))
    return out


def _unknown_kind(check: str, item) -> Finding:
    return Finding(check, Status.WARN, item.rel, "not recognised as membership or reconstruction results; ignored",
                   evidence={"format": str(item.data.get("format"))}, remedy="keep only results files of forge attack mia / recon in attacks/")


def _target(evidence, result):
    for ref in result.refs:
        found = evidence.find_plugin(ref)
        if found is not None:
            return found
    return None


def _unusable(check: str, item, err: ForgeError) -> Finding:
    return Finding(check, Status.FAIL, item.rel, f"attack results cannot be evaluated: {err}", {"reason_code": err.code},
                   remedy=err.fix or "re-run the attack with more records and copy its results file into attacks/")


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


@register_check("membership")
class MembershipLeakage(Check):
    title = "Membership-inference leakage"
    description = (
        "Recomputes ROC AUC and TPR at 0.1 % and 1 % FPR of each membership attack from its per-record "
        "scores (with bootstrap intervals and the FPR actually reached) and compares them with the policy's maxima."
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
        from attacks.metrics import roc

        results = _results(evidence, MEMBERSHIP)
        if not results:
            return missing_evidence(self.name, settings, "membership attack results (attacks/*.json from forge attack mia)",
                                    "run forge attack mia on the plugins and merged versions and copy the results into attacks/")
        findings = []
        for item, res, err in results:
            if err is not None:
                findings.append(bad_evidence(self.name, type(item)(item.rel, item.path, error=err)))
                continue
            if res is None:
                findings.append(_unknown_kind(self.name, item))
                continue
            if progress:
                progress(f"membership metrics: {item.rel}", 0, 1)
            try:
                m = membership_metrics(res.scores, res.labels, n_boot=settings.n_boot, confidence=settings.confidence, seed=settings.seed)
            except ForgeError as e:  # e.g. one class only: this file fails, the others are still judged
                findings.append(_unusable(self.name, item, e))
                continue
            target = _target(evidence, res)
            limits = {0.001: settings.max_tpr_at_0_1pct_fpr, 0.01: settings.max_tpr_at_1pct_fpr}
            ev = {
                "attack": res.attack, "target": target.rel if target else ", ".join(res.refs) or "(not named)",
                "members": m["members"], "non_members": m["non_members"],
                "auc": m["auc"]["value"], "auc_ci": m["auc"]["ci"], "max_auc": settings.max_auc,
                "confidence": settings.confidence, "bootstrap_seed": settings.seed,
            }
            problems, above, unresolved = [], [], []
            by_bound = settings.fail_on == "lower-bound"

            def judge(value: float, ci, limit: float, text: str, established: bool = True) -> None:
                if value > limit and (not by_bound or (ci[0] > limit and established)):
                    problems.append(text)
                elif value > limit:
                    above.append(text)

            judge(m["auc"]["value"], m["auc"]["ci"], settings.max_auc, f"AUC {m['auc']['value']:.3f} {_fmt_ci(m['auc']['ci'])} > {settings.max_auc:g}")
            for row in m["tpr_at_fpr"]:
                tag = "0_1pct" if row["target_fpr"] == 0.001 else "1pct"
                limit = limits[row["target_fpr"]]
                ev[f"tpr_at_{tag}_fpr"] = row["tpr"]
                ev[f"tpr_at_{tag}_fpr_ci"] = row["ci"]
                ev[f"fpr_reached_for_{tag}"] = row["fpr_reached"]
                ev[f"max_tpr_at_{tag}_fpr"] = limit
                ev[f"fpr_hi_for_{tag}"] = row["fpr_hi"]
                judge(row["tpr"], row["ci"], limit, f"TPR {row['tpr']:.3f} {_fmt_ci(row['ci'])} at FPR {row['fpr_reached']:.4f} (upper {row['fpr_hi']:.4f}; target {row['target_fpr']:g}) > {limit:g}",
                      established=row["fpr_hi"] <= row["target_fpr"])
                if row["min_resolvable_fpr"] > row["target_fpr"]:
                    unresolved.append(f"{row['target_fpr']:g}")
            fpr, tpr, _ = roc(res.scores, res.labels)
            step = max(1, len(fpr) // 400)
            plot = Plot("roc", f"ROC (log-log): {res.attack} on {ev['target']}",
                        ({"label": f"{res.attack} (AUC {m['auc']['value']:.3f})", "fpr": fpr[::step].tolist() + [1.0], "tpr": tpr[::step].tolist() + [1.0]},),
                        limit=0.01, limit_label="FPR 1 %")
            if problems:
                findings.append(Finding(self.name, Status.FAIL, item.rel, "membership leakage above the policy: " + "; ".join(problems), ev,
                                        remedy="re-train the target with more noise (smaller epsilon) or fewer epochs, then re-run the attack", plots=(plot,)))
            elif above:
                findings.append(Finding(self.name, Status.WARN, item.rel,
                                        "above the policy, but not significantly at this sample size: " + "; ".join(above), ev,
                                        remedy="attack with more records (or reference models) to settle it; if it holds, re-train with more noise", plots=(plot,)))
            elif unresolved:
                findings.append(Finding(self.name, Status.WARN, item.rel,
                                        f"within the policy where measurable; TPR at FPR {', '.join(unresolved)} cannot be resolved with {m['non_members']} non-members", ev,
                                        remedy=f"attack with more records (at least {int(1 / min(float(u) for u in unresolved))} non-members) to measure the low-FPR tail", plots=(plot,)))
            else:
                findings.append(Finding(self.name, Status.PASS, item.rel, f"AUC {m['auc']['value']:.3f} {_fmt_ci(m['auc']['ci'])} and low-FPR TPRs within the policy", ev, plots=(plot,)))
        return findings


def membership_metrics(scores, labels, *, n_boot: int, confidence: float, seed: int) -> dict:
    """AUC with a stratified percentile-bootstrap interval (scipy.stats.bootstrap over members
    and non-members separately, vectorised via AUC = U / (P N), the Mann-Whitney statistic),
    and TPR at 0.1 % / 1 % FPR (attacks.metrics.tpr_at_fpr: the FPR actually reached is kept)
    with Clopper-Pearson intervals at that threshold. The threshold depends on non-member
    scores only, so given it TP ~ Bin(P, TPR(t)) and the interval on TPR(t) is exact; the true
    FPR(t) of an order statistic of N non-members is Beta-distributed, and its upper quantile
    is the Clopper-Pearson upper bound ``fpr_hi``. TPR at the target FPR is *established* above
    a limit only when TPR_lo > limit and fpr_hi <= target (TPR is monotone in FPR)."""
    import numpy as np
    from scipy.stats import bootstrap, mannwhitneyu

    from attacks.metrics import clopper_pearson, roc_auc, tpr_at_fpr

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size < 2 or neg.size < 2:  # the bootstrap (and any interval) needs two of each
        from forge_secure.errors import ForgeDataError

        raise ForgeDataError(f"{pos.size} members and {neg.size} non-members are too few to measure leakage",
                             fix="attack at least 2 members and 2 non-members (in practice hundreds)", code="evidence.too_few_records")
    auc = roc_auc(s, y)

    def auc_stat(a, b, axis=-1):
        return mannwhitneyu(a, b, axis=axis).statistic / (a.shape[axis] * b.shape[axis])

    ci = bootstrap((pos, neg), auc_stat, vectorized=True, n_resamples=n_boot, confidence_level=confidence,
                   method="percentile", random_state=np.random.default_rng(seed), batch=max(1, n_boot // 4)).confidence_interval
    rows = []
    for target in (0.001, 0.01):
        point = tpr_at_fpr(s, y, target)
        tp, fp = int((pos >= point.threshold).sum()), int((neg >= point.threshold).sum())
        rows.append({**point.to_dict(), "ci": list(clopper_pearson(tp, int(pos.size), confidence)),
                     "false_positives": fp, "fpr_hi": clopper_pearson(fp, int(neg.size), confidence)[1]})
    return {"members": int(pos.size), "non_members": int(neg.size), "auc": {"value": auc, "ci": [float(ci.low), float(ci.high)]}, "tpr_at_fpr": rows}


def _plugin_guarantee(target) -> dict | None:
    """Re-derived (epsilon, delta) and DP-SGD parameters of a target plugin, or None without DP."""
    if target is None or target.data is None:
        return None
    if target.data.get("kind") == "merged":  # post-processing: its claim is the largest of its parents'
        dp = target.data.get("dp") if isinstance(target.data.get("dp"), dict) else {}
        claimed = dp.get("epsilon", "inf")
        try:
            claimed = float(claimed)
        except (TypeError, ValueError):
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
        "Compares each reconstruction attack's success rate (Clopper-Pearson interval) with the ReRo bound "
        "implied by the target's re-derived DP guarantee, and with the policy's maximum success rate."
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

        results = _results(evidence, RECONSTRUCTION)
        if not results:
            return missing_evidence(self.name, settings, "reconstruction attack results (attacks/*.json from forge attack recon)",
                                    "run forge attack recon on the plugins and copy the results into attacks/")
        findings, bars = [], []
        for item, res, err in results:
            if err is not None:
                findings.append(bad_evidence(self.name, type(item)(item.rel, item.path, error=err)))
                continue
            if res is None:
                findings.append(_unknown_kind(self.name, item))
                continue
            target = _target(evidence, res)
            g = _plugin_guarantee(target)
            rate = res.successes / res.trials
            lo, hi = clopper_pearson(res.successes, res.trials, settings.confidence)
            bound, how = 1.0, "no DP guarantee: no bound"
            if g and g["enabled"]:
                generic = rero_bound_dp(g["rederived_epsilon"], g["delta"], res.kappa) if math.isfinite(g["rederived_epsilon"]) else 1.0
                mc = rero_bound_dpsgd(g["noise_multiplier"], g["sample_rate"], g["steps"], res.kappa, samples=settings.mc_samples, seed=settings.seed).bound
                bound, how = min(generic, mc), "min(e^eps kappa + delta, DP-SGD Monte Carlo bound)"
            ev = {
                "attack": res.attack, "target": target.rel if target else ", ".join(res.refs) or "(not named)",
                "successes": res.successes, "trials": res.trials, "success_rate": rate, "success_ci": [lo, hi],
                "confidence": settings.confidence, "kappa": res.kappa, "rero_bound": bound, "bound_method": how,
                "max_success_rate": settings.max_success_rate, "stated": res.stated,
            }
            bars.append({"label": item.path.stem, "value": rate, "bound": bound})
            if lo > bound:
                findings.append(Finding(self.name, Status.FAIL, item.rel,
                                        f"success rate {rate:.3f} (CI low {lo:.3f}) exceeds the ReRo bound {bound:.3f} of the DP claim: the claim does not hold", ev,
                                        remedy="treat the target as not differentially private; check its training for a DP bug and re-train"))
            elif rate > settings.max_success_rate:
                findings.append(Finding(self.name, Status.FAIL, item.rel, f"success rate {rate:.3f} exceeds the policy maximum {settings.max_success_rate:g}", ev,
                                        remedy="re-train with more noise or a smaller epsilon, then re-run the attack"))
            else:
                findings.append(Finding(self.name, Status.PASS, item.rel, f"success rate {rate:.3f} [{lo:.3f}, {hi:.3f}] within the bound {bound:.3f} and the policy", ev))
        if bars:
            last = findings[-1]
            plot = Plot("bars", "Reconstruction success rate (bar) and ReRo bound (marker)", tuple(bars), y_label="success rate",
                        limit=settings.max_success_rate, limit_label="policy maximum")
            findings[-1] = Finding(last.check, last.status, last.subject, last.summary, last.evidence, last.remedy, last.plots + (plot,))
        return findings


@register_check("consistency")
class Consistency(Check):
    title = "Empirical privacy vs the claim"
    description = (
        "Derives an empirical epsilon lower bound from each membership attack (Clopper-Pearson with a held-out "
        "threshold; the one-run audit when membership was drawn by fair coin flips) and, given a site's canary seed, "
        "from its own one-run audit of the plugin's canaries. A lower bound above the claimed epsilon proves the claim false."
    )

    METHODS = ("clopper-pearson", "one-run", "both")

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        method: str = "both"
        confidence: float = 0.95
        seed: int = 0
        canary_audit: bool = True
        canary_k_plus_fraction: float = 0.0
        canary_k_minus_fraction: float = 0.25

        def validate(self) -> None:
            for name in ("canary_k_plus_fraction", "canary_k_minus_fraction"):
                if not (0 <= getattr(self, name) <= 0.5):
                    raise self.bad(name, getattr(self, name), "in [0, 0.5]")
            if self.canary_k_plus_fraction + self.canary_k_minus_fraction <= 0:
                raise self.bad("canary_k_minus_fraction", self.canary_k_minus_fraction, "positive when canary_k_plus_fraction is 0")
            if self.method not in Consistency.METHODS:
                raise self.bad("method", self.method, f"one of {', '.join(Consistency.METHODS)}")
            if not (0.5 < self.confidence < 1):
                raise self.bad("confidence", self.confidence, "in (0.5, 1)")

    def _canary_audit(self, evidence, item, settings, bars: list) -> Finding:
        try:
            return _canary_audit_impl(self, evidence, item, settings, bars)
        except ForgeError as e:  # e.g. the plugin cannot be loaded against its base
            return Finding(self.name, Status.FAIL, item.rel, f"the canary audit could not run: {e}", {"reason_code": e.code},
                           remedy=e.fix or "check the plugin directory and its base model")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from attacks.metrics import one_run_audit, split_clopper_pearson_epsilon

        results = _results(evidence, MEMBERSHIP)
        canary_files = evidence.canaries if settings.canary_audit else []
        if not results and not canary_files:
            return missing_evidence(self.name, settings, "membership attack results or canary seeds to audit the claims with",
                                    "run forge attack mia on each plugin and copy the results into attacks/, or give canaries/<plugin>.json")
        findings, bars = [], []
        for i, item in enumerate(canary_files):
            if progress:
                progress(f"canary audit: {item.rel}", i, len(canary_files))
            findings.append(self._canary_audit(evidence, item, settings, bars))
        for item, res, err in results:
            if err is not None:
                findings.append(bad_evidence(self.name, type(item)(item.rel, item.path, error=err)))
                continue
            if res is None:
                continue
            target = _target(evidence, res)
            g = _plugin_guarantee(target)
            if g is None:
                findings.append(Finding(self.name, Status.FAIL if settings.required else Status.SKIP, item.rel,
                                        "the attacked plugin is not in the evidence (or has no DP record), so its claim cannot be audited",
                                        {"target_refs": list(res.refs)}, remedy="put the attacked plugin directory under plugins/ or merged/"))
                continue
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
            bounds = {}
            canaries = res.canary_scores is not None and settings.method != "clopper-pearson"
            if canaries:  # canaries are inserted by fair coin flips: the one-run audit applies to them
                per = alpha / (len(methods) + 1)
            try:
                if "one-run" in methods:
                    orun = one_run_audit(res.scores, res.labels, delta=delta, p_target=per)
                    bounds["one-run"] = orun["epsilon_lb"]
                if canaries and len(set(res.canary_labels.tolist())) == 2:
                    bounds["one-run-canaries"] = one_run_audit(res.canary_scores, res.canary_labels, delta=delta, p_target=per)["epsilon_lb"]
                if "clopper-pearson" in methods:
                    cp = split_clopper_pearson_epsilon(res.scores, res.labels, delta=delta, alpha=per, seed=settings.seed)
                    bounds["clopper-pearson"] = cp["epsilon_lb"]
            except ForgeError as e:  # e.g. too few records to split: this file fails, the others are still judged
                findings.append(_unusable(self.name, item, e))
                continue
            eps_lb = max(bounds.values())
            ev = {
                "target": target.rel, "attack": res.attack, "claimed_epsilon": claimed, "delta": delta,
                "empirical_epsilon_lb": eps_lb, "lower_bounds": bounds, "confidence": settings.confidence,
                "bonferroni_alpha_per_method": per, "coin_flip_membership": coin_flip,
            }
            if coin_note:
                ev["one_run_not_applied"] = coin_note
            if g["enabled"]:
                ev["rederived_epsilon"] = g["rederived_epsilon"]
            bars.append({"label": target.path.name, "value": eps_lb, "claimed": claimed})
            if math.isinf(claimed):
                findings.append(Finding(self.name, Status.SKIP, item.rel, f"{target.rel} claims no finite epsilon; nothing to contradict (see dp-claims)", ev))
            elif eps_lb > claimed:
                findings.append(Finding(self.name, Status.FAIL, item.rel,
                                        f"empirical epsilon lower bound {eps_lb:.3f} ({settings.confidence:.0%}) exceeds the claimed epsilon {claimed:g} of {target.rel}: the DP claim is false",
                                        ev, remedy="reject the plugin; the site's training did not give the privacy it claims (check for missing noise or an edited manifest)"))
            elif g["enabled"] and eps_lb > g["rederived_epsilon"]:
                findings.append(Finding(self.name, Status.FAIL, item.rel,
                                        f"empirical epsilon lower bound {eps_lb:.3f} exceeds the epsilon {g['rederived_epsilon']:.3f} re-derived from the recorded noise",
                                        ev, remedy="the DP training or its record is broken; reject the plugin and investigate the training run"))
            else:
                findings.append(Finding(self.name, Status.PASS, item.rel, f"empirical lower bound {eps_lb:.3f} is consistent with the claimed epsilon {claimed:g}", ev))
        if bars and findings:
            last = findings[-1]
            plot = Plot("bars", "Empirical epsilon lower bound (bar) vs claimed epsilon (marker)", tuple(bars), y_label="epsilon")
            findings[-1] = Finding(last.check, last.status, last.subject, last.summary, last.evidence, last.remedy, last.plots + (plot,))
        return findings


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
    p = record.get("include_prob") if isinstance(record, dict) else None
    if isinstance(p, bool) or not isinstance(p, (int, float)) or abs(float(p) - 0.5) > 1e-12:
        return False, f"{target.rel}/forge.json records no fair coin-flip draw of its training set"
    if res.membership_seed_sha256 is not None and res.membership_seed_sha256 != record.get("seed_sha256"):
        return False, f"the attack's membership seed is not the one {target.rel}/forge.json commits to"
    return True, None


def _canary_audit_impl(check: Consistency, evidence, item, settings, bars: list) -> Finding:
    """Regenerate a plugin's canaries from the seed its site gave the auditor, score them with
    the plugin (log-probability of the canary's label, a LOSS attack), and run the one-run audit
    (Steinke, Nasr, Jagielski 2023) with guess counts fixed by the policy, not by the data."""
    import numpy as np

    from attacks.metrics import one_run_audit
    from forge_secure.plugins.data import Dataset, seed_sha256
    from forge_secure.plugins.plugin import load_plugin
    from forge_secure.plugins.sources import canary_set

    name = check.name
    if not item.ok:
        return bad_evidence(name, item)
    doc = item.data
    seed, ref = doc.get("seed"), doc.get("plugin")
    if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(ref, str):
        return Finding(name, Status.FAIL, item.rel, 'canary seed file must be {"plugin": "plugins/<name>", "seed": <integer>}',
                       {"reason_code": "evidence.canaries"}, remedy="ask the site for the canary seed of that plugin and write the file as shown")
    target = evidence.find_plugin(ref)
    if target is None or target.data is None:
        return Finding(name, Status.FAIL, item.rel, f"the plugin {ref!r} is not in the evidence", {"plugin": ref},
                       remedy="put the plugin directory under plugins/")
    record = (target.data.get("data") or {}).get("canaries") or {}
    if not record.get("count") or record.get("seed_sha256") != seed_sha256(seed):
        return Finding(name, Status.FAIL, item.rel, f"the seed does not match the canary commitment in {target.rel}/forge.json",
                       {"plugin": target.rel, "committed": record.get("seed_sha256"), "count": record.get("count")},
                       remedy="the site must give the seed it trained with; a plugin without canaries cannot be audited this way")
    g = _plugin_guarantee(target) or {"claimed_epsilon": math.inf, "enabled": False}
    claimed = g["claimed_epsilon"]
    delta = g.get("delta", 0.0) if g.get("enabled") else 0.0
    plugin = load_plugin(target.path)
    shape = tuple(getattr(plugin.base, "input_shape", ()) or ())
    like = Dataset(np.zeros((1,) + shape, np.float32), np.zeros(1, np.int64), int(plugin.base.n_classes), "canary-shape", plugin.base.kind)
    canaries, included = canary_set(int(record["count"]), like, seed)
    proba = plugin.predict_proba(canaries.X)
    scores = np.log(np.clip(proba[np.arange(len(canaries.y)), canaries.y], 1e-300, 1.0))
    m = int(len(scores))
    k_plus, k_minus = int(round(settings.canary_k_plus_fraction * m)), int(round(settings.canary_k_minus_fraction * m))
    audit = one_run_audit(scores, included.astype(np.int64), k_plus=k_plus, k_minus=k_minus, delta=delta, p_target=1 - settings.confidence)
    eps_lb = audit["epsilon_lb"]
    ev = {"plugin": target.rel, "canaries": m, "included": int(included.sum()), "guesses": audit["guesses"], "correct": audit["correct"],
          "k_plus": k_plus, "k_minus": k_minus, "delta": delta, "claimed_epsilon": claimed, "empirical_epsilon_lb": eps_lb,
          "confidence": settings.confidence, "method": audit["method"]}
    bars.append({"label": f"{target.path.name} (canaries)", "value": eps_lb, "claimed": claimed})
    if math.isinf(claimed):
        return Finding(name, Status.SKIP, item.rel, f"{target.rel} claims no finite epsilon; canary bound {eps_lb:.3f} (see dp-claims)", ev)
    if eps_lb > claimed:
        return Finding(name, Status.FAIL, item.rel,
                       f"canary audit: empirical epsilon lower bound {eps_lb:.3f} ({settings.confidence:.0%}) exceeds the claimed epsilon {claimed:g} of {target.rel}: the DP claim is false",
                       ev, remedy="reject the plugin; its training did not give the privacy it claims (check for missing noise or an edited manifest)")
    return Finding(name, Status.PASS, item.rel, f"canary audit: lower bound {eps_lb:.3f} is consistent with the claimed epsilon {claimed:g}", ev)

