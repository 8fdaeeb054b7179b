"""The consortium ledger: each accepted submission's DP record, re-derived with the
project's accountant, and each site's spend against its consortium budget.

A submission's record is the ``dp`` object of its signed manifest (copied from the plugin's
``forge.json``): the accountant history ``[(noise_multiplier, sample_rate, steps), ...]``
(or the single ``(noise_multiplier, sample_rate, steps)`` of older records), its ``delta``
and ``accountant``. The hub re-derives epsilon with
:func:`forge_secure.privacy.accountants.compute_epsilon`; a claim below the re-derived
figure is refused. A site's consortium spend is the epsilon of the concatenation of the
histories of all its accepted submissions (sequential composition) at the hub's ledger
delta, with the hub's ledger accountant (``prv``; ``rdp``, an upper bound, where PRV is out
of its reliable range). A submission without DP, or without a usable record, spends an
unbounded epsilon.

One training run is one release, whatever is derived from it: a site that pushes its plugin
and then its CKKS contribution to homomorphic Fusion (``weight x B`` of the same plugin,
encrypted; post-processing) sends the same DP record twice. Records are identified by the
run's randomness commitment (``dp.randomness.secret_commitment``, which ``forge train``
writes and HE contributions copy); a site's spend composes each of its runs once. A record
naming a run already in the site's ledger with another accountant history is refused
(``hub.dp_conflict``). Records without a commitment (older plugins) each count as a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ForgeBudgetError, ForgeError, ForgeIntegrityError
from ..numbers import encode


def compute_epsilon(history, delta, accountant):
    """The project's accountant (imported on first use: it brings in torch and Opacus)."""
    from ..privacy.accountants import compute_epsilon as compute

    return compute(history, delta, accountant)


def validate_history(history):
    from ..privacy.accountants import validate_history as validate

    return validate(history)


DEFAULT_DELTA = 1e-5
TOLERANCE = 1e-6


@dataclass(frozen=True)
class DpRecord:
    history: list  # [(sigma, q, steps)], empty when there is no DP
    delta: float | None
    accountant: str | None
    claimed: float  # inf without DP
    epsilon: float  # re-derived at the record's own delta (inf without DP)
    run: str | None = None  # the training run's randomness commitment (None: unknown, a run of its own)

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.epsilon)

    def to_dict(self) -> dict:
        out = {
            "history": [[repr(s), repr(q), t] for s, q, t in self.history],
            "delta": None if self.delta is None else repr(self.delta),
            "accountant": self.accountant,
            "claimed_epsilon": _num(self.claimed),
            "epsilon": _num(self.epsilon),
        }
        if self.run is not None:
            out["run"] = self.run
        return out


def _num(x: float) -> str:
    return encode(x, text=True)  # the one codec: repr, or "inf"


def _refuse(why: str) -> ForgeIntegrityError:
    return ForgeIntegrityError(
        f"the bundle's DP record cannot be re-derived ({why})",
        fix="seal the plugin written by 'forge train' unchanged; its forge.json carries the full DP record",
        code="hub.dp_record",
    )


def rederive(dp: dict | None) -> DpRecord:
    """The submission's DP record, re-derived; raises ``hub.dp_record`` / ``hub.dp_claim``."""
    if not isinstance(dp, dict) or str(dp.get("enabled")).lower() in ("false", "0", "none") or dp.get("epsilon") in ("inf", None):
        return DpRecord([], None, None, math.inf, math.inf)
    try:
        if isinstance(dp.get("history"), list) and dp["history"]:
            raw = [(h[0], h[1], int(h[2])) for h in dp["history"]]
        else:
            raw = [(dp["noise_multiplier"], dp["sample_rate"], int(dp["steps"]))]
        history = validate_history(raw)
        delta, accountant = float(dp["delta"]), str(dp.get("accountant") or "prv")
        claimed = float(dp["epsilon"])
    except ForgeError as e:
        raise _refuse(e.message) from None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise _refuse(f"missing or malformed field {e}") from None
    try:
        epsilon = compute_epsilon(history, delta, accountant)
    except ForgeError as e:
        raise _refuse(e.message) from None
    if not math.isfinite(claimed) or claimed < epsilon * (1 - TOLERANCE) - 1e-9:
        raise ForgeIntegrityError(
            f"the bundle claims epsilon {claimed:.6g}, but its DP record gives {epsilon:.6g} with the {accountant} accountant",
            fix="do not accept this plugin's privacy claim; the site must report the epsilon its training record supports",
            code="hub.dp_claim",
        )
    return DpRecord(history, delta, accountant, claimed, epsilon, run_of(dp))


