"""The per-record signals a membership result is computed from, with their digests.

A results file keeps, besides the scores, everything an attack needs to recompute them
without training anything (:func:`attacks.membership.rescore`):

    format                       "forge-mia-signals/1"
    target_logits                (n, C)    the target's logits on the n candidates
    class_labels                 (n,)      the candidates' class labels (losses follow from these)
    membership                   (n,)      1 = member (the positive class of the metrics)
    is_canary                    (n,)      true for the target's canaries
    reference_logits             (R, n, C) the reference models' logits on the candidates
    reference_in_mask            (R, n)    which references were trained on which candidate
    population_target_logits     (m, C)    the target's logits on the population records, or null
    population_labels            (m,)      their class labels, or null
    population_reference_logits  (R, m, C) or null
    population_in_mask           (R, m)    or null
    references                   {"mode": "online"|"offline", "seed"}: how the references were split
    digests                      {name: sha256 of the array}; "digest": sha256 over all of them

Arrays are JSON lists; floats are written with Python's shortest round-trip repr, so the
values read back are bit-for-bit the float64 values the scores were computed from, and a
rescore reproduces the figures exactly. The digest of an array is the sha256 of its name,
dtype, shape and little-endian bytes. Digests detect accidental damage and edits by anyone
but the file's author; they prove nothing against the author (who can recompute them): the
point of keeping the signals is that anyone can re-derive the scores and metrics from them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from forge_secure.errors import ForgeDataError
from forge_secure.fileio import canonical_json, sha256_bytes

SIGNALS_FORMAT = "forge-mia-signals/1"

# name: (dtype, number of dimensions, optional)
_ARRAYS: dict[str, tuple[str, int, bool]] = {
    "target_logits": ("f8", 2, False),
    "class_labels": ("i8", 1, False),
    "membership": ("i8", 1, False),
    "is_canary": ("bool", 1, False),
    "reference_logits": ("f8", 3, False),
    "reference_in_mask": ("bool", 2, False),
    "population_target_logits": ("f8", 2, True),
    "population_labels": ("i8", 1, True),
    "population_reference_logits": ("f8", 3, True),
    "population_in_mask": ("bool", 2, True),
}

# the arrays whose shape cannot be read back from an empty list, and what gives it
_EMPTY_SHAPES = {
    "reference_logits": "target_logits",
    "reference_in_mask": "target_logits",
    "population_reference_logits": "population_target_logits",
    "population_in_mask": "population_target_logits",
}


def array_digest(name: str, a: np.ndarray) -> str:
    """sha256 of ``name``, dtype, shape and the little-endian bytes of ``a``."""
    kind = _ARRAYS[name][0]
    arr = np.ascontiguousarray(a, dtype="<" + kind if kind != "bool" else np.uint8)
    head = f"{SIGNALS_FORMAT}\x00{name}\x00{kind}\x00{list(arr.shape)}\x00".encode()
    return sha256_bytes(head + arr.tobytes())


def _bad(msg: str, code: str = "attack.signals_invalid") -> ForgeDataError:
    return ForgeDataError(msg, fix="rerun forge attack mia to get a complete results file", code=code)


@dataclass(frozen=True)
class Signals:
    target_logits: np.ndarray
    class_labels: np.ndarray
    membership: np.ndarray
    is_canary: np.ndarray
    reference_logits: np.ndarray
    reference_in_mask: np.ndarray
    population_target_logits: np.ndarray | None = None
    population_labels: np.ndarray | None = None
    population_reference_logits: np.ndarray | None = None
    population_in_mask: np.ndarray | None = None
    online: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (kind, ndim, optional) in _ARRAYS.items():
            v = getattr(self, name)
            if v is None:
                if not optional:
                    raise _bad(f"the signals lack {name}")
                continue
            arr = np.asarray(v, dtype=bool if kind == "bool" else kind)
            if arr.ndim != ndim:
                raise _bad(f"signal {name} has {arr.ndim} dimensions, expected {ndim}")
            if kind == "f8" and not np.all(np.isfinite(arr)):
                raise _bad(f"signal {name} holds non-finite values")
            object.__setattr__(self, name, arr)
        n = self.target_logits.shape[0]
        R = self.reference_logits.shape[0]
        want = {"class_labels": (n,), "membership": (n,), "is_canary": (n,), "reference_in_mask": (R, n)}
        if R:
            want["reference_logits"] = (R, n, self.target_logits.shape[1])
        for name, shape in want.items():
            if getattr(self, name).shape != shape:
                raise _bad(f"signal {name} has shape {getattr(self, name).shape}, expected {shape}")
        pop = [self.population_target_logits, self.population_labels, self.population_reference_logits, self.population_in_mask]
        if any(p is not None for p in pop[:2]) and any(p is None for p in pop[:2]):
            raise _bad("the population signals are incomplete")
        if self.population_target_logits is not None:
            m = self.population_target_logits.shape[0]
            if self.population_labels is None or self.population_labels.shape != (m,):
                raise _bad("population_labels does not match population_target_logits")
            if R and (
                self.population_reference_logits is None
                or self.population_reference_logits.shape[:2] != (R, m)
                or self.population_in_mask is None
                or self.population_in_mask.shape != (R, m)
            ):
                raise _bad("the references' population signals do not match the population")
        if not set(np.unique(self.membership)) <= {0, 1}:
            raise _bad("membership labels must be 0 or 1")

    @property
    def references(self) -> int:
        return int(self.reference_logits.shape[0])

    def first(self, k: int) -> Signals:
        """The signals of the first ``k`` references (what a run with ``k`` references gets:
        reference i's split and seed depend only on the run's seed and i)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("reference_logits", "reference_in_mask", "population_reference_logits", "population_in_mask"):
            if kw[name] is not None:
                kw[name] = kw[name][:k]
        return Signals(**kw)

    def reference_set(self):
        from attacks.references import ReferenceSet

        return ReferenceSet(
            candidate_logits=self.reference_logits,
            in_mask=self.reference_in_mask,
            population_logits=self.population_reference_logits,
            population_in_mask=self.population_in_mask,
            online=self.online,
            seed=self.seed,
        )

    def digests(self) -> dict[str, str]:
        return {name: array_digest(name, getattr(self, name)) for name in _ARRAYS if getattr(self, name) is not None}

    def to_json(self) -> dict[str, Any]:
        digests = self.digests()
        doc: dict[str, Any] = {
            "format": SIGNALS_FORMAT,
            "references": {"mode": "online" if self.online else "offline", "seed": int(self.seed)},
        }
        for name in _ARRAYS:
            v = getattr(self, name)
            doc[name] = None if v is None else v.astype(int if v.dtype == bool else v.dtype).tolist()
        doc["digests"] = digests
        doc["digest"] = _overall(digests, doc["references"])
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "results") -> Signals:
        """Read the signals block of a results file and check every digest."""
        if doc is None:
            raise ForgeDataError(
                f"{where} keeps no per-record signals (written by an older forge attack mia)",
                fix="rerun forge attack mia on the target to get a file that can be rescored",
                code="attack.no_signals",
            )
        if not isinstance(doc, dict) or doc.get("format") != SIGNALS_FORMAT:
            raise _bad(f"{where}: the signals block is not in format {SIGNALS_FORMAT!r}")
        refs = doc.get("references")
        digests = doc.get("digests")
        if (
            not isinstance(refs, dict)
            or refs.get("mode") not in ("online", "offline")
            or not isinstance(refs.get("seed"), int)
            or not isinstance(digests, dict)
        ):
            raise _bad(f"{where}: the signals block lacks its reference settings or digests")
        kw: dict[str, Any] = {}
        for name, (kind, ndim, _optional) in _ARRAYS.items():
            v = doc.get(name)
            if v is None:
                kw[name] = None
                continue
            try:
                arr = np.array(v, dtype=np.float64 if kind == "f8" else np.int64)
            except (TypeError, ValueError, OverflowError):
                raise _bad(f"{where}: signal {name} is not a numeric array") from None
            if kind == "bool":
                if not np.isin(arr, (0, 1)).all():
                    raise _bad(f"{where}: signal {name} must hold 0/1 values")
                arr = arr.astype(bool)
            if arr.size == 0 and name in _EMPTY_SHAPES:  # no references: (0, n[, C]) as written
                t = kw.get(_EMPTY_SHAPES[name])
                if t is not None and t.ndim == 2:
                    arr = arr.reshape((0, t.shape[0], t.shape[1])[:ndim])
            kw[name] = arr
        signals = cls(**kw, online=refs["mode"] == "online", seed=int(refs["seed"]))
        actual = signals.digests()
        edited = sorted(k for k in set(actual) | set(digests) if actual.get(k) != digests.get(k))
        if edited or doc.get("digest") != _overall(digests, refs):
            raise ForgeDataError(
                f"{where}: the signals do not match their digests "
                f"({', '.join(edited) or 'digest list'} changed since the file was written)",
                fix="use the results file as forge attack mia wrote it, or rerun the attack",
                code="attack.signals_tampered",
            )
        return signals


def _overall(digests: dict, refs: dict) -> str:
    return sha256_bytes(canonical_json({"format": SIGNALS_FORMAT, "digests": digests, "references": refs}))
