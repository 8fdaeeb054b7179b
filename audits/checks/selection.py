"""Which attack results the leakage checks count, and the findings for those they cannot use
(:func:`_select`, shared by :mod:`.leakage` and :mod:`.consistency`), with the target plugin of
a result and its re-derived DP guarantee."""

from __future__ import annotations

from forge_secure.errors import ForgeError
from forge_secure.numbers import decode

from ..accounting import rederive_epsilon
from ..attack_results import attack_evidence, target_refs
from ..findings import Finding, Status
from .dp import bad_evidence, dp_record, missing_evidence


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
