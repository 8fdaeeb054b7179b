"""Reading attack results files (``attacks/*.json`` in the evidence) into one shape.

The audit recomputes every figure it judges from the per-record data in the file (scores
and membership labels for membership inference; per-trial outcomes for reconstruction) with
the metrics of :mod:`attacks.metrics`; headline numbers stated in the file are shown next to
the recomputed ones but never used for the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forge_secure.errors import ForgeDataError

MEMBERSHIP, RECONSTRUCTION = "membership", "reconstruction"


def _bad(rel: str, why: str) -> ForgeDataError:
    return ForgeDataError(
        f"attack results {rel} {why}",
        fix="re-run the attack with forge attack mia / forge attack recon and copy its results file into attacks/",
        code="evidence.attack_results",
    )


def result_kind(data: dict) -> str | None:
    fmt = str(data.get("format", "")).lower()
    kind = str(data.get("kind", data.get("suite", ""))).lower()
    if "mia" in fmt or "membership" in fmt or kind in ("mia", "membership"):
        return MEMBERSHIP
    if "recon" in fmt or kind in ("recon", "reconstruction"):
        return RECONSTRUCTION
    return None


def target_refs(data: dict) -> list[str]:
    """Every way the file names its target plugin (path, name, digest)."""
    t = data.get("target")
    refs: list[str] = []
    if isinstance(t, str):
        refs.append(t)
    elif isinstance(t, dict):
        for key in ("adapter_digest", "digest", "plugin", "path", "name"):
            v = t.get(key)
            if isinstance(v, str) and v:
                refs.append(v)
    for key in ("plugin", "target_plugin", "target_path"):
        v = data.get(key)
        if isinstance(v, str) and v:
            refs.append(v)
    return refs


@dataclass(frozen=True)
class MembershipResult:
    rel: str
    attack: str
    scores: np.ndarray
    labels: np.ndarray
    coin_flip: bool  # membership drawn by independent fair coin flips (one-run audit valid)
    stated: dict = field(default_factory=dict)
    refs: tuple[str, ...] = ()
    canary_scores: np.ndarray | None = None  # canaries inserted by coin flip, when the file has them
    canary_labels: np.ndarray | None = None
    membership_seed_sha256: str | None = None  # the membership draw the attack says it used, when stated


def _array(data: dict, keys: tuple[str, ...], rel: str) -> np.ndarray | None:
    records = data.get("records")
    for holder in (data, records if isinstance(records, dict) else {}):
        for k in keys:
            if k in holder:
                try:
                    arr = np.asarray(holder[k], dtype=np.float64).reshape(-1)
                except (TypeError, ValueError):
                    raise _bad(rel, f"has a non-numeric '{k}' list") from None
                return arr
    return None


def read_membership(rel: str, data: dict) -> MembershipResult:
    if data.get("format") == "forge-mia-results/1":  # the membership suite's own files: its schema first
        from attacks.membership.run import validate_results

        validate_results(data, rel)
    scores = _array(data, ("scores", "score"), rel)
    labels = _array(data, ("labels", "members", "is_member"), rel)
    if scores is None or labels is None:
        raise _bad(rel, "holds no per-record 'scores' and 'labels', so its figures cannot be re-derived")
    if scores.size != labels.size or scores.size == 0:
        raise _bad(rel, f"has {scores.size} scores but {labels.size} labels")
    if not np.all(np.isin(labels, (0.0, 1.0))):
        raise _bad(rel, "has labels other than 0 (non-member) and 1 (member)")
    if not np.all(np.isfinite(scores)):
        raise _bad(rel, f"has {int((~np.isfinite(scores)).sum())} NaN or infinite scores")
    membership = data.get("membership", {})
    include_prob = membership.get("include_prob") if isinstance(membership, dict) else None
    coin = bool(isinstance(include_prob, (int, float)) and abs(float(include_prob) - 0.5) < 1e-12)
    if isinstance(data.get("coin_flip"), bool):
        coin = data["coin_flip"]
    stated = {k: data[k] for k in ("metrics", "auc", "tpr_at_fpr", "epsilon_lb", "empirical_epsilon") if k in data}
    canary_scores = canary_labels = None
    canaries = data.get("canaries")
    if isinstance(canaries, dict) and canaries.get("scores") is not None:
        canary_scores = _array(canaries, ("scores",), rel)
        canary_labels = _array(canaries, ("labels",), rel)
        if (
            canary_scores is None
            or canary_labels is None
            or canary_scores.size != canary_labels.size
            or not np.all(np.isin(canary_labels, (0.0, 1.0)))
        ):
            raise _bad(rel, "has canary scores without matching 0/1 canary labels")
        if not np.all(np.isfinite(canary_scores)):
            raise _bad(rel, "has NaN or infinite canary scores")
        canary_labels = canary_labels.astype(np.int64)
    stated_seed = membership.get("seed_sha256") if isinstance(membership, dict) else None
    return MembershipResult(
        rel,
        str(data.get("attack", data.get("method", "?"))),
        scores,
        labels.astype(np.int64),
        coin,
        stated,
        tuple(target_refs(data)),
        canary_scores,
        canary_labels,
        stated_seed if isinstance(stated_seed, str) else None,
    )


@dataclass(frozen=True)
class ReconstructionResult:
    rel: str
    attack: str
    successes: int
    trials: int
    kappa: float  # baseline success probability of the prior
    stated: dict = field(default_factory=dict)
    refs: tuple[str, ...] = ()


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_reconstruction(rel: str, data: dict) -> ReconstructionResult:
    outcomes = data.get("outcomes", data.get("successes_per_trial"))
    successes, trials = _int(data.get("successes")), _int(data.get("trials"))
    if isinstance(outcomes, list) and outcomes:
        if not all(isinstance(o, (bool, int)) and int(o) in (0, 1) for o in outcomes):
            raise _bad(rel, "has per-trial outcomes other than 0/1")
        successes, trials = int(sum(int(o) for o in outcomes)), len(outcomes)
    if successes is None or trials is None or trials <= 0 or not 0 <= successes <= trials:
        raise _bad(rel, "holds no usable per-trial outcomes (or successes and trials)")
    kappa = data.get("kappa", data.get("baseline"))
    if isinstance(kappa, dict):
        kappa = kappa.get("kappa", kappa.get("value"))
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 < float(kappa) <= 1:
        raise _bad(rel, f"has no valid baseline success probability kappa (got {kappa!r})")
    stated = {k: data[k] for k in ("success_rate", "bound", "rero_bound") if k in data}
    return ReconstructionResult(
        rel, str(data.get("attack", data.get("method", "?"))), successes, trials, float(kappa), stated, tuple(target_refs(data))
    )


# --------------------------------------------------------------------------- which results count

AUDITOR, SITE = "auditor", "site"


@dataclass(frozen=True)
class AttackEvidence:
    """One attack results file and whether the audit may count it.

    ``origin``: ``"auditor"`` (given on the auditor's own command line: the audit ran the
    attack) or ``"site"`` (under the evidence's ``attacks/``: written by the audited site,
    unsigned). ``basis`` is ``"verified"`` for the auditor's files, ``"re-derived"`` for a
    site file whose every score was recomputed from its per-record signals, ``"claimed"`` for
    a site file that is not counted (``note`` says why). ``error`` is set when a counted file
    cannot be evaluated (that is a FAIL); ``suspicious`` when a site file's signals do not
    re-derive (a WARN, still not counted)."""

    item: Any
    origin: str
    kind: str | None
    result: Any = None
    error: Exception | None = None
    basis: str = "claimed"
    note: str = ""
    suspicious: bool = False

    @property
    def counted(self) -> bool:
        return self.basis != "claimed"


def _rescore_function():
    """``attacks.membership.rescore`` when this toolkit has it (imported lazily), else None."""
    try:
        from attacks.membership import rescore
    except ImportError:
        return None
    return rescore if callable(rescore) else None


def has_signals(data: dict) -> bool:
    """Whether a membership results file carries per-record signals (target and reference
    logits) from which the scores can be re-derived."""
    signals = data.get("signals")
    return isinstance(signals, (dict, list)) and bool(signals)


def _rederived_membership(rel: str, data: dict, rescore) -> MembershipResult:
    """Re-derive every score of a site's membership file from its signals with ``rescore``."""
    from forge_secure.errors import ForgeError

    try:
        out = rescore(data)
    except ForgeError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as e:  # malformed signals the rescorer did not anticipate
        raise _bad(rel, f"has signals that cannot be re-scored ({type(e).__name__}: {e})") from None
    if not isinstance(out, dict) or out.get("scores") is None:
        raise _bad(rel, "has signals from which no scores were re-derived")
    doc = {k: v for k, v in data.items() if k not in ("scores", "labels", "canaries")}
    doc["scores"] = out["scores"]
    doc["labels"] = out.get("labels", data.get("labels"))
    doc.pop("format", None)  # the re-derived document is no longer the file as written
    doc["kind"] = "membership"
    return read_membership(rel, doc)


