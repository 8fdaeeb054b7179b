"""The per-site, per-data-set privacy budget ledger.

One append-only JSON-lines file per (site, data set) under ``forge_home()/ledgers/``
records every DP release on that data: its accountant history
``[(noise_multiplier, sample_rate, steps), ...]``, delta, the accountant, and a note.
The epsilon spent is the composition of all recorded histories (concatenation; see
:mod:`.accountants`), so a new release is refused when the composition would pass the
site's budget.

Integrity. Every entry carries ``prev`` (the hash of the entry before it, 64 zeros for the
first) and ``hash`` (sha256 of the entry's canonical text without ``hash``), so an edited,
reordered or deleted entry breaks the chain; a sidecar ``.head`` file records the entry
count and last hash, so removing entries from the end is detected as well. This detects
accidents and naive edits, not an attacker who can rewrite both files (there is no key).
Any such damage raises :class:`ForgeBudgetError` with code ``ledger.corrupt``.

Concurrency and crashes. Every change takes a ``filelock.FileLock`` on the ledger, reads
and verifies it, and writes the whole new file atomically (temporary file, fsync, rename),
then the head; readers never see a half-written ledger. A crash between the two renames
leaves the head one entry behind, which is accepted (and repaired on the next write).

Budget. A budget given to :meth:`Ledger.open` that differs from the recorded one is
appended as a ``budget`` entry (changes of budget are part of the record); with
``budget=None`` the recorded budget applies.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import ForgeBudgetError, ForgeFileError, ForgeValueError
from ..fileio import atomic_write_bytes
from ..home import forge_home
from .accountants import ACCOUNTANTS, compute_epsilon, validate_delta, validate_history

FORMAT = "forge-ledger/1"
ZERO = "0" * 64
LOCK_TIMEOUT = 60.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _entry_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _slug(dataset: str) -> str:
    """A file name for a data set name: readable part plus a hash of the exact name."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("._")[-48:] or "data"
    return f"{readable}-{hashlib.sha256(dataset.encode('utf-8')).hexdigest()[:12]}"


def _corrupt(path: Path, what: str) -> ForgeBudgetError:
    return ForgeBudgetError(
        f"budget ledger {path} is corrupt: {what}",
        fix=f"restore {path.name} (and its .head file) from a backup; never edit a ledger by hand. "
        "Until then no DP release can be checked against this budget",
        code="ledger.corrupt",
    )


