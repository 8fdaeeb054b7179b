"""Signed write requests to the hub (publish, blob uploads, roster updates, budget changes).

A request is a *signed body*: a DSSE-style envelope ``{"payload": base64(statement),
"signatures": [{"keyid", "sig": {alg: base64}}]}`` whose signatures are over the DSSE PAE
of the canonical JSON statement (payload type ``application/vnd.forge.hub-request+json``),
made with a roster key (hybrid keys sign with both algorithms). The statement names the
action, its parameters, the hub's log origin, the signer, the time it was issued and a
random nonce. The hub accepts it only within ``SKEW`` seconds of its clock and only once
(the nonce is stored in the database in the same transaction as the write), so a captured
request cannot be replayed, nor sent to another hub.

Why a signed body and not RFC 9421 HTTP Message Signatures: the hub appends every accepted
request to its transparency log, and a signed body is self-contained evidence that anyone
can re-verify later from the log alone, with the same DSSE/PAE and roster keys (including
ML-DSA) as the bundles; an RFC 9421 signature covers HTTP components (``@authority``,
``@path``, headers) that a TLS-terminating proxy rewrites and that are not kept. Uploads
bind their body the way RFC 9421's Content-Digest would: the statement carries its sha256
and size.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time

from ..crypto import _primitives as P
from ..crypto.keys import PrivateKey, b64e
from ..crypto.roster import Roster
from ..errors import ForgeIntegrityError
from ..fileio import canonical_json

PAYLOAD_TYPE = "application/vnd.forge.hub-request+json"
FORMAT = "forge-hub-request/1"
SKEW = 300
MAX_REQUEST = 1 << 20


class AuthError(ForgeIntegrityError):
    default_code = "hub.auth"


def sign_request(key: PrivateKey, action: str, params: dict, origin: str, *, now: int | None = None) -> dict:
    statement = {
        "format": FORMAT,
        "action": action,
        "params": params,
        "hub": origin,
        "key_id": key.key_id,
        "issued": int(time.time() if now is None else now),
        "nonce": os.urandom(16).hex(),
    }
    body = canonical_json(statement)
    sigs = key.sign_all(P.pae(PAYLOAD_TYPE, body))
    return {"payload": b64e(body), "signatures": [{"keyid": key.key_id, "sig": {a: b64e(s) for a, s in sigs.items()}}]}


def _bad(why: str) -> AuthError:
    return AuthError(f"the signed request is malformed ({why})", fix="send the request with 'forge hub ...', which signs it")


def parse_request(doc: object) -> tuple[dict, bytes, str, dict]:
    """(statement, payload bytes, key id, signatures) of a request document, unverified."""
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), str) or not isinstance(doc.get("signatures"), list):
        raise _bad("not a signed request object")
    if len(doc["signatures"]) != 1 or not isinstance(doc["signatures"][0], dict):
        raise _bad("it must carry exactly one signature entry")
    try:
        body = base64.b64decode(doc["payload"], validate=True)
        statement = json.loads(body.decode("utf-8"))
        entry = doc["signatures"][0]
        kid, sig = str(entry["keyid"]), {str(a): base64.b64decode(v, validate=True) for a, v in entry["sig"].items()}
    except (ValueError, binascii.Error, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise _bad("its payload or signature is not valid base64 JSON") from None
    if not isinstance(statement, dict) or statement.get("format") != FORMAT or not isinstance(statement.get("params"), dict):
        raise _bad(f"its statement is not a {FORMAT}")
    if canonical_json(statement) != body:
        raise _bad("its statement is not canonical JSON")
    return statement, body, kid, sig


def verify_request(doc: object, roster: Roster, *, action: str, origin: str, now: int | None, admins_only: bool = True) -> dict:
    """The verified statement of ``doc``; raises :class:`AuthError` (nonce reuse is checked by the
    caller). ``now=None`` skips the freshness check (a site checking a release long after it was made)."""
    statement, body, kid, sigs = parse_request(doc)
    if statement.get("action") != action:
        raise AuthError(
            f"the request is signed for action {statement.get('action')!r}, not {action!r}",
            fix="send the request to the endpoint it was signed for",
        )
    if statement.get("hub") != origin:
        raise AuthError(
            f"the request is signed for hub {statement.get('hub')!r}, not this hub ({origin})",
            fix="sign the request for this hub (forge hub info shows its origin)",
        )
    if statement.get("key_id") != kid:
        raise _bad("its key id does not match its signature entry")
    keys = {a.key.key_id: a.key for a in roster.admins}
    if not admins_only:
        keys.update({s.key.key_id: s.key for s in roster.sites if roster.revoked(s.key.key_id) is None})
    key = keys.get(kid)
    if key is None:
        raise AuthError(
            f"key {kid[:16]}... is not an admin key of roster version {roster.version}",
            fix="sign with an admin key listed by 'forge roster show' (the hub's current roster)",
            code="hub.forbidden",
        )
    if not key.verify_all(P.pae(PAYLOAD_TYPE, body), sigs):
        raise AuthError("the request's signature does not verify", fix="sign the request again with the right key", code="hub.signature")
    issued, nonce = statement.get("issued"), statement.get("nonce")
    if not isinstance(issued, int) or isinstance(issued, bool) or (now is not None and abs(now - issued) > SKEW):
        raise AuthError(
            f"the request was issued at {issued!r}, more than {SKEW} s from the hub's clock ({now})",
            fix="check the clocks, and send a fresh request (old ones are refused against replay)",
            code="hub.stale",
        )
    if not isinstance(nonce, str) or len(nonce) != 32 or any(c not in "0123456789abcdef" for c in nonce):
        raise _bad("its nonce is not 32 hex digits")
    return statement
