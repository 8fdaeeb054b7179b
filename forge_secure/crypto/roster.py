"""The consortium's trust roster: who may sign submissions, who may receive them, and until when.

A roster is a signed, versioned JSON document in the manner of The Update Framework's
root metadata (Samuel, Mathewson, Cappos, Dingledine, "Survivable key compromise in
software update systems", CCS 2010; TUF specification 1.0)::

    {"signed": {"format": "forge-roster/2", "consortium": "...", "version": 3,
                "expires": "2027-11-23T00:00:00Z", "threshold": 1,
                "admins": [{"name", "key_id", "algorithms", "public_keys"}],
                "sites": [{"site", "key_id", "algorithms", "public_keys", "not_before", "not_after"}],
                "recipients": [{"name", "role", "key_id", "kem", "public_key"}],
                "timestamp_keys": [{"name", "key_id", "algorithms", "public_keys"}],
                "revocations": [{"key_id", "revoked", "reason"}]},
     "signatures": [{"keyid": "<admin key id>", "sig": {"ed25519": "<b64>", ...}}]}

Format 2 adds ``recipients``: the encryption keys a bundle may be sealed to (the
consortium's, an auditor's), so ``seal`` refuses a swapped ``public.json``; and
``timestamp_keys``: the online keys (a hub's, as TUF's timestamp role) that may sign the
short-lived timestamps of :mod:`forge_secure.crypto.timestamp` (admins may sign them too). Format 1
rosters (no recipients) are still read and verified; editing one writes format 2.

Signatures are over the DSSE PAE of the canonical JSON (RFC 8785) of ``signed`` (payload
type ``application/vnd.forge.roster+json``); a hybrid admin key must sign with both
algorithms and counts as one signer, and no two admin entries may share a component key,
so a threshold counts distinct signers.

Trust (the pinned root, rotation, rollback, fork) is in :mod:`forge_secure.crypto.trust`.
The entries (admins, site keys, recipients, revocations) and the format constants are in
:mod:`forge_secure.crypto.roster_entries`, editing is in :mod:`forge_secure.crypto.roster_edit`; both re-exported here.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from ..errors import ForgeError
from ..fileio import (
    atomic_write_bytes,
    canonical_json,
    loads_bounded,
    read_bounded_bytes,
    sha256_bytes,
)
from . import _primitives as P
from . import _time
from .errors import BundleError, fail
from .keys import PublicKey, SigningPublicKey, b64d, b64e, check_site
from .roster_entries import (
    FORMAT,
    FORMAT_V1,
    FORMATS,
    MAX_ROSTER,
    PAYLOAD_TYPE,
    RECIPIENT_ROLES,  # noqa: F401 - re-exported
    Admin,
    Recipient,
    Revocation,
    SiteKey,
)


@dataclass(frozen=True)
class Roster:
    """A parsed roster (not yet trusted: see :func:`load_roster`)."""

    consortium: str
    version: int
    expires: int
    threshold: int
    admins: tuple[Admin, ...]
    sites: tuple[SiteKey, ...] = ()
    revocations: tuple[Revocation, ...] = ()
    signatures: dict[str, dict[str, bytes]] = field(default_factory=dict, hash=False)
    path: Path | None = field(default=None, compare=False)
    recipients: tuple[Recipient, ...] = ()
    format: str = FORMAT
    timestamp_keys: tuple[Admin, ...] = ()

    def __post_init__(self):
        check_site(self.consortium)
        if self.format not in FORMATS:
            raise fail(
                "roster.version",
                f"roster format {str(self.format)[:40]!r} is not one this toolkit reads ({', '.join(FORMATS)})",
                "use a roster written by forge-secure",
            )
        if self.format == FORMAT_V1 and (self.recipients or self.timestamp_keys):
            raise fail("roster.invalid", f"a {FORMAT_V1} roster lists no recipients", f"write it as {FORMAT}")
        rids = [r.key_id for r in self.recipients]
        if len(set(rids)) != len(rids):
            raise fail("roster.invalid", "a recipient key is listed twice", "list each recipient key once")
        components = [(alg, raw) for a in self.admins for alg, raw in a.key.keys.items()]
        if len(set(components)) != len(components):  # a hybrid key and its own Ed25519 half are one signer
            raise fail(
                "roster.invalid",
                "two admin entries share a key (one party would count twice towards the threshold)",
                "list each admin once, with all the algorithms of its key",
            )
        if not isinstance(self.version, int) or isinstance(self.version, bool) or not 1 <= self.version < 1 << 53:
            raise fail("roster.invalid", f"roster version {self.version!r} is not a positive integer", "rebuild the roster")
        if not self.admins:
            raise fail("roster.invalid", "the roster lists no admin keys", "give at least one --admin public key")
        ids = [a.key.key_id for a in self.admins]
        if len(set(ids)) != len(ids):
            raise fail("roster.invalid", "an admin key is listed twice", "list each admin key once")
        site_ids = [s.key.key_id for s in self.sites]
        if len(set(site_ids)) != len(site_ids):
            raise fail("roster.invalid", "a site key is listed twice", "list each site key once")
        if not isinstance(self.threshold, int) or isinstance(self.threshold, bool) or not 1 <= self.threshold <= len(self.admins):
            raise fail(
                "roster.threshold",
                f"threshold {self.threshold!r} must be between 1 and the {len(self.admins)} admin keys",
                "give --threshold between 1 and the number of admins",
            )

    # ------------------------------------------------------------ serialisation
    def signed_dict(self) -> dict:
        signed = {
            "format": self.format,
            "consortium": self.consortium,
            "version": self.version,
            "expires": _time.format_time(self.expires),
            "threshold": self.threshold,
            "admins": sorted((a.to_dict() for a in self.admins), key=lambda d: d["key_id"]),
            "sites": sorted((s.to_dict() for s in self.sites), key=lambda d: (d["site"], d["key_id"])),
            "revocations": sorted((r.to_dict() for r in self.revocations), key=lambda d: d["key_id"]),
        }
        if self.format != FORMAT_V1:
            signed["recipients"] = sorted((r.to_dict() for r in self.recipients), key=lambda d: d["key_id"])
            signed["timestamp_keys"] = sorted((t.to_dict() for t in self.timestamp_keys), key=lambda d: d["key_id"])
        return signed

    def signed_bytes(self) -> bytes:
        return self._signed_bytes

    @cached_property
    def _signed_bytes(self) -> bytes:  # the dataclass is frozen: computed once per instance
        return P.pae(PAYLOAD_TYPE, canonical_json(self.signed_dict()))

    @property
    def digest(self) -> str:
        return sha256_bytes(self.signed_bytes())

    def to_document(self) -> dict:
        return {
            "signed": self.signed_dict(),
            "signatures": [{"keyid": k, "sig": {a: b64e(s) for a, s in sorted(sig.items())}} for k, sig in sorted(self.signatures.items())],
        }

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(path, (json.dumps(self.to_document(), indent=2, sort_keys=True) + "\n").encode("utf-8"))

    # ------------------------------------------------------------ queries
    def valid_signers(self, admins: tuple[Admin, ...] | None = None) -> set[str]:
        """Key ids of ``admins`` (default: this roster's) with a valid signature."""
        message = self.signed_bytes()
        return {
            a.key.key_id
            for a in (admins or self.admins)
            if a.key.key_id in self.signatures and a.key.verify_all(message, self.signatures[a.key.key_id])
        }

    def signer_count(self, admins: tuple[Admin, ...] | None = None) -> int:
        """The number of distinct parties among ``admins`` with a valid signature: admin entries
        that share any component public key are one party (a hybrid key is one signer)."""
        admins = tuple(admins or self.admins)
        valid = self.valid_signers(admins)
        groups: list[set] = []
        for a in admins:
            if a.key.key_id not in valid:
                continue
            mine = set(a.key.keys.items())
            joined = [g for g in groups if g & mine]
            for g in joined:
                groups.remove(g)
                mine |= g
            groups.append(mine)
        return len(groups)

    @cached_property
    def self_signer_count(self) -> int:
        """``signer_count()`` over this roster's own admins, computed once per instance (the
        dataclass is frozen, and :func:`read_roster` hands out one instance per file content)."""
        return self.signer_count()

    def recipient(self, key_id: str) -> Recipient | None:
        return next((r for r in self.recipients if r.key_id == key_id), None)

    def check_recipient(self, pub: PublicKey) -> Recipient:
        """The roster entry of ``pub``'s encryption key; raises ``bundle.unlisted_recipient``."""
        kid = pub.encryption_key_id
        entry = self.recipient(kid)
        if entry is None or entry.kem != pub.kem:
            listed = ", ".join(f"{r.name} ({r.role}) {r.key_id[:16]}" for r in self.recipients) or "none"
            raise fail(
                "bundle.unlisted_recipient",
                f"recipient key {kid[:16]}... ({pub.site}) is not listed in roster version {self.version} of "
                f"{self.consortium} (listed: {listed})",
                "seal to a recipient listed in the signed roster ('forge roster show'); if the key is genuine, "
                "the admins add it with 'forge roster add --recipient PUB' and sign the roster",
            )
        rev = self.revoked(kid)
        if rev is not None:
            raise fail(
                "bundle.unlisted_recipient",
                f"recipient key {kid[:16]}... ({pub.site}) was revoked on {_time.format_time(rev.revoked)} ({rev.reason})",
                "seal to the consortium's current key listed in the roster",
            )
        return entry

    def revoked(self, key_id: str) -> Revocation | None:
        return next((r for r in self.revocations if r.key_id == key_id), None)

    def site_key(self, key_id: str) -> SiteKey | None:
        return next((s for s in self.sites if s.key.key_id == key_id), None)

    def listed_key(self, key_id: str) -> SiteKey:
        """The site entry of ``key_id``; raises ``bundle.revoked`` or ``bundle.untrusted_signer``."""
        rev = self.revoked(key_id)
        if rev is not None:
            raise fail(
                "bundle.revoked",
                f"signer key {key_id[:16]}... was revoked on {_time.format_time(rev.revoked)} ({rev.reason})",
                "do not use this bundle; ask the site to seal again with its new key",
            )
        entry = self.site_key(key_id)
        if entry is None:
            raise fail(
                "bundle.untrusted_signer",
                f"signer key {key_id[:16]}... is not in roster version {self.version} of {self.consortium}",
                "add the site's public key with 'forge roster add' and sign the roster, or check you have the current roster",
            )
        return entry

    def check_signer(self, key_id: str, site: str, created: int, now: int) -> SiteKey:
        """The roster entry that lets ``key_id`` sign for ``site`` at ``created`` and now."""
        entry = self.listed_key(key_id)
        if entry.site != site:
            raise fail(
                "bundle.untrusted_signer",
                f"signer key {key_id[:16]}... belongs to site {entry.site!r}, but the bundle claims site {site!r}",
                "do not use this bundle; it claims another site's identity",
            )
        for when, label in ((created, "when the bundle was sealed"), (now, "now")):
            if not entry.not_before <= when <= entry.not_after:
                raise fail(
                    "bundle.expired_key",
                    f"signer key of {site} is valid from {_time.format_time(entry.not_before)} to "
                    f"{_time.format_time(entry.not_after)}, not {label} ({_time.format_time(when)})",
                    "ask the consortium to renew the site's key in the roster, and the site to seal again",
                )
        return entry

    def describe(self, now: int | None = None) -> dict:
        now = _time.now() if now is None else now
        signers = self.valid_signers()
        return {
            "consortium": self.consortium,
            "version": self.version,
            "expires": _time.format_time(self.expires),
            "expired": now > self.expires,
            "threshold": self.threshold,
            "valid_signatures": self.signer_count(),
            "trusted": self.signer_count() >= self.threshold and now <= self.expires,
            "admins": [{"name": a.name, "key_id": a.key.key_id, "signed": a.key.key_id in signers} for a in self.admins],
            "sites": [
                {
                    "site": s.site,
                    "key_id": s.key.key_id,
                    "algorithms": list(s.key.algorithms),
                    "not_before": _time.format_time(s.not_before),
                    "not_after": _time.format_time(s.not_after),
                    "revoked": self.revoked(s.key.key_id) is not None,
                }
                for s in self.sites
            ],
            "recipients": [{**r.to_dict(), "revoked": self.revoked(r.key_id) is not None} for r in self.recipients],
            "timestamp_keys": [{"name": t.name, "key_id": t.key.key_id} for t in self.timestamp_keys],
            "revocations": [r.to_dict() for r in self.revocations],
            "format": self.format,
            "sha256": self.digest,
        }


# --------------------------------------------------------------------------- parsing


def _bad(path, why: str) -> BundleError:
    return fail("roster.invalid", f"roster {path} is not valid ({why})", "restore the roster from a good copy or ask the consortium for it")


def parse_roster(doc: object, where: str) -> Roster:
    if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict) or not isinstance(doc.get("signatures"), list):
        raise fail("roster.wrong_type", f"{where} is not a forge roster", "give the roster file written by 'forge roster init'")
    s = doc["signed"]
    if s.get("format") not in FORMATS:
        raise fail(
            "roster.version",
            f"{where} has roster format {str(s.get('format'))[:40]!r}, this toolkit reads {', '.join(FORMATS)}",
            "use a roster written by this version of forge-secure",
        )
    try:
        if not all(isinstance(s.get(k), list) for k in ("admins", "sites", "revocations")):
            raise TypeError("'admins', 'sites' and 'revocations' must be lists")
        admins = tuple(
            Admin(check_site(a["name"]), SigningPublicKey.from_dict(a, f"{where}: admin", "roster.invalid")) for a in s["admins"]
        )
        sites = tuple(
            SiteKey(
                check_site(e["site"]),
                SigningPublicKey.from_dict(e, f"{where}: site key", "roster.invalid"),
                _time.parse_time(e["not_before"], "not_before"),
                _time.parse_time(e["not_after"], "not_after"),
            )
            for e in s["sites"]
        )
        revocations = tuple(
            Revocation(_text(r["key_id"], 64), _time.parse_time(r["revoked"], "revoked"), _text(r["reason"], 1000))
            for r in s["revocations"]
        )
        recipients: tuple[Recipient, ...] = ()
        timestamp_keys: tuple[Admin, ...] = ()
        if s["format"] == FORMAT:
            if not isinstance(s.get("recipients"), list):
                raise TypeError("'recipients' must be a list")
            recipients = tuple(
                Recipient(r["name"], r["role"], r["kem"], b64d(r["public_key"], f"{where}: recipient", "roster.invalid"))
                for r in s["recipients"]
            )
            if not isinstance(s.get("timestamp_keys"), list):
                raise TypeError("'timestamp_keys' must be a list")
            timestamp_keys = tuple(
                Admin(check_site(t["name"]), SigningPublicKey.from_dict(t, f"{where}: timestamp key", "roster.invalid"))
                for t in s["timestamp_keys"]
            )
            for t in s["timestamp_keys"]:
                if t.get("key_id") != SigningPublicKey.from_dict(t, where, "roster.invalid").key_id:
                    raise _bad(where, f"stated timestamp key id {str(t.get('key_id'))[:80]!r} does not match its keys")
            for r, entry in zip(recipients, s["recipients"], strict=True):
                if entry.get("key_id") != r.key_id:
                    raise _bad(where, f"stated recipient key id {str(entry.get('key_id'))[:80]!r} does not match its key")
        for entry in (*s["admins"], *s["sites"]):
            if entry.get("key_id") != SigningPublicKey.from_dict(entry, where, "roster.invalid").key_id:
                raise _bad(where, f"stated key id {str(entry.get('key_id'))[:80]!r} does not match its keys")
        sigs: dict[str, dict[str, bytes]] = {}
        for item in doc["signatures"]:
            kid = item["keyid"]
            if not isinstance(kid, str) or kid in sigs or not isinstance(item["sig"], dict) or len(item["sig"]) > 4:
                raise _bad(where, "a signature entry is malformed or repeated")
            sigs[kid] = {str(a): b64d(v, f"{where}: signature", "roster.invalid") for a, v in item["sig"].items()}
        roster = Roster(
            check_site(s["consortium"]),
            s["version"],
            _time.parse_time(s["expires"], "expires"),
            s["threshold"],
            admins,
            sites,
            revocations,
            sigs,
            recipients=recipients,
            format=s["format"],
            timestamp_keys=timestamp_keys,
        )
        same = roster.signed_bytes() == P.pae(PAYLOAD_TYPE, canonical_json(s))  # one encoding only
    except BundleError as e:
        if e.code.startswith("roster."):
            raise
        raise _bad(where, e.message) from None
    except ForgeError as e:  # canonical JSON refused a value
        raise _bad(where, e.message) from None
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad(where, f"missing or mistyped field {str(e)[:80]}") from None
    if not same:
        raise _bad(where, "it holds fields or orderings this toolkit does not write")
    return roster


