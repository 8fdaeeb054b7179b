"""Local state that stops replays: the opener's store of accepted submissions and the
sealer's per-site sequence counter. Both live under ``forge_home()``, are written
atomically and are locked with ``filelock`` so two processes cannot both accept the same
submission or take the same sequence number."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from ..fileio import atomic_write_json, fsync_directory
from ..home import forge_home
from . import _time
from .errors import fail


def _read_state(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError
        return state
    except (ValueError, UnicodeDecodeError):
        raise fail("replay.state", f"the {what} {path} is damaged",
                   "restore it from a backup; deleting it would let old submissions be accepted again") from None


class ReplayStore:
    """Submissions accepted by ``forge open``: ids seen, and the last sequence per site."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else forge_home() / "replay"
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "accepted.json"
        self._lock = FileLock(str(self.path) + ".lock", timeout=120)

    def check(self, state: dict, submission_id: str, site: str, sequence: int) -> None:
        seen = state.get("submissions", {})
        if submission_id in seen:
            first = seen[submission_id]
            raise fail("bundle.replay", f"submission {submission_id} was already opened on {first.get('opened')}",
                       "this is a replay or a duplicate; ask the site for a new submission")
        last = state.get("sites", {}).get(site)
        if last is not None and sequence <= int(last):
            raise fail("bundle.replay", f"sequence number {sequence} of {site} is not above {last}, the last one accepted",
                       "this is an old or replayed submission; ask the site to seal again with a higher sequence")

    @contextlib.contextmanager
    def accept(self, submission_id: str, site: str, sequence: int, *, now: int | None = None) -> Iterator[None]:
        """Hold the lock: refuse a replay, run the block, record the submission on success."""
        with self._lock:
            state = _read_state(self.path, "replay store")
            self.check(state, submission_id, site, sequence)
            yield
            state.setdefault("submissions", {})[submission_id] = {
                "site": site, "sequence": sequence, "opened": _time.format_time(_time.now() if now is None else now)}
            state.setdefault("sites", {})[site] = sequence
            atomic_write_json(self.path, state)
            fsync_directory(self.root)  # the renamed store must survive a crash, or a replay would pass

    def last_sequence(self, site: str) -> int | None:
        return _read_state(self.path, "replay store").get("sites", {}).get(site)


class SequenceCounter:
    """The sealing site's own counter, so each bundle carries a sequence above the last."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else forge_home() / "sequence"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, site: str) -> Path:
        return self.root / f"{site}.json"

    def last(self, site: str) -> int:
        return int(_read_state(self._path(site), "sequence counter").get("last", 0))

    @contextlib.contextmanager
    def next(self, site: str, requested: int | None = None) -> Iterator[int]:
        """Yield the sequence number to use (``requested`` or last + 1); store it on success."""
        path = self._path(site)
        with FileLock(str(path) + ".lock", timeout=120):
            last = int(_read_state(path, "sequence counter").get("last", 0))
            seq = last + 1 if requested is None else requested
            if seq < 1:
                raise fail("bundle.sequence", f"sequence number {seq} must be at least 1", "give --sequence 1 or more")
            yield seq
            atomic_write_json(path, {"site": site, "last": max(last, seq)})
            fsync_directory(self.root)  # a lost update would hand out the same sequence number again