class Ledger:
    """The budget ledger of one site's data set. Open with :meth:`open`."""

    def __init__(self, path: Path, site: str, dataset: str, budget: float | None):
        self.path = Path(path)
        self.head_path = self.path.with_suffix(".head")
        self.site = site
        self.dataset = dataset
        self._requested_budget = budget
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, site: str, dataset: str, budget: float | None, root: str | os.PathLike | None = None) -> Ledger:
        """The ledger of ``site`` on ``dataset`` (created on first write). A ``budget``
        (total epsilon) different from the recorded one is recorded as a change."""
        if not isinstance(site, str) or not _NAME.match(site):
            raise ForgeValueError(
                f"site name {site!r} is not usable as a ledger name",
                fix="use letters, digits, '-', '_' or '.', such as site-1",
                code="ledger.site",
            )
        if not isinstance(dataset, str) or not dataset:
            raise ForgeValueError(f"data set name {dataset!r} is empty", fix="name the data set the releases are on", code="ledger.dataset")
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (budget > 0) or math.isnan(budget):
                raise ForgeValueError(f"budget {budget!r} must be a positive epsilon", fix="give --budget such as 8", code="ledger.budget")
            budget = float(budget)
        folder = Path(root) if root is not None else forge_home() / "ledgers"
        path = folder / site / f"{_slug(dataset)}.jsonl"
        ledger = cls(path, site, dataset, budget)
        if path.exists():
            ledger.records()  # verify now: a corrupt ledger is reported before any work
        if budget is not None and ledger._recorded_budget() != budget:
            ledger._append({"kind": "budget", "budget": budget})
        return ledger

    @classmethod
    def list_all(cls, site: str | None = None, root: str | os.PathLike | None = None) -> list[Ledger]:
        """Every ledger under ``root`` (default ``forge_home()/ledgers``), optionally of one site."""
        folder = Path(root) if root is not None else forge_home() / "ledgers"
        out: list[Ledger] = []
        if not folder.is_dir():
            return out
        for f in sorted(folder.glob("*/*.jsonl")):
            if site is not None and f.parent.name != site:
                continue
            led = cls(f, f.parent.name, "", None)
            entries = led.entries()
            led.dataset = entries[0].get("dataset", f.stem) if entries else f.stem
            out.append(led)
        return out

    # ------------------------------------------------------------------ reading
    def _read(self) -> list[dict]:
        """All entries, verified (chain, head, fields)."""
        if not self.path.exists():
            if self.head_path.exists():
                raise _corrupt(self.path, "the ledger file is missing but its head file exists")
            return []
        if self.path.is_dir():
            raise ForgeFileError(f"budget ledger {self.path} is a directory", fix="remove it", code="ledger.corrupt")
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise _corrupt(self.path, "the last line is truncated")
        entries, prev = [], ZERO
        for i, line in enumerate(raw.splitlines()):
            try:
                entry = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise _corrupt(self.path, f"line {i + 1} is not valid JSON") from None
            if not isinstance(entry, dict) or entry.get("format") != FORMAT:
                raise _corrupt(self.path, f"line {i + 1} is not a {FORMAT} entry")
            if entry.get("seq") != i or entry.get("prev") != prev:
                raise _corrupt(self.path, f"entry {i + 1} does not follow entry {i} (entries removed, reordered or inserted)")
            if entry.get("hash") != _entry_hash(entry):
                raise _corrupt(self.path, f"entry {i + 1} was modified (its hash does not match)")
            if entry.get("kind") != "budget":
                try:
                    validate_history(entry.get("history") or [])
                    validate_delta(entry.get("delta"))
                    ACCOUNTANTS.get(str(entry.get("accountant")))
                except ForgeValueError as e:
                    raise _corrupt(self.path, f"entry {i + 1} holds an invalid release ({e.message})") from None
            entries.append(entry)
            prev = entry["hash"]
        if self.head_path.exists():
            try:
                head = json.loads(self.head_path.read_text())
                count, last = int(head["count"]), head["hash"]
            except (OSError, ValueError, KeyError, TypeError):
                raise _corrupt(self.path, "its head file is unreadable") from None
            if count > len(entries):
                raise _corrupt(self.path, f"the head records {count} entries but the file holds {len(entries)} (entries removed)")
            if count > 0 and entries[count - 1]["hash"] != last:
                raise _corrupt(self.path, "the head does not match the entries (the file was replaced)")
            if count < len(entries) - 1:
                raise _corrupt(self.path, f"the head records {count} entries but the file holds {len(entries)}")
        elif entries:
            raise _corrupt(self.path, "its head file is missing")
        return entries

    def entries(self) -> list[dict]:
        """Every entry, including budget changes, after verification."""
        return self._read()

    def records(self) -> list[dict]:
        """The DP releases (entries that are not budget changes), verified."""
        return [e for e in self._read() if e.get("kind") != "budget"]

    def _recorded_budget(self) -> float | None:
        recorded = None
        for e in self._read():
            if e.get("kind") == "budget":
                recorded = float(e["budget"])
        return recorded

    @property
    def budget(self) -> float | None:
        """The site's total epsilon budget on this data set (the latest recorded one)."""
        recorded = self._recorded_budget()
        return recorded if recorded is not None else self._requested_budget

    @property
    def accountant(self) -> str:
        """The accountant of the latest release (``prv`` for an empty ledger)."""
        recs = self.records()
        return recs[-1]["accountant"] if recs else "prv"

    def history(self) -> list[tuple[float, float, int]]:
        """The concatenated history of every release."""
        out: list[tuple[float, float, int]] = []
        for e in self.records():
            out.extend(validate_history(e["history"]))
        return out

    def spent(self, delta: float, accountant: str | None = None) -> float:
        """Epsilon of everything released so far, at ``delta``."""
        return compute_epsilon(self.history(), delta, accountant or self.accountant)

    # ------------------------------------------------------------------ checking and writing
    def _check(self, history: list, new_history: list, delta: float, accountant: str, budget: float | None) -> tuple[float, float, float]:
        alone = compute_epsilon(new_history, delta, accountant) if new_history else 0.0
        if budget is None and history:  # nothing to enforce: the composed figure is computed on demand (spent)
            return math.nan, math.nan, alone
        total = compute_epsilon(history + new_history, delta, accountant)
        if budget is not None and total > budget:
            before = compute_epsilon(history, delta, accountant) if history else 0.0
            raise ForgeBudgetError(
                f"this release (epsilon {alone:.3f} alone) on top of epsilon {before:.3f} already spent by "
                f"{len(self.records())} releases composes to epsilon {total:.3f} at delta {delta:.3g} ({accountant}), "
                f"over the budget {budget:g} of {self.site} on {self.dataset}",
                fix="add noise (larger --noise-multiplier or smaller --epsilon), train fewer epochs, "
                "or raise the site's budget if its policy allows",
                code="budget.exceeded",
            )
        return total, math.nan, alone

    def check(self, new_history: Iterable[Sequence], delta: float, accountant: str = "prv") -> float:
        """The epsilon after composing ``new_history`` with every recorded release;
        raises :class:`ForgeBudgetError` with the figures if it passes the budget."""
        new = validate_history(new_history)
        delta = validate_delta(delta)
        ACCOUNTANTS.get(accountant)
        return (
            compute_epsilon(self.history() + new, delta, accountant)
            if self.budget is None
            else self._check(self.history(), new, delta, accountant, self.budget)[0]
        )

    def record(
        self, new_history: Iterable[Sequence], *, kind: str, delta: float, note: dict | None = None, accountant: str = "prv"
    ) -> dict:
        """Append a release, under the lock, after checking the budget again (another
        process may have released something since :meth:`check`). Returns the entry."""
        if not isinstance(kind, str) or not _NAME.match(kind) or kind == "budget":
            raise ForgeValueError(f"release kind {kind!r} is not valid", fix="use train, synth or synthetic", code="ledger.kind")
        new = validate_history(new_history)
        if not new:
            raise ForgeValueError("a release with an empty history spends nothing and is not recorded", code="ledger.empty")
        delta = validate_delta(delta)
        ACCOUNTANTS.get(accountant)
        holder: dict[str, Any] = {}

        def build(entries: list[dict]) -> dict:
            history = [tuple(h) for e in entries if e.get("kind") != "budget" for h in validate_history(e["history"])]
            budget = self._requested_budget
            for e in entries:
                if e.get("kind") == "budget":
                    budget = float(e["budget"])
            total, before, alone = self._check(history, new, delta, accountant, budget)
            holder["entry"] = {
                "kind": kind,
                "history": [list(h) for h in new],
                "delta": delta,
                "accountant": accountant,
                "epsilon": alone,
                "epsilon_total": None if math.isnan(total) else total,
                "budget": budget,
                "note": note or {},
            }
            return holder["entry"]

        return self._append(build)

    def _append(self, make) -> dict:
        try:
            with self._lock:
                entries = self._read()
                body = make(entries) if callable(make) else dict(make)
                entry = {
                    "format": FORMAT,
                    "seq": len(entries),
                    "prev": entries[-1]["hash"] if entries else ZERO,
                    "time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "site": self.site,
                    "dataset": self.dataset,
                    **body,
                }
                try:
                    entry["hash"] = _entry_hash(entry)
                except ValueError:
                    raise ForgeValueError("a ledger entry cannot hold NaN or infinite numbers", code="ledger.value") from None
                line = (json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
                old = self.path.read_bytes() if self.path.exists() else b""
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self.path, old + line)
                atomic_write_bytes(self.head_path, json.dumps({"count": len(entries) + 1, "hash": entry["hash"]}).encode())
                _fsync_dir(self.path.parent)
                return entry
        except Timeout:
            raise ForgeFileError(
                f"budget ledger {self.path} is locked by another process for over {LOCK_TIMEOUT:g} s",
                fix=f"wait for the other forge process, or remove {self.path}.lock if none is running",
                code="ledger.locked",
            ) from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ledger_report(site: str | None = None, delta: float | None = None, root: str | os.PathLike | None = None) -> list[dict]:
    """``forge ledger show``: every ledger (of ``site``, when given) with its releases and the
    epsilon spent at ``delta`` (default: the smallest delta it records). PRV refuses very large
    epsilons; those ledgers are composed with RDP instead, and say so in ``accountant``."""
    if delta is not None:
        validate_delta(delta)  # delta 0 would otherwise report nothing spent
    rows = []
    for led in Ledger.list_all(site=site, root=root):
        history = led.history()
        records = led.records()
        deltas = [float(r["delta"]) for r in records if r.get("delta") is not None]
        at = delta if delta is not None else (min(deltas) if deltas else None)
        accountant = led.accountant
        try:
            spent = led.spent(at) if (history and at) else 0.0
        except ForgeValueError as e:
            if e.code != "dp.prv_range" or at is None:
                raise
            accountant = "rdp"
            spent = led.spent(at, accountant="rdp")
        rows.append(
            {
                "site": led.site,
                "dataset": led.dataset,
                "releases": len(records),
                "history": history,
                "delta": at,
                "epsilon_spent": spent,
                "budget": led.budget,
                "accountant": accountant,
                "path": str(led.path),
                "records": records,
            }
        )
    return rows
