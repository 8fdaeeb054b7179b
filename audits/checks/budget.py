"""Per-site budget check: each site's ledger total, re-derived, within the policy's budget.

The ledger (:mod:`forge_secure.privacy.ledger`, one hash-chained JSON-lines file per site and
data set, copied into ``ledgers/<site>/``) records every DP release's mechanism history. The
site's total epsilon is the composition of all of them (sequential composition, Dwork and
Roth 2014, Thm 3.16, computed tightly by the accountant), re-derived here rather than read
from anywhere. Every trained plugin's own history must appear in its site's ledger, or the
site spent budget it did not record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from forge_secure.errors import ForgeError

from ..accounting import ACCOUNTANTS, rederive
from ..findings import Finding, Plot, Status
from .base import Check, CheckSettings, register_check
from .dp import dp_record, missing_evidence, trained_plugins


def _same(h1, h2) -> bool:
    return len(h1) == len(h2) and all(
        math.isclose(float(a[0]), float(b[0]), rel_tol=1e-9)
        and math.isclose(float(a[1]), float(b[1]), rel_tol=1e-9)
        and int(a[2]) == int(b[2])
        for a, b in zip(h1, h2, strict=True)
    )


@register_check("site-budget")
class SiteBudget(Check):
    title = "Per-site privacy budget"
    description = (
        "Re-derives each site's total epsilon from every release in its budget ledger and compares it with the "
        "policy's per-site maximum (and the ledger's own budget); every plugin's training must be in the ledger."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        max_site_epsilon: float = 10.0
        accountant: str = "prv"
        require_ledger_entries: bool = True

        def validate(self) -> None:
            if not (self.max_site_epsilon > 0):
                raise self.bad("max_site_epsilon", self.max_site_epsilon, "a number > 0")
            if self.accountant not in ACCOUNTANTS:
                raise self.bad("accountant", self.accountant, f"one of {', '.join(ACCOUNTANTS)}")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from forge_secure.privacy.ledger import Ledger

        if evidence.ledger_root is None:
            return missing_evidence(
                self.name,
                settings,
                "budget ledgers (ledgers/<site>/*.jsonl)",
                "copy each site's ledger files (forge_home()/ledgers/<site>/) into ledgers/",
            )
        findings, bars = [], []
        releases: dict[str, list[list]] = {}
        try:
            ledgers = Ledger.list_all(root=evidence.ledger_root)
        except ForgeError as e:
            return [
                Finding(
                    self.name,
                    Status.FAIL,
                    "ledgers/",
                    f"ledgers unreadable: {e}",
                    {"reason_code": e.code},
                    remedy=e.fix or "restore the ledgers from the sites' copies",
                )
            ]
        for led in ledgers:
            rel = led.path.relative_to(evidence.root).as_posix()
            try:
                records = led.records()
                budget = led.budget
            except ForgeError as e:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        rel,
                        f"ledger rejected: {e}",
                        {"reason_code": e.code},
                        remedy=e.fix or "restore the ledger from the site's copy",
                    )
                )
                continue
            history = [tuple(h) for r in records for h in r["history"]]
            releases.setdefault(led.site, []).extend(r["history"] for r in records)
            if not records:
                findings.append(Finding(self.name, Status.PASS, rel, f"{led.site}: no releases recorded on {led.dataset}", {"releases": 0}))
                continue
            delta = max(float(r["delta"]) for r in records)
            try:
                eps, used = rederive(history, delta, settings.accountant)
            except ForgeError as e:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        rel,
                        f"the recorded releases cannot be composed: {e}",
                        {"reason_code": e.code},
                        remedy="check the ledger; use accountant rdp in the policy if prv refuses the range",
                    )
                )
                continue
            limit = settings.max_site_epsilon if budget is None else min(settings.max_site_epsilon, budget)
            ev = {
                "site": led.site,
                "dataset": led.dataset,
                "releases": len(records),
                "steps": sum(int(h[2]) for h in history),
                "delta": delta,
                "total_epsilon": eps,
                "accountant": used,
                "ledger_budget": budget,
                "max_site_epsilon": settings.max_site_epsilon,
            }
            bars.append({"label": f"{led.site}", "value": eps})
            if eps > limit:
                which = "the policy's per-site maximum" if limit == settings.max_site_epsilon else "the ledger's own budget"
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        rel,
                        f"{led.site} has spent epsilon {eps:.3g} on {led.dataset}, over {which} {limit:g}",
                        ev,
                        remedy="stop releasing from this data set; the site's budget is exhausted",
                    )
                )
            else:
                findings.append(
                    Finding(
                        self.name, Status.PASS, rel, f"{led.site} has spent epsilon {eps:.3g} of {limit:g} ({len(records)} releases)", ev
                    )
                )
        for item in trained_plugins(evidence):
            if item.data is None:
                continue
            try:
                rec = dp_record(item.data, item.rel)
            except ForgeError:
                continue  # dp-claims reports it
            if not rec["enabled"]:
                continue
            site = str(item.data.get("site"))
            mine = [rec["noise_multiplier"], rec["sample_rate"], rec["steps"]]
            recorded = any(_same([mine], [h]) for hist in releases.get(site, []) for h in hist)
            if not recorded:
                status = Status.FAIL if settings.require_ledger_entries else Status.WARN
                findings.append(
                    Finding(
                        self.name,
                        status,
                        item.rel,
                        f"its training (sigma {mine[0]:g}, q {mine[1]:g}, {mine[2]} steps) is not in {site}'s ledger",
                        {"site": site, "history": [mine]},
                        remedy="the site must record every DP release in its ledger (forge "
                        "train does); include the site's ledger in the evidence",
                        plugin=item.rel,
                    )
                )
        if bars:
            plot = Plot(
                "bars",
                "Total epsilon per site (re-derived from the ledgers)",
                tuple(bars),
                y_label="epsilon",
                limit=settings.max_site_epsilon,
                limit_label="policy per-site maximum",
            )
            idx = next(i for i, f in enumerate(findings) if f.subject.startswith("ledgers/"))
            f = findings[idx]
            findings[idx] = f.replace(plots=f.plots + (plot,))
        return findings
