"""``auditor-canaries``: the one-run audit (Steinke, Nasr, Jagielski 2023) on canaries that the
auditor drew and half of which it held back (``forge audit canaries issue``).

The auditor's record (given on the command line, never taken from the evidence directory)
regenerates all ``M`` canaries and their coins. Each of the site's plugins is scored on every
canary: the log-odds of the canary's (random) label under the plugin (see :func:`canary_scores`).
Guesses are fixed in advance by the
policy (IN for the top ``k_plus_fraction``, OUT for the bottom ``k_minus_fraction``; by default
OUT only, for the lowest quarter: a held-back canary whose random label the plugin does not
predict scores lowest, while a memorised included one scores high, and a canary whose label the
plugin predicts is as likely held back as included, so IN guesses add errors; measured in
``benchmarks/bench_audit_power.py``); the lower bound on epsilon at the policy's confidence is
compared with the claim:

- above the claim: FAIL (the claim is false);
- the claim is above the largest epsilon even a perfect attack could show on this sample
  (every guess right): INCONCLUSIVE, never PASS;
- otherwise PASS: this sample could have contradicted the claim and did not.

A plugin of the site that does not carry the grant fails: the canaries were dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from forge_secure.errors import ForgeError

from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check
from .dp import trained_plugins


def canary_scores(plugin, canaries) -> np.ndarray:
    """The log-odds of each canary's (random) label under ``plugin``.

    Not relative to the base model: with two classes an included canary that the base already
    labels right would then score low, and ``benchmarks/bench_audit_power.py`` measured the
    relative score contradicting a false epsilon-1 claim of a no-noise plugin at M = 256 in 0 of
    3 runs, the plugin's own log-odds in 3 of 3 (docs/benchmarks.md, "Audit power")."""
    logits = plugin.logits(canaries.X)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    own = logp[np.arange(len(canaries)), canaries.y]
    return own - np.log(np.clip(-np.expm1(own), 1e-300, None))


