"""Short-lived signed timestamps: freshness below the roster's expiry (TUF's timestamp role).

A roster is valid for months, so a machine that is fed an old (but unexpired, signed) roster
would not learn of a revocation until it expires: a freeze attack. A timestamp says "the
current roster of this consortium is version V with digest D", is signed by an online key
listed in the roster (``timestamp_keys``, e.g. the hub's) or by an admin, and lives a few
hours (default 6, at most 7 days). A verifier given a timestamp refuses a roster that is not
the one it names, and a timestamp that expired: a withheld revocation takes effect within
the timestamp's lifetime. The file works offline (copy it next to the roster); a hub serves
the latest one.

File format ``forge-timestamp/1`` (JSON; signatures over the DSSE PAE, payload type
``application/vnd.forge.timestamp+json``, of the RFC 8785 canonical JSON of ``signed``)::

    {"signed": {"format": "forge-timestamp/1", "consortium": "medforge",
                "roster_version": 7, "roster_sha256": "<hex, as 'forge roster show' prints>",
                "issued": "2026-12-03T08:00:00Z", "expires": "2026-12-03T14:00:00Z"},
     "signatures": [{"keyid": "<signing key id>", "sig": {"ed25519": "<b64>", ...}}]}

Functions: :func:`issue_timestamp` (write one), :func:`read_timestamp` /
:func:`timestamp_from_bytes` (parse, bounded and total), :func:`verify_timestamp` (check
against a trusted roster and the clock).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import ForgeError
from ..fileio import atomic_write_bytes, canonical_json, loads_bounded, read_bounded_bytes, sha256_bytes
from . import _primitives as P
from . import _time
from .errors import BundleError, fail
from .keys import PrivateKey, b64d, b64e, check_site

FORMAT = "forge-timestamp/1"
PAYLOAD_TYPE = "application/vnd.forge.timestamp+json"
DEFAULT_LIFETIME = 6 * 3600
MAX_LIFETIME = 7 * 86400
MAX_FILE = 64 << 10
CLOCK_SKEW = 300


@dataclass(frozen=True)
class Timestamp:
    consortium: str
    roster_version: int
    roster_sha256: str
    issued: int
    expires: int
    signatures: dict[str, dict[str, bytes]] = field(default_factory=dict, hash=False)

    def signed_dict(self) -> dict:
        return {
            "format": FORMAT,
            "consortium": self.consortium,
            "roster_version": self.roster_version,
            "roster_sha256": self.roster_sha256,
            "issued": _time.format_time(self.issued),
            "expires": _time.format_time(self.expires),
        }

    def signed_bytes(self) -> bytes:
        return P.pae(PAYLOAD_TYPE, canonical_json(self.signed_dict()))

    def to_document(self) -> dict:
        return {
            "signed": self.signed_dict(),
            "signatures": [{"keyid": k, "sig": {a: b64e(s) for a, s in sorted(sig.items())}} for k, sig in sorted(self.signatures.items())],
        }

    @property
    def digest(self) -> str:
        return sha256_bytes(self.signed_bytes())


def _bad(where: str, why: str) -> BundleError:
    return fail("timestamp.invalid", f"timestamp {where} is not valid ({why})", "fetch the current timestamp from the hub again")


def timestamp_from_bytes(raw: bytes, where: str = "<timestamp>") -> Timestamp:
    """Parse a timestamp file's bytes (not yet verified); total: any input ends in BundleError."""
    if len(raw) > MAX_FILE:
        raise _bad(where, f"larger than {MAX_FILE} bytes")
    try:
        doc = loads_bounded(raw, max_depth=6, max_int_digits=16, allow_floats=False)
    except ValueError as e:
        raise _bad(where, str(e)) from None
    if (
        not isinstance(doc, dict)
        or set(doc) != {"signed", "signatures"}
        or not isinstance(doc["signed"], dict)
        or not isinstance(doc["signatures"], list)
    ):
        raise fail("timestamp.wrong_type", f"{where} is not a forge timestamp", "give the timestamp file the hub serves")
    s = doc["signed"]
    if s.get("format") != FORMAT:
        raise fail(
            "timestamp.version",
            f"{where} has format {str(s.get('format'))[:40]!r}, this toolkit reads {FORMAT}",
            "use a timestamp written by forge-secure",
        )
    try:
        version, digest = s["roster_version"], s["roster_sha256"]
        if not (isinstance(version, int) and not isinstance(version, bool) and 1 <= version < 1 << 53):
            raise TypeError("roster_version")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise TypeError("roster_sha256")
        sigs: dict[str, dict[str, bytes]] = {}
        for item in doc["signatures"]:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("keyid"), str)
                or not isinstance(item.get("sig"), dict)
                or item["keyid"] in sigs
                or len(item["sig"]) > 4
            ):
                raise TypeError("signatures")
            sigs[item["keyid"]] = {str(a): b64d(v, f"{where}: signature", "timestamp.invalid") for a, v in item["sig"].items()}
        ts = Timestamp(
            check_site(s["consortium"]),
            version,
            digest,
            _time.parse_time(s["issued"], "issued"),
            _time.parse_time(s["expires"], "expires"),
            sigs,
        )
        same = canonical_json(ts.signed_dict()) == canonical_json(s)
    except BundleError as e:
        if e.code.startswith("timestamp."):
            raise
        raise _bad(where, e.message) from None
    except ForgeError as e:
        raise _bad(where, e.message) from None
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad(where, f"missing or mistyped field {str(e)[:60]}") from None
    if not same:
        raise _bad(where, "it holds fields this toolkit does not write")
    return ts


