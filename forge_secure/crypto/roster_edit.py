"""Editing a roster: every change (a site key, an admin, a recipient, a timestamp key, a
revocation, a new expiry) writes a new, unsigned version, which the admins then sign with
:func:`sign_roster`. The format and the checks of a roster are in :mod:`forge_secure.crypto.roster`,
which re-exports these functions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import _time
from .errors import fail
from .keys import PrivateKey, PublicKey
from .roster import (
    FORMAT,
    Admin,
    Recipient,
    Revocation,
    Roster,
    SiteKey,
    read_roster,
)


def init_roster(
    out: str | os.PathLike,
    consortium: str,
    admins: list[PublicKey],
    *,
    threshold: int = 1,
    expires: int,
    recipients: Sequence[PublicKey | Recipient] = (),
) -> Roster:
    """Write a new, unsigned roster version 1 (sign it with :func:`sign_roster`).

    ``recipients``: the public keys bundles may be sealed to (the consortium's; a
    :class:`Recipient` gives another role, e.g. an auditor's)."""
    out = Path(out)
    if out.exists():
        raise fail("roster.exists", f"{out} already exists", "choose another --out, or edit it with 'forge roster add/revoke'")
    roster = Roster(
        consortium,
        1,
        expires,
        threshold,
        tuple(Admin(a.site, a.signing) for a in admins),
        recipients=tuple(r if isinstance(r, Recipient) else Recipient.from_public(r) for r in recipients),
    )
    roster.write(out)
    return roster


def _bump(roster: Roster, expires: int | None, **changes) -> Roster:
    """A new version: edits drop every signature (the admins sign the new content)."""
    return replace(
        roster, version=roster.version + 1, signatures={}, format=FORMAT, expires=roster.expires if expires is None else expires, **changes
    )


def add_recipient(path: str | os.PathLike, key: PublicKey, *, role: str = "consortium", expires: int | None = None) -> Roster:
    """List ``key``'s encryption key as a recipient bundles may be sealed to (a new version)."""
    roster = read_roster(path)
    entry = Recipient.from_public(key, role)
    if roster.recipient(entry.key_id) or roster.revoked(entry.key_id):
        raise fail(
            "roster.duplicate",
            f"recipient key {entry.key_id[:16]}... of {key.site} is already in the roster (or revoked)",
            "give a new key; a revoked key cannot come back",
        )
    new = _bump(roster, expires, recipients=roster.recipients + (entry,))
    new.write(path)
    return new


def add_site_key(path: str | os.PathLike, key: PublicKey, *, not_before: int, not_after: int, expires: int | None = None) -> Roster:
    roster = read_roster(path)
    if not_after <= not_before:
        raise fail("roster.window", "--not-after must be later than --not-before", "give a validity window that is not empty")
    if roster.site_key(key.key_id) or roster.revoked(key.key_id):
        raise fail(
            "roster.duplicate",
            f"key {key.key_id[:16]}... of {key.site} is already in the roster (or revoked)",
            "give a new key; a revoked key cannot come back",
        )
    new = _bump(roster, expires, sites=roster.sites + (SiteKey(key.site, key.signing, not_before, not_after),))
    new.write(path)
    return new


def add_timestamp_key(path: str | os.PathLike, key: PublicKey, *, expires: int | None = None) -> Roster:
    """List ``key``'s signing key as one that may sign timestamps (a hub's online key; a new version)."""
    roster = read_roster(path)
    if any(t.key.key_id == key.key_id for t in roster.timestamp_keys):
        raise fail("roster.duplicate", f"timestamp key {key.key_id[:16]}... of {key.site} is already in the roster", "nothing to do")
    new = _bump(roster, expires, timestamp_keys=roster.timestamp_keys + (Admin(key.site, key.signing),))
    new.write(path)
    return new


def add_admin_key(path: str | os.PathLike, key: PublicKey, *, threshold: int | None = None, expires: int | None = None) -> Roster:
    roster = read_roster(path)
    new = _bump(
        roster,
        expires,
        admins=roster.admins + (Admin(key.site, key.signing),),
        threshold=roster.threshold if threshold is None else threshold,
    )
    new.write(path)
    return new


def revoke_key(path: str | os.PathLike, key_id: str, *, reason: str, at: int | None = None, expires: int | None = None) -> Roster:
    roster = read_roster(path)
    if not roster.site_key(key_id) and not roster.recipient(key_id):
        known = (
            ", ".join([f"{s.site}:{s.key.key_id[:16]}" for s in roster.sites] + [f"{r.name}:{r.key_id[:16]}" for r in roster.recipients])
            or "none"
        )
        raise fail(
            "roster.unknown_key",
            f"no site key or recipient key with id {key_id[:80]!r} in the roster",
            f"give the full key id of one of the site or recipient keys ({known})",
        )
    if roster.revoked(key_id):
        raise fail("roster.duplicate", f"key {key_id[:16]}... is already revoked", "nothing to do")
    new = _bump(roster, expires, revocations=roster.revocations + (Revocation(key_id, _time.now() if at is None else at, reason),))
    new.write(path)
    return new


def sign_roster(
    path: str | os.PathLike, key: PrivateKey, *, expires: int | None = None, state_dir: str | os.PathLike | None = None
) -> Roster:
    """Add (or replace) the signature of admin ``key``. With ``expires``, first make a new
    version with that expiry (dropping the old signatures), e.g. to renew an expiring roster.

    An admin vouches for what it signs: when this machine has no pinned root for the
    consortium yet and the roster now has its threshold of signatures, it is pinned here
    (in ``state_dir``, default under ``forge_home()``)."""
    roster = read_roster(path)
    if expires is not None:
        roster = _bump(roster, expires)
    pub = key.signing_public()
    if pub.key_id not in {a.key.key_id for a in roster.admins}:
        raise fail(
            "roster.not_admin",
            f"key {pub.key_id[:16]}... ({key.site}) is not an admin of this roster",
            "sign with one of the admin keys listed by 'forge roster show'",
        )
    new = replace(roster, signatures={**roster.signatures, pub.key_id: key.sign_all(roster.signed_bytes())})
    new.write(path)
    from .trust import _state_path, pin_root

    if not _state_path(new.consortium, state_dir).exists() and new.signer_count() >= new.threshold:
        pin_root(new, state_dir=state_dir)
    return new
