"""Trusting a roster: the pinned root of trust, rotation, rollback and fork (TUF's client rules).

Trust starts from a pinned root, as a TUF client starts from the ``root.json`` it ships
with: :func:`pin_root` (``forge roster pin``) records a roster obtained out of band (a file,
or any copy whose digest matches one given out of band), after checking that a threshold of
its own admins signed it. An admin's machine pins the first roster it signs. Later rosters
must chain to the pinned state: a roster of a consortium with no pin is refused
(``roster.unpinned``), a lower version is refused (``roster.rollback``), the same version
with other content is refused (``roster.fork``), and a roster that changes the admins or
threshold must also be signed by a threshold of the previously trusted admins
(``roster.rotation``, TUF root rotation). Unlike TUF, versions may be skipped; a rotation
that the client missed is caught up by trusting the intermediate rosters in order.

Why beside python-tuf and not on it: TUF's root metadata models roles that sign
metadata, not site keys with validity windows or recipients' encryption keys (those
would live in unrecognised fields that TUF clients do not check); ``securesystemslib``
has no ML-DSA signer, so hybrid Ed25519 + ML-DSA-65 keys could not be one TUF key; and
TUF canonicalises with OLPC canonical JSON, not RFC 8785. The roster keeps TUF's client
rules (pinned root, threshold rotation, rollback, expiry, a short-lived signed timestamp
in :mod:`forge_secure.crypto.timestamp`) and DSSE signing.

The state, one file per consortium under
``forge_home()/roster`` (or ``state_dir``), holds the pinned root's version and digest, the
highest version trusted since, its admins and threshold, and that roster itself (so ``seal``
can find the recipients without a ``--roster``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ..fileio import atomic_write_json, loads_bounded
from ..home import forge_home
from . import _time
from .errors import BundleError, fail
from .keys import SigningPublicKey, check_site
from .roster import Admin, Roster, parse_roster, read_roster


def _state_root(state_dir: str | os.PathLike | None) -> Path:
    root = Path(state_dir) if state_dir is not None else forge_home() / "roster"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _state_path(consortium: str, state_dir: str | os.PathLike | None) -> Path:
    return _state_root(state_dir) / f"{check_site(consortium)}.json"


@dataclass(frozen=True)
class _State:
    version: int
    digest: str
    threshold: int
    admins: tuple[Admin, ...]
    document: dict | None
    raw: dict


def _read_state(state_file: Path) -> _State | None:
    if not state_file.exists():
        return None
    try:
        raw = state_file.read_bytes()
    except OSError:
        raise _damaged_state(state_file) from None
    return state_from_bytes(raw, state_file)


def _damaged_state(where) -> BundleError:
    return fail(
        "roster.state",
        f"the remembered roster state {where} is damaged",
        "restore it from a backup, or delete it and pin the consortium's root again with 'forge roster pin'",
    )


@functools.lru_cache(maxsize=4)
def state_from_bytes(raw: bytes, where="<roster state>") -> _State:
    """Parse the bytes of a pinned-root state file; total: anything but a state ends in ``roster.state``.
    Remembered by content: the state is re-read on every use and parsed again only when it changed."""
    return _parse_state(raw, where)


def _parse_state(raw: bytes, where) -> _State:
    try:
        state = loads_bounded(raw, max_depth=12, allow_floats=False)
        if not isinstance(state, dict) or not isinstance(state["admins"], list):
            raise TypeError
        old_admins = tuple(Admin(check_site(a["name"]), SigningPublicKey.from_dict(a, "roster state")) for a in state["admins"])
        version, digest, threshold = state["version"], state["sha256"], state["threshold"]
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 1 << 53 for v in (version, threshold))
            or not isinstance(digest, str)
            or not old_admins
        ):
            raise TypeError
        doc = state.get("document")
        return _State(version, digest, threshold, old_admins, doc if isinstance(doc, dict) else None, state)
    except (ValueError, KeyError, TypeError, AttributeError, BundleError):
        raise _damaged_state(where) from None


def _write_state(state_file: Path, roster: Roster, now: int, pinned: dict | None) -> None:
    atomic_write_json(
        state_file,
        {
            "consortium": roster.consortium,
            "version": roster.version,
            "sha256": roster.digest,
            "threshold": roster.threshold,
            "admins": [a.to_dict() for a in roster.admins],
            "document": roster.to_document(),
            "seen": _time.format_time(now),
            "pinned": pinned,
        },
    )


def _check_self_signed(roster: Roster) -> None:
    count = roster.self_signer_count
    if count < roster.threshold:
        raise fail(
            "roster.signature",
            f"roster version {roster.version} has {count} valid admin signatures, {roster.threshold} needed",
            "have the admins sign it with 'forge roster sign', or restore a good copy",
        )


def _digest_text(text: str) -> str:
    digest = text.strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise fail(
            "roster.pin_digest",
            f"{text[:80]!r} is not a sha256 digest",
            "give the 64 hex digits that 'forge roster show' prints as sha256 (optionally prefixed 'sha256:')",
        )
    return digest


def pin_root(source, *, sha256: str | None = None, state_dir: str | os.PathLike | None = None, now: int | None = None) -> Roster:
    """Pin the consortium's root of trust on this machine (``forge roster pin``).

    ``source`` is a roster file (or :class:`Roster`) obtained out of band, or any copy of it
    when ``sha256`` (the digest ``forge roster show`` prints, obtained out of band) is
    given. A threshold of its own admins must have signed it. When this machine already has a
    pin for the consortium, the roster must chain to it instead (as :func:`trust` checks).
    """
    now = _time.now() if now is None else now
    roster = source if isinstance(source, Roster) else read_roster(source)
    if sha256 is not None and roster.digest != _digest_text(sha256):
        raise fail(
            "roster.pin_mismatch",
            f"roster version {roster.version} of {roster.consortium} has digest {roster.digest}, not the {sha256[:80]} given",
            "get the roster from the consortium again, and the digest by another channel",
        )
    _check_self_signed(roster)
    state_file = _state_path(roster.consortium, state_dir)
    with FileLock(str(state_file) + ".lock", timeout=60):
        state = _read_state(state_file)
        if state is None:
            _write_state(state_file, roster, now, {"version": roster.version, "sha256": roster.digest, "at": _time.format_time(now)})
            return roster
    return trust(roster, now=now, state_dir=state_dir, check_expiry=False)


def _as_root(root, roster: Roster):
    """A ``root=`` argument as (Roster to pin, digest or None)."""
    if isinstance(root, Roster):
        return root, None
    if isinstance(root, str) and not Path(root).exists() and len(root.strip().lower().removeprefix("sha256:")) == 64:
        return roster, root
    return read_roster(root), None


def _check_chain(roster: Roster, state: _State | None, state_file: Path) -> _State:
    """Refuse ``roster`` unless it chains to the pinned ``state`` (see the module docstring)."""
    if state is None:
        raise fail(
            "roster.unpinned",
            f"this machine has no pinned root of trust for consortium {roster.consortium!r}",
            "pin the consortium's root once, obtained out of band: 'forge roster pin ROOT.json', or "
            "'forge roster pin ROSTER --sha256 DIGEST' with the digest the consortium published",
        )
    if roster.version < state.version:
        raise fail(
            "roster.rollback",
            f"roster version {roster.version} is older than version {state.version} already trusted",
            "get the current roster from the consortium; an old roster may hide revocations",
        )
    if roster.version == state.version and roster.digest != state.digest:
        raise fail(
            "roster.fork",
            f"roster version {roster.version} differs from the version {state.version} already trusted",
            "ask the consortium which roster is genuine; two rosters with one version number should never exist",
        )
    rotated = {a.key.key_id for a in state.admins} != {a.key.key_id for a in roster.admins} or state.threshold != roster.threshold
    if rotated and roster.signer_count(state.admins) < state.threshold:
        raise fail(
            "roster.rotation",
            f"roster version {roster.version} changes the admin keys but is not signed by {state.threshold} of the admins already trusted",
            "have the previous admins sign it too, or trust the intermediate rosters in order; if the "
            f"consortium was deliberately re-created with new admin keys, remove {state_file} and pin its new root",
        )
    return state


def trust(
    roster: Roster,
    *,
    now: int | None = None,
    state_dir: str | os.PathLike | None = None,
    remember: bool = True,
    root=None,
    check_expiry: bool = True,
) -> Roster:
    """Check that ``roster`` is trusted now and chains to this machine's pinned root; remember it.

    ``root`` (a roster file, a :class:`Roster` or a ``sha256:`` digest of the roster given)
    pins the consortium's root first when this machine has none. Raises
    ``roster.unpinned`` (no root for the consortium), ``roster.signature`` (too few distinct
    admin signatures), ``roster.expired``, ``roster.rollback``, ``roster.fork`` or
    ``roster.rotation``.
    """
    now = _time.now() if now is None else now
    _check_self_signed(roster)
    if check_expiry and now > roster.expires:
        raise fail(
            "roster.expired",
            f"roster version {roster.version} expired on {_time.format_time(roster.expires)}",
            "get the current roster from the consortium (admins: renew it with 'forge roster sign --expires 365d')",
        )
    state_file = _state_path(roster.consortium, state_dir)
    if root is not None and not state_file.exists():
        pin, digest = _as_root(root, roster)
        if pin.consortium != roster.consortium:
            raise fail(
                "roster.unpinned",
                f"the root given is for consortium {pin.consortium!r}, the roster for {roster.consortium!r}",
                "give the root of the roster's own consortium",
            )
        pin_root(pin, sha256=digest, state_dir=state_dir, now=now)
    # State files are replaced atomically, so they are read without the lock; the lock is taken
    # only to write, and the checks are repeated under it.
    state = _check_chain(roster, _read_state(state_file), state_file)
    if remember and (roster.version > state.version or state.document is None):
        with FileLock(str(state_file) + ".lock", timeout=60):
            state = _check_chain(roster, _read_state(state_file), state_file)
            if roster.version > state.version or state.document is None:
                _write_state(state_file, roster, now, state.raw.get("pinned"))
    return roster


def load_roster(
    path_or_roster, *, now: int | None = None, state_dir: str | os.PathLike | None = None, remember: bool = True, root=None
) -> Roster:
    """Read (if a path) and :func:`trust` a roster."""
    roster = path_or_roster if isinstance(path_or_roster, Roster) else read_roster(path_or_roster)
    return trust(roster, now=now, state_dir=state_dir, remember=remember, root=root)


def trusted_rosters(*, now: int | None = None, state_dir: str | os.PathLike | None = None) -> list[Roster]:
    """The latest roster trusted on this machine for each pinned consortium, if not expired."""
    now = _time.now() if now is None else now
    out = []
    for state_file in sorted(_state_root(state_dir).glob("*.json")):
        state = _read_state(state_file)
        if state is None or state.document is None:
            continue
        roster = parse_roster(state.document, str(state_file))
        if roster.digest == state.digest and now <= roster.expires:
            out.append(roster)
    return out


__all__ = ["load_roster", "pin_root", "trust", "trusted_rosters"]