@register_check("auditor-canaries")
class AuditorCanaries(Check):
    title = "One-run audit on the auditor's canaries"
    description = (
        "Scores each plugin on the canaries the auditor issued (half held back, unknown to the site) and bounds its "
        "epsilon from below; a bound above the claim falsifies it, and a claim above what the sample can show is "
        "inconclusive."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        k_plus_fraction: float = 0.0  # guess IN for this fraction of the highest-scoring canaries
        k_minus_fraction: float = 0.25  # guess OUT for this fraction of the lowest
        p_target: float = 0.05  # 1 - confidence of the lower bound

        def validate(self) -> None:
            if not (
                0 <= self.k_plus_fraction <= 1 and 0 <= self.k_minus_fraction <= 1 and 0 < self.k_plus_fraction + self.k_minus_fraction <= 1
            ):
                raise self.bad("k_plus_fraction", self.k_plus_fraction, "fractions in [0, 1] whose sum is in (0, 1]")
            if not (0 < self.p_target < 0.5):
                raise self.bad("p_target", self.p_target, "in (0, 0.5)")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from forge_secure.privacy.canaries import all_canaries, read_record

        paths = evidence.options.canary_records
        if not paths:
            status = Status.FAIL if settings.required else Status.SKIP
            return [
                Finding(
                    self.name,
                    status,
                    "(auditor)",
                    "no canary record given: no empirical test of the DP claims",
                    evidence={"basis": "claimed"},
                    remedy="issue canaries before training (forge audit canaries issue) and pass --canary-record",
                )
            ]
        out = []
        for path in paths:
            try:
                record = read_record(path)
            except ForgeError as e:
                out.append(Finding(self.name, Status.FAIL, str(path), f"unreadable canary record: {e}", evidence={"reason_code": e.code}))
                continue
            plugins = [it for it in trained_plugins(evidence) if it.data is not None and it.data.get("site") == record["site"]]
            if not plugins:
                out.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        record["site"],
                        f"the auditor issued canaries to {record['site']}, but the evidence holds no plugin of that site",
                        evidence={"grant_id": record["grant_id"]},
                        remedy="add the site's plugin to the evidence",
                    )
                )
                continue
            cset, mask = all_canaries(record)
            for item in plugins:
                if progress is not None:
                    progress(f"scoring canaries on {item.rel}")
                out.append(self._judge(item, record, cset, mask, settings))
        return out

    def _judge(self, item, record, cset, mask, settings) -> Finding:
        from attacks.metrics import one_run_audit, one_run_epsilon_ceiling
        from forge_secure.plugins.plugin import load_plugin
        from forge_secure.plugins.record import meta_epsilon

        carried = ((item.data.get("data") or {}).get("canaries") or {}).get("grant_id")
        if carried != record["grant_id"]:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"the plugin does not carry the auditor's canaries (grant {record['grant_id'][:12]}...; forge.json names "
                f"{carried!r}): they were dropped",
                evidence={"grant_id": record["grant_id"], "carried": carried, "basis": "verified"},
                remedy="reject the plugin; the site must train with forge train --canary-grant",
                plugin=item.rel,
                claim="data-commitment",
                basis="verified",
            )
        try:
            plugin = load_plugin(item.extra.get("record") or item.path)  # the record the evidence's gateway read
        except ForgeError as e:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"cannot load the plugin: {e}",
                evidence={"reason_code": e.code},
                remedy="restore the plugin directory from the verified bundle",
                plugin=item.rel,
                claim="epsilon",
            )
        scores = canary_scores(plugin, cset)
        labels = mask.astype(int)
        m = len(labels)
        k_plus, k_minus = int(round(settings.k_plus_fraction * m)), int(round(settings.k_minus_fraction * m))
        dp = item.data.get("dp") or {}
        delta = float(dp.get("delta") or 0.0) if dp.get("enabled") else 0.0
        audit = one_run_audit(scores, labels, k_plus=k_plus, k_minus=k_minus, delta=delta, p_target=settings.p_target)
        ceiling = one_run_epsilon_ceiling(audit["guesses"], m=m, delta=delta, p_target=settings.p_target)
        claimed = meta_epsilon(item.data) if dp.get("enabled") else math.inf
        ev = {
            **audit,
            "ceiling": ceiling,
            "claimed_epsilon": claimed,
            "included": int(mask.sum()),
            "held_back": int((~mask).sum()),
            "grant_id": record["grant_id"],
            "basis": "verified",
            "mean_score_included": float(scores[mask].mean()),
            "mean_score_held_back": float(scores[~mask].mean()),
        }
        plot = Plot(
            "bars",
            f"One-run audit of {item.path.name}",
            (
                {"label": "epsilon lower bound", "value": audit["epsilon_lb"], "claimed": claimed if math.isfinite(claimed) else None},
                {"label": "largest showable (perfect attack)", "value": ceiling},
            ),
            y_label="epsilon",
        )
        lb = audit["epsilon_lb"]
        text = (
            f"{audit['correct']}/{audit['guesses']} guesses right on {m} canaries; epsilon >= {lb:.3g} at "
            f"{1 - settings.p_target:.0%} confidence (largest this sample can show: {ceiling:.3g})"
        )
        if lb > claimed:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"the claim epsilon {claimed:.3g} is false: {text}",
                evidence=ev,
                remedy="reject the plugin: it leaks more than it claims",
                plots=(plot,),
                plugin=item.rel,
                claim="epsilon",
                basis="verified",
            )
        if claimed > ceiling:
            return Finding(
                self.name,
                Status.INCONCLUSIVE,
                item.rel,
                f"cannot tell: the claim {claimed:.3g} is above what {m} canaries can show; {text}",
                evidence=ev,
                remedy="issue more canaries (forge audit canaries issue --count) to test a claim this large",
                plots=(plot,),
                plugin=item.rel,
                claim="epsilon",
                basis="verified",
            )
        return Finding(
            self.name,
            Status.PASS,
            item.rel,
            f"consistent with the claim epsilon {claimed:.3g}: {text}",
            evidence=ev,
            plots=(plot,),
            plugin=item.rel,
            claim="epsilon",
            basis="verified",
        )
