"""Checks on merged versions: minimum contributions of a homomorphic merge.

A homomorphic (CKKS) Fusion releases one decrypted aggregate sum_i w_i B_i. With too few
contributors, the aggregate (and what each contributor knows of its own share) reveals the
others' plugins; with one, it *is* that plugin. The policy therefore sets a minimum number of
distinct contributing sites (secure aggregation practice, Bonawitz et al. 2017, "Practical
Secure Aggregation for Privacy-Preserving Machine Learning", sets such a threshold t).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..findings import Finding, Status
from .base import Check, CheckSettings, register_check
from .dp import bad_evidence, missing_evidence


def merge_record(meta: dict) -> dict:
    m = meta.get("merge")
    return m if isinstance(m, dict) else {}


@register_check("he-contributions")
class HomomorphicContributions(Check):
    title = "Contributions to homomorphic merges"
    description = "Each homomorphic (CKKS) merge must combine at least the policy's number of plugins from distinct sites."

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        min_contributions: int = 3
        he_methods: tuple[str, ...] = ("ffa-ckks", "he-fusion", "ckks")

        def validate(self) -> None:
            if self.min_contributions < 2:
                raise self.bad("min_contributions", self.min_contributions, "at least 2")
            if not self.he_methods:
                raise self.bad("he_methods", list(self.he_methods), "a non-empty list of merge method names")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        findings = []
        for item in evidence.merged:
            if item.data is None:
                findings.append(bad_evidence(self.name, item))
                continue
            merge = merge_record(item.data)
            method = str(merge.get("method", ""))
            homomorphic = merge.get("homomorphic") is True or method in settings.he_methods
            if not homomorphic:
                continue
            parents = item.data.get("parents") if isinstance(item.data.get("parents"), list) else []
            sites = sorted({str(p.get("site")) for p in parents if isinstance(p, dict) and p.get("site")})
            ev = {
                "method": method,
                "contributions": len(parents),
                "distinct_sites": len(sites),
                "sites": sites,
                "min_contributions": settings.min_contributions,
            }
            if len(sites) < settings.min_contributions:
                findings.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"homomorphic merge of {len(parents)} plugin(s) from {len(sites)} "
                        f"distinct site(s); the policy needs {settings.min_contributions}",
                        ev,
                        remedy="do not release this aggregate; wait until at least "
                        f"{settings.min_contributions} sites have contributed and merge again",
                        plugin=item.rel,
                    )
                )
            else:
                findings.append(
                    Finding(
                        self.name,
                        Status.PASS,
                        item.rel,
                        f"{len(sites)} distinct sites contributed (minimum {settings.min_contributions})",
                        ev,
                        plugin=item.rel,
                    )
                )
        if not findings:
            return missing_evidence(
                self.name,
                settings,
                "homomorphic merges (merged/<name>/ with a CKKS merge record)",
                "add the homomorphic merge's output directory under merged/, or set required = false",
            )
        return findings