def read_timestamp(path: str | os.PathLike) -> Timestamp:
    try:
        raw = read_bounded_bytes(path, "timestamp", max_bytes=MAX_FILE, code_prefix="timestamp")
    except ForgeError as e:
        raise fail(e.code, e.message, e.fix or "fetch the timestamp again") from None
    return timestamp_from_bytes(raw, str(path))


def issue_timestamp(roster, key: PrivateKey, out: str | os.PathLike, *, lifetime: int = DEFAULT_LIFETIME, now: int | None = None):
    """Sign and write a timestamp naming ``roster`` (a path or Roster) as current, valid ``lifetime``
    seconds. ``key`` must be one of the roster's timestamp keys or admins."""
    from .roster import Roster, read_roster

    roster = roster if isinstance(roster, Roster) else read_roster(roster)
    if not isinstance(lifetime, int) or not 60 <= lifetime <= MAX_LIFETIME:
        raise fail(
            "timestamp.lifetime",
            f"timestamp lifetime {lifetime!r} s is out of range",
            f"give a lifetime between 1m and {MAX_LIFETIME // 86400}d (default {DEFAULT_LIFETIME // 3600}h)",
        )
    pub = key.signing_public()
    if pub.key_id not in {a.key.key_id for a in (*roster.timestamp_keys, *roster.admins)}:
        raise fail(
            "timestamp.not_signer",
            f"key {pub.key_id[:16]}... ({key.site}) is neither a timestamp key nor an admin of roster version {roster.version}",
            "sign with a key listed under timestamp_keys ('forge roster add --timestamp-key')",
        )
    now = _time.now() if now is None else now
    ts = Timestamp(roster.consortium, roster.version, roster.digest, now, now + lifetime)
    ts = Timestamp(**{**ts.__dict__, "signatures": {pub.key_id: key.sign_all(ts.signed_bytes())}})
    atomic_write_bytes(out, (json.dumps(ts.to_document(), indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return ts


def verify_timestamp(timestamp, roster, *, now: int | None = None) -> Timestamp:
    """Check ``timestamp`` (a path or Timestamp) against ``roster`` (already trusted, see
    :func:`~forge_secure.crypto.roster.trust`) and the clock: signed by one of the roster's
    timestamp keys or admins, not expired, not issued in the future, and naming this very
    roster (else ``timestamp.stale_roster``: a newer roster exists, get it)."""
    ts = timestamp if isinstance(timestamp, Timestamp) else read_timestamp(timestamp)
    now = _time.now() if now is None else now
    signers = (*roster.timestamp_keys, *roster.admins)
    message = ts.signed_bytes()
    if not any(k.key.key_id in ts.signatures and k.key.verify_all(message, ts.signatures[k.key.key_id]) for k in signers):
        raise fail(
            "timestamp.signature",
            "the timestamp is not signed by a timestamp key or admin of the roster",
            "fetch the timestamp from the consortium's hub again",
        )
    if ts.consortium != roster.consortium:
        raise fail(
            "timestamp.consortium",
            f"the timestamp is for {ts.consortium!r}, the roster for {roster.consortium!r}",
            "give the timestamp of the roster's consortium",
        )
    if ts.expires - ts.issued > MAX_LIFETIME or ts.expires < ts.issued:
        raise fail("timestamp.lifetime", "the timestamp claims a lifetime beyond 7 days", "fetch a current timestamp")
    if ts.issued > now + CLOCK_SKEW:
        raise fail(
            "timestamp.future", f"the timestamp was issued at {_time.format_time(ts.issued)}, in the future", "check this machine's clock"
        )
    if now > ts.expires:
        raise fail(
            "timestamp.expired",
            f"the timestamp expired at {_time.format_time(ts.expires)}",
            "fetch the current timestamp (and roster) from the hub; a stale one may hide a revocation",
        )
    if (ts.roster_version, ts.roster_sha256) != (roster.version, roster.digest):
        raise fail(
            "timestamp.stale_roster",
            f"the timestamp names roster version {ts.roster_version} as current, not version {roster.version}",
            "fetch the roster the timestamp names; yours is not the current one",
        )
    return ts


__all__ = [
    "DEFAULT_LIFETIME",
    "FORMAT",
    "MAX_LIFETIME",
    "Timestamp",
    "issue_timestamp",
    "read_timestamp",
    "timestamp_from_bytes",
    "verify_timestamp",
]