def run_of(dp: dict) -> str | None:
    """The training run a DP record belongs to: its randomness commitment, when well formed."""
    randomness = dp.get("randomness")
    run = randomness.get("secret_commitment") if isinstance(randomness, dict) else None
    if isinstance(run, str) and len(run) == 64 and all(c in "0123456789abcdef" for c in run):
        return run
    return None


def distinct_runs(stored: list[dict]) -> list[dict]:
    """The stored ledger records of one site (in sequence order), each training run once (its
    first record); records without a run each count."""
    seen: set[str] = set()
    out = []
    for rec in stored:
        run = rec.get("run")
        if run is not None:
            if run in seen:
                continue
            seen.add(run)
        out.append(rec)
    return out


def _same_release(rec: dict, record: DpRecord) -> bool:
    mine = record.to_dict()
    return all(rec.get(k) == mine[k] for k in ("history", "delta", "accountant", "epsilon"))


def already_counted(stored: list[dict], record: DpRecord) -> bool:
    """Whether ``record``'s training run is already in the site's ledger (then it spends
    nothing new); raises ``hub.dp_conflict`` when that run was recorded with another history."""
    if record.run is None:
        return False
    for rec in stored:
        if rec.get("run") == record.run:
            if not _same_release(rec, record):
                raise ForgeIntegrityError(
                    f"the bundle's DP record names training run {record.run[:16]}..., already in this site's ledger with "
                    "another accountant history",
                    code="hub.dp_conflict",
                    fix="one training run has one DP record: seal the plugin (or its contribution) with the forge.json that "
                    "'forge train' wrote for it",
                )
            return True
    return False


def spent(histories: list[list | None], delta: float = DEFAULT_DELTA) -> tuple[float, str]:
    """(epsilon, accountant) of the composition of ``histories`` (inf when one is unbounded)."""
    bounded = [h for h in histories if h is not None]
    if len(bounded) < len(histories):
        return math.inf, "none"
    flat = [tuple(e) for h in bounded for e in h]
    if not flat:
        return 0.0, "prv"
    try:
        return compute_epsilon(flat, delta, "prv"), "prv"
    except ForgeError as e:
        if e.code != "dp.prv_range":
            raise
        return compute_epsilon(flat, delta, "rdp"), "rdp"


def history_of(stored: dict) -> list | None:
    """The accountant history of a stored ledger record (None when unbounded)."""
    if stored.get("epsilon") == "inf":
        return None
    return [(float(s), float(q), int(t)) for s, q, t in stored["history"]]


def check_budget(site: str, budget: float | None, before: float, after: float, accountant: str) -> None:
    if budget is not None and after > budget * (1 + TOLERANCE):
        raise ForgeBudgetError(
            f"{site} has spent epsilon {_fmt(before)} of its consortium budget {budget:g}; this submission would bring it to "
            f"{_fmt(after)} ({accountant} accountant)",
            fix="the consortium refuses further releases on this budget; ask the admins to review it, or contribute without new data use",
            code="budget.exceeded",
        )


def _fmt(x: float) -> str:
    return "unbounded (no DP)" if math.isinf(x) else f"{x:.4g}"