def _text(value: object, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise TypeError(f"a text field is not a string of at most {limit} characters")
    return value


def read_roster(path: str | os.PathLike) -> Roster:
    """Parse a roster file without trusting it (see :func:`load_roster`)."""
    path = Path(path)
    try:
        raw = read_bounded_bytes(path, "roster", max_bytes=MAX_ROSTER, code_prefix="roster")
    except ForgeError as e:
        raise fail(e.code, e.message, e.fix or "restore it from a good copy") from None
    return _parsed(raw, str(path))


@functools.lru_cache(maxsize=16)
def _parsed(raw: bytes, path: str) -> Roster:
    """The parse of one roster file's bytes, remembered: a long-lived process (the hub, a batch of
    seals) parses, canonicalises and checks the signatures of one roster once. Only the parse is
    remembered (a pure function of the bytes; the Roster is frozen); every use is still trusted
    afresh (expiry, pinned root, rollback, fork) by :func:`~forge_secure.crypto.trust.trust`."""
    return replace(roster_from_bytes(raw, path), path=Path(path))


def roster_from_bytes(raw: bytes, where: str = "<roster>") -> Roster:
    """Parse the bytes of a roster file without trusting it (what :func:`read_roster` does after reading)."""
    if len(raw) > MAX_ROSTER:
        raise fail("roster.too_large", f"{where} is larger than {MAX_ROSTER} bytes", "give the roster file itself")
    try:
        doc = loads_bounded(raw, max_depth=8, max_int_digits=16, allow_floats=False)
    except ValueError as e:
        raise fail(
            "roster.invalid",
            f"roster {where} is not JSON within bounds ({e})",
            "restore the roster from a good copy or ask the consortium for it",
        ) from None
    return parse_roster(doc, where)


# --------------------------------------------------------------------------- editing (roster_edit.py)

from .roster_edit import (  # noqa: E402 - after the definitions it needs; re-exported
    add_admin_key,
    add_recipient,
    add_site_key,
    add_timestamp_key,
    init_roster,
    revoke_key,
    sign_roster,
)

_MOVED = ("load_roster", "pin_root", "trust", "trusted_rosters")


def __getattr__(name: str):
    """Trust (pinning, rotation, rollback) lives in :mod:`forge_secure.crypto.trust`; the old
    ``from forge_secure.crypto.roster import trust, load_roster`` keeps working."""
    if name in _MOVED:
        from . import trust as _trust

        return getattr(_trust, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Admin",
    "Recipient",
    "Revocation",
    "Roster",
    "SiteKey",
    "add_admin_key",
    "add_recipient",
    "add_site_key",
    "add_timestamp_key",
    "init_roster",
    "parse_roster",
    "read_roster",
    "revoke_key",
    "roster_from_bytes",
    "sign_roster",
]
