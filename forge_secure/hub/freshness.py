"""The signed timestamp the hub serves (``GET /v1/timestamp``, issue 16 item 7).

A ``forge-timestamp/1`` (:mod:`forge_secure.crypto.timestamp`) says "the current roster of
this consortium is version V with digest D" and lives a few hours, so a site that checks
one with its roster cannot be kept on an old roster -- one that still lists a revoked key --
for longer than that (a freeze attack). The hub signs it with its online timestamp key, a
forge signing key (``forge keys new``) whose public half the admins list in the roster's
``timestamp_keys`` (``forge roster add --timestamp-key PUBLIC.json``); the hub is started with
``--timestamp-key SIGNING.key``. It holds no decryption key for it.

The latest timestamp is kept in the database (so every hub process of a deployment serves
the same one) and re-issued, under the writer lock, when the roster changed or when it is
older than half its lifetime: a site that fetches at any time gets at least half a lifetime
of validity. Each issued timestamp is checked with the verifier's own
:func:`~forge_secure.crypto.timestamp.verify_timestamp` before it is stored or served.
"""

from __future__ import annotations

import json
from typing import TypeGuard

import sqlalchemy as sa

from ..crypto.keys import PrivateKey
from ..crypto.roster import Roster
from ..crypto.timestamp import DEFAULT_LIFETIME, MAX_LIFETIME, Timestamp, timestamp_from_bytes, verify_timestamp
from ..errors import ForgeError
from . import db

META_KEY = "timestamp"


class TimestampUnavailable(ForgeError):
    default_code = "hub.no_timestamp"


def check_lifetime(lifetime: int) -> int:
    if not isinstance(lifetime, int) or not 60 <= lifetime <= MAX_LIFETIME:
        raise ForgeError(
            f"timestamp lifetime {lifetime!r} s is out of range",
            code="hub.timestamp_lifetime",
            fix=f"give a lifetime between 1m and {MAX_LIFETIME // 86400}d (default {DEFAULT_LIFETIME // 3600}h)",
        )
    return lifetime


def _signer(key: PrivateKey | None, roster: Roster) -> PrivateKey:
    if key is None:
        raise TimestampUnavailable(
            "this hub has no timestamp key",
            fix="start the hub with --timestamp-key SIGNING.key "
            "(a key the roster lists under timestamp_keys); a site can use a timestamp file instead",
        )
    kid = key.signing_public().key_id
    if kid not in {t.key.key_id for t in roster.timestamp_keys}:
        raise TimestampUnavailable(
            f"the hub's timestamp key {kid[:16]}... is not a timestamp key of roster version {roster.version}",
            fix="the admins list it with 'forge roster add --timestamp-key PUBLIC.json' and send the "
            "new roster to the hub ('forge hub roster')",
            code="hub.timestamp_unlisted",
        )
    return key


def _issue(key: PrivateKey, roster: Roster, now: int, lifetime: int) -> Timestamp:
    ts = Timestamp(roster.consortium, roster.version, roster.digest, now, now + lifetime)
    ts = Timestamp(**{**ts.__dict__, "signatures": {key.signing_public().key_id: key.sign_all(ts.signed_bytes())}})
    return verify_timestamp(ts, roster, now=now)  # never serve what a site would refuse


def _stored(conn: sa.Connection) -> Timestamp | None:
    raw = conn.execute(sa.select(db.hub_meta.c.value).where(db.hub_meta.c.key == META_KEY)).scalar()
    if raw is None:
        return None
    try:
        return timestamp_from_bytes(raw.encode("utf-8"), "the hub's stored timestamp")
    except ForgeError:
        return None  # re-issued below


def _fresh_enough(ts: Timestamp | None, roster: Roster, now: int, lifetime: int) -> TypeGuard[Timestamp]:
    return (
        ts is not None
        and (ts.roster_version, ts.roster_sha256) == (roster.version, roster.digest)
        and ts.issued <= now < ts.issued + min(lifetime, ts.expires - ts.issued) // 2
    )


def current(hub) -> dict:
    """The hub's current timestamp document for its current roster, re-issued when needed."""
    lifetime = hub.config.timestamp_lifetime
    now = hub.now()
    with db.read(hub.engine) as conn:
        roster = hub.roster(conn)
        key = _signer(hub.config.timestamp_key, roster)
        ts = _stored(conn)
    if not _fresh_enough(ts, roster, now, lifetime):
        with db.write(hub.engine) as conn:
            roster = hub.roster(conn)
            ts = _stored(conn)
            if not _fresh_enough(ts, roster, now, lifetime):  # another process may have issued it meanwhile
                ts = _issue(key, roster, now, lifetime)
                doc = json.dumps(ts.to_document(), sort_keys=True)
                conn.execute(db.hub_meta.delete().where(db.hub_meta.c.key == META_KEY))
                conn.execute(db.hub_meta.insert().values(key=META_KEY, value=doc))
    return ts.to_document()


__all__ = ["TimestampUnavailable", "check_lifetime", "current"]