def attack_evidence(evidence, kind: str) -> list[AttackEvidence]:
    """Every attack results file of ``kind`` (membership or reconstruction), the auditor's
    first, each with whether and on what basis the audit counts it.

    The rule: results count only when the audit ran the attack itself (the auditor's files)
    or when they carry per-record signals from which the audit re-derives every score
    (:func:`attacks.membership.rescore`, when available). A site's file without them is the
    site's word, and whatever its scores say, it does not change the verdict."""
    from forge_secure.errors import ForgeDataError, ForgeError

    out: list[AttackEvidence] = []
    for item in getattr(evidence, "auditor_attacks", []):
        k = result_kind(item.data)
        if k is None:
            out.append(
                AttackEvidence(
                    item,
                    AUDITOR,
                    kind,
                    basis="verified",
                    error=ForgeDataError(
                        f"{item.rel} is not membership or reconstruction results",
                        fix="give a results file of forge attack mia / recon",
                        code="evidence.attack_results",
                    ),
                )
            )
            continue
        if k != kind:
            continue
        try:
            parsed = read_membership(item.rel, item.data) if kind == MEMBERSHIP else read_reconstruction(item.rel, item.data)
            out.append(AttackEvidence(item, AUDITOR, kind, parsed, basis="verified"))
        except ForgeError as e:
            out.append(AttackEvidence(item, AUDITOR, kind, basis="verified", error=e))
    rescore = _rescore_function() if kind == MEMBERSHIP else None
    for item in evidence.attacks:
        if not item.ok:
            out.append(AttackEvidence(item, SITE, None, note=f"unreadable ({getattr(item.error, 'code', 'evidence.bad')})"))
            continue
        k = result_kind(item.data)
        if k is None:
            out.append(AttackEvidence(item, SITE, None, note="not recognised as membership or reconstruction results"))
            continue
        if k != kind:
            continue
        if kind == MEMBERSHIP and has_signals(item.data):
            if rescore is None:
                out.append(
                    AttackEvidence(
                        item,
                        SITE,
                        kind,
                        note="claimed by the site, not re-derivable: it has per-record signals, "
                        "but this toolkit cannot re-score them (no attacks.membership.rescore)",
                    )
                )
                continue
            try:
                out.append(
                    AttackEvidence(
                        item,
                        SITE,
                        kind,
                        _rederived_membership(item.rel, item.data, rescore),
                        basis="re-derived",
                        note="every score re-derived from the file's per-record signals",
                    )
                )
            except ForgeError as e:
                out.append(
                    AttackEvidence(
                        item, SITE, kind, note=f"claimed by the site, not re-derivable: its signals do not re-score ({e})", suspicious=True
                    )
                )
            continue
        why = "no per-record signals to re-derive its scores from" if kind == MEMBERSHIP else "per-trial outcomes cannot be re-derived"
        out.append(AttackEvidence(item, SITE, kind, note=f"not counted: claimed by the site, not re-derivable ({why})"))
    return out
