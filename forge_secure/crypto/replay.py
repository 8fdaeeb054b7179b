"""Local state that stops replays: the opener's store of accepted submissions and the
sealer's per-site sequence counter. Both live under ``forge_home()``, are written
atomically (and fsynced) and are locked with ``filelock`` so two processes cannot both
accept the same submission or take the same sequence number.

The replay store (format ``forge-replay/2``) is bounded: per site it keeps the highest
sequence accepted and the sequences accepted within a window below it (default 64). A
sequence above the highest is accepted; one inside the window is accepted once (bundles
of one site may arrive out of order); one at or below ``highest - window`` is refused.

It is crash-safe without a duplicate-acceptance window. ``open`` reserves the submission
(a *pending* record naming the output directory and its temporary directory) before it
renames anything into place, and commits it after. The next run resolves a pending record
left by a crash, under the same lock: if the output directory holds the opened files, the
rename happened and the submission counts as accepted; otherwise it did not, the
temporary directory (decrypted data) is removed and the submission may be opened again.
Version-1 stores (every submission id, and the last sequence per site) are read and
converted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from ..fileio import atomic_write_json, fsync_directory, loads_bounded
from ..home import forge_home
from .errors import fail

FORMAT = "forge-replay/2"
DEFAULT_WINDOW = 64


def _read_state(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        raw = path.read_bytes()
    except OSError:
        raise _damaged(path, what) from None
    return _parse_state(raw, path, what)


def _parse_state(raw: bytes, path, what: str) -> dict:
    try:
        state = loads_bounded(raw, max_depth=8, max_int_digits=16, allow_floats=False)
        if not isinstance(state, dict):
            raise ValueError
        return state
    except ValueError:
        raise _damaged(path, what) from None


def store_from_bytes(raw: bytes, where="<replay store>") -> dict:
    """Parse the bytes of a replay store file (format 2 or 1) into its normal form; total:
    anything else ends in ``replay.state``."""
    return _normalise(_parse_state(raw, where, "replay store"), where)


def counter_from_bytes(raw: bytes, where="<sequence counter>") -> int:
    """The last sequence number in the bytes of a sequence counter file; total (``replay.state``)."""
    return _last_of(_parse_state(raw, where, "sequence counter"), where)


def _last_of(state: dict, path) -> int:
    last = state.get("last", 0)
    if not isinstance(last, int) or isinstance(last, bool) or last < 0:
        raise fail(
            "replay.state",
            f"the sequence counter {path} is damaged",
            "restore it from a backup, or give --sequence above the last one sent",
        )
    return last


def _damaged(path, what: str = "replay store"):
    return fail(
        "replay.state", f"the {what} {path} is damaged", "restore it from a backup; deleting it would let old submissions be accepted again"
    )


def _normalise(raw: dict, path: Path) -> dict:
    """A store in format 2, from a format-2 or format-1 file (``{}`` for a new store)."""
    try:
        if raw.get("format") == FORMAT:
            current = {
                str(s): {"highest": int(v["highest"]), "seen": {int(q): str(i) for q, i in v["seen"].items()}}
                for s, v in raw["sites"].items()
            }
            pending = {
                str(k): {"site": str(p["site"]), "sequence": int(p["sequence"]), "out": str(p["out"]), "tmp": str(p["tmp"])}
                for k, p in raw.get("pending", {}).items()
            }
            return {"sites": current, "pending": pending}
        if raw and "format" in raw:
            raise ValueError
        sites: dict = {}
        for site, last in raw.get("sites", {}).items():  # format 1
            sites[str(site)] = {"highest": int(last), "seen": {}}
        for sub_id, rec in raw.get("submissions", {}).items():
            entry = sites.setdefault(str(rec["site"]), {"highest": int(rec["sequence"]), "seen": {}})
            entry["seen"][int(rec["sequence"])] = str(sub_id)
        return {"sites": sites, "pending": {}}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _damaged(path) from None


class _Ticket:
    """What ``accept`` yields: ``reserve(out, tmp)`` records the pending submission durably,
    before anything is renamed into ``out``."""

    def __init__(self, store: ReplayStore, state: dict, submission_id: str, site: str, sequence: int):
        self._store, self._state = store, state
        self.submission_id, self.site, self.sequence = submission_id, site, sequence
        self.reserved = False

    def reserve(self, out: str | os.PathLike, tmp: str | os.PathLike) -> None:
        self._state["pending"][self.submission_id] = {
            "site": self.site,
            "sequence": self.sequence,
            "out": str(Path(out).absolute()),
            "tmp": str(Path(tmp).absolute()),
        }
        self._store._write(self._state)
        self.reserved = True


class ReplayStore:
    """Submissions accepted by ``forge open``: per site, the highest sequence and a window below it."""

    def __init__(self, root: str | os.PathLike | None = None, *, window: int = DEFAULT_WINDOW):
        if not isinstance(window, int) or window < 1:
            raise fail("replay.window", f"replay window {window!r} must be a positive integer", "give a window of 1 or more")
        self.root = Path(root) if root is not None else forge_home() / "replay"
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "accepted.json"
        self.window = window
        self._lock = FileLock(str(self.path) + ".lock", timeout=120)

    # ------------------------------------------------------------ state
    def _load(self) -> dict:
        return _normalise(_read_state(self.path, "replay store"), self.path)

    def _write(self, state: dict) -> None:
        atomic_write_json(
            self.path,
            {
                "format": FORMAT,
                "window": self.window,
                "sites": {
                    s: {"highest": v["highest"], "seen": {str(q): i for q, i in sorted(v["seen"].items())}}
                    for s, v in sorted(state["sites"].items())
                },
                "pending": state["pending"],
            },
            mode=0o600,
        )
        fsync_directory(self.root)  # the renamed store must survive a crash, or a replay would pass

    def _record(self, state: dict, submission_id: str, site: str, sequence: int) -> None:
        entry = state["sites"].setdefault(site, {"highest": sequence, "seen": {}})
        entry["highest"] = max(entry["highest"], sequence)
        entry["seen"][sequence] = submission_id
        floor = entry["highest"] - self.window
        entry["seen"] = {q: i for q, i in entry["seen"].items() if q > floor}

    def _resolve(self, state: dict) -> bool:
        """Settle pending records left by a crash (see the module docstring). True if any."""
        if not state["pending"]:
            return False
        for sub_id, p in list(state["pending"].items()):
            out, tmp = Path(p["out"]), Path(p["tmp"])
            renamed = not tmp.exists()
            delivered = renamed and out.is_dir() and not out.is_symlink() and any(out.iterdir())
            if not renamed:  # the rename did not happen: decrypted data left in a temporary directory
                shutil.rmtree(tmp, ignore_errors=True)
            if delivered:
                self._record(state, sub_id, p["site"], p["sequence"])
            del state["pending"][sub_id]
        return True

    def check(self, state: dict, submission_id: str, site: str, sequence: int) -> None:
        entry = state.get("sites", {}).get(site)
        if entry is None:
            return
        if sequence in entry["seen"] or submission_id in entry["seen"].values():
            raise fail(
                "bundle.replay",
                f"submission {submission_id} (sequence {sequence} of {site}) was already opened",
                "this is a replay or a duplicate; ask the site for a new submission",
            )
        if sequence <= entry["highest"] - self.window:
            raise fail(
                "bundle.replay",
                f"sequence number {sequence} of {site} is too old: {entry['highest']} was accepted "
                f"and only the {self.window} below it are still open",
                "this is an old or replayed submission; ask the site to seal again with a higher sequence",
            )

    @contextlib.contextmanager
    def accept(self, submission_id: str, site: str, sequence: int, *, now: int | None = None) -> Iterator[_Ticket]:
        """Hold the lock: settle crashed opens, refuse a replay, run the block (which calls
        ``reserve(out, tmp)`` before renaming into ``out``), record the submission on success."""
        with self._lock:
            state = self._load()
            if self._resolve(state):
                self._write(state)
            self.check(state, submission_id, site, sequence)
            ticket = _Ticket(self, state, submission_id, site, sequence)
            try:
                yield ticket
            except BaseException:
                if ticket.reserved:  # settled like a crash: accepted if the plugin was delivered before the failure
                    self._resolve(state)
                    self._write(state)
                raise
            state["pending"].pop(submission_id, None)
            self._record(state, submission_id, site, sequence)
            self._write(state)

    def settle(self) -> None:
        """Settle what a crashed ``open`` left (also done by every ``accept``)."""
        with self._lock:
            state = self._load()
            if self._resolve(state):
                self._write(state)

    def last_sequence(self, site: str) -> int | None:
        entry = self._load()["sites"].get(site)
        return None if entry is None else entry["highest"]


class SequenceCounter:
    """The sealing site's own counter, so each bundle carries a sequence above the last."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else forge_home() / "sequence"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, site: str) -> Path:
        return self.root / f"{site}.json"

    def _last(self, path: Path) -> int:
        return _last_of(_read_state(path, "sequence counter"), path)

    def last(self, site: str) -> int:
        return self._last(self._path(site))

    @contextlib.contextmanager
    def next(self, site: str, requested: int | None = None) -> Iterator[int]:
        """Yield the sequence number to use (``requested`` or last + 1); store it on success."""
        path = self._path(site)
        with FileLock(str(path) + ".lock", timeout=120):
            last = self._last(path)
            seq = last + 1 if requested is None else requested
            if seq < 1:
                raise fail("bundle.sequence", f"sequence number {seq} must be at least 1", "give --sequence 1 or more")
            yield seq
            atomic_write_json(path, {"site": site, "last": max(last, seq)})
            fsync_directory(self.root)  # a lost update would hand out the same sequence number again


__all__ = ["DEFAULT_WINDOW", "ReplayStore", "SequenceCounter", "counter_from_bytes", "store_from_bytes"]
