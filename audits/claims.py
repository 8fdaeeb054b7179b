"""The per-plugin claims table: for each plugin, which of its claims the audit verified, which
it re-derived from the site's own records, and which it took on the site's word.

Rows come from the findings' ``plugin`` / ``claim`` / ``basis`` fields (:mod:`audits.findings`).
A plugin with a PASS finding of the ``replay`` check (subject or plugin = the plugin's evidence
path) is *verified by replay*: its DP parameters and data commitment were re-run and matched
(and an epsilon re-derived from them is then verified too). Without it, its DP parameters are
*claimed only*, however self-consistent they are: a site that trains with less noise than it
records writes a manifest that re-derives perfectly.
"""

from __future__ import annotations

from collections.abc import Iterable

from .findings import BASES, CLAIM_TITLES, CLAIMS, CheckResult, Finding, Status

PLUGIN_ROOTS = ("plugins/", "merged/")
REPLAY_CHECK = "replay"
_REPLAYED = ("dp-parameters", "data-commitment")
#: the claim a check judges when its findings do not name one
DEFAULT_CLAIMS = {"auditor-canaries": "epsilon", "dp-randomness": "dp-parameters"}


def claim_of(f: Finding) -> str:
    return f.claim or DEFAULT_CLAIMS.get(f.check, "")


def basis_of(f: Finding) -> str:
    """The finding's basis, or the one its evidence states (``evidence["basis"]``), or ""."""
    if f.basis:
        return f.basis
    b = f.evidence.get("basis") if isinstance(f.evidence, dict) else None
    return b if b in BASES else ""


def plugin_of(f: Finding) -> str:
    """The plugin a finding is about: its ``plugin`` field, else its subject when that is a
    plugin directory of the evidence (``plugins/<name>`` or ``merged/<name>``)."""
    if f.plugin:
        return f.plugin
    return f.subject if f.subject.startswith(PLUGIN_ROOTS) and f.subject.count("/") == 1 else ""


def _strongest(bases: Iterable[str]) -> str:
    found = [b for b in bases if b]
    return min(found, key=BASES.index) if found else "claimed"


def claims_table(checks: Iterable[CheckResult]) -> list[dict]:
    """One row per (plugin, claim): ``{"plugin", "claim", "title", "status", "basis", "checks",
    "note"}``. ``status`` is the worst status of the findings on that claim ("" when no check
    judged it: the site's word), ``basis`` the strongest basis among the findings that have
    that status, ``checks`` the checks of those findings (the ones that established it)."""
    findings = [f for c in checks for f in c.findings]
    plugins: list[str] = []
    for f in findings:
        p = plugin_of(f)
        if p and p not in plugins:
            plugins.append(p)
    rows: list[dict] = []
    for p in sorted(plugins):
        mine = [f for f in findings if plugin_of(f) == p]
        replay = [f for f in mine if f.check == REPLAY_CHECK]
        replayed = bool(replay) and Status.worst(f.status for f in replay) is Status.PASS
        by_claim: dict[str, dict] = {}
        for claim in CLAIMS:
            on = [f for f in mine if claim_of(f) == claim]
            if claim in _REPLAYED:
                on += [f for f in replay if not f.claim]  # the replay check judges these as a whole
            if not on:
                note = "claimed only (no replay)" if claim in _REPLAYED else "not judged by any check: the site's word"
                if p.startswith("merged/") and claim in ("dp-parameters", "data-commitment", "epsilon", "delta"):
                    note = "a merged version: its guarantee is its parents' (post-processing)"
                by_claim[claim] = {"status": "", "basis": "claimed", "checks": [], "note": note}
                continue
            status = Status.worst(f.status for f in on)
            deciding = [f for f in on if f.status is status]  # the findings that established the row's status
            basis = _strongest(basis_of(f) for f in deciding)
            note = ""
            if claim == "dp-parameters":
                if replayed:
                    basis, note = "verified", "verified by replay"
                else:  # self-consistent or not, without replay the parameters are the site's word
                    basis = "claimed"
                    failed = any(f.status is Status.FAIL for f in replay)  # not replayed, or replayed and different
                    note = "not verified by replay (see the replay check): claimed only" if failed else "claimed only (no replay)"
            if claim == "data-commitment" and replayed:
                basis, note = "verified", "verified by replay"
            checks_ = {f.check for f in deciding} | ({REPLAY_CHECK} if replay and claim in _REPLAYED else set())
            by_claim[claim] = {"status": status.value, "basis": basis, "checks": sorted(checks_), "note": note}
        eps = by_claim["epsilon"]
        if replayed and eps["status"] == "pass" and eps["basis"] == "re-derived":
            eps.update(basis="verified", note="re-derived from parameters verified by replay")
        for claim in CLAIMS:
            rows.append({"plugin": p, "claim": claim, "title": CLAIM_TITLES[claim], **by_claim[claim]})
    return rows


__all__ = ["DEFAULT_CLAIMS", "PLUGIN_ROOTS", "REPLAY_CHECK", "basis_of", "claim_of", "claims_table", "plugin_of"]
