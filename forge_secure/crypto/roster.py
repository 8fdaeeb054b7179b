"""The consortium's trust roster: who may sign submissions, and until when.

A roster is a signed, versioned JSON document in the manner of The Update Framework's
root metadata (Samuel, Mathewson, Cappos, Dingledine, "Survivable key compromise in
software update systems", CCS 2010; TUF specification 1.0)::

    {"signed": {"format": "forge-roster/1", "consortium": "...", "version": 3,
                "expires": "2027-11-23T00:00:00Z", "threshold": 1,
                "admins": [{"name", "key_id", "algorithms", "public_keys"}],
                "sites": [{"site", "key_id", "algorithms", "public_keys", "not_before", "not_after"}],
                "revocations": [{"key_id", "revoked", "reason"}]},
     "signatures": [{"keyid": "<admin key id>", "sig": {"ed25519": "<b64>", ...}}]}

Signatures are over the DSSE PAE of the canonical JSON of ``signed`` (payload type
``application/vnd.forge.roster+json``); a hybrid admin key must sign with both algorithms.
A roster is trusted when a threshold of its admins signed it and it has not expired. The
client remembers, under ``forge_home()``, the highest version it trusted for each
consortium with its admin keys: a lower version is refused (rollback), the same version with
other content is refused (fork), and a roster that changes the admins or threshold must also
be signed by a threshold of the previously trusted admins (TUF root rotation).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from filelock import FileLock

from ..fileio import atomic_write_bytes, atomic_write_json, canonical_json, sha256_bytes
from ..home import forge_home
from . import _primitives as P
from . import _time
from .errors import BundleError, fail
from .keys import PrivateKey, PublicKey, SigningPublicKey, b64d, b64e, check_site

FORMAT = "forge-roster/1"
PAYLOAD_TYPE = "application/vnd.forge.roster+json"
MAX_ROSTER = 16 << 20


@dataclass(frozen=True)
class SiteKey:
    site: str
    key: SigningPublicKey
    not_before: int
    not_after: int

    def to_dict(self) -> dict:
        return {"site": self.site, "key_id": self.key.key_id, **self.key.to_dict(),
                "not_before": _time.format_time(self.not_before), "not_after": _time.format_time(self.not_after)}


@dataclass(frozen=True)
class Admin:
    name: str
    key: SigningPublicKey

    def to_dict(self) -> dict:
        return {"name": self.name, "key_id": self.key.key_id, **self.key.to_dict()}


@dataclass(frozen=True)
class Revocation:
    key_id: str
    revoked: int
    reason: str

    def to_dict(self) -> dict:
        return {"key_id": self.key_id, "revoked": _time.format_time(self.revoked), "reason": self.reason}


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

    def __post_init__(self):
        check_site(self.consortium)
        if not isinstance(self.version, int) or self.version < 1:
            raise fail("roster.invalid", f"roster version {self.version!r} is not a positive integer", "rebuild the roster")
        if not self.admins:
            raise fail("roster.invalid", "the roster lists no admin keys", "give at least one --admin public key")
        ids = [a.key.key_id for a in self.admins]
        if len(set(ids)) != len(ids):
            raise fail("roster.invalid", "an admin key is listed twice", "list each admin key once")
        site_ids = [s.key.key_id for s in self.sites]
        if len(set(site_ids)) != len(site_ids):
            raise fail("roster.invalid", "a site key is listed twice", "list each site key once")
        if not isinstance(self.threshold, int) or not 1 <= self.threshold <= len(self.admins):
            raise fail("roster.threshold", f"threshold {self.threshold!r} must be between 1 and the {len(self.admins)} admin keys",
                       "give --threshold between 1 and the number of admins")

    # ------------------------------------------------------------ serialisation
    def signed_dict(self) -> dict:
        return {
            "format": FORMAT,
            "consortium": self.consortium,
            "version": self.version,
            "expires": _time.format_time(self.expires),
            "threshold": self.threshold,
            "admins": sorted((a.to_dict() for a in self.admins), key=lambda d: d["key_id"]),
            "sites": sorted((s.to_dict() for s in self.sites), key=lambda d: (d["site"], d["key_id"])),
            "revocations": sorted((r.to_dict() for r in self.revocations), key=lambda d: d["key_id"]),
        }

    def signed_bytes(self) -> bytes:
        return P.pae(PAYLOAD_TYPE, canonical_json(self.signed_dict()))

    @property
    def digest(self) -> str:
        return sha256_bytes(self.signed_bytes())

    def to_document(self) -> dict:
        return {
            "signed": self.signed_dict(),
            "signatures": [{"keyid": k, "sig": {a: b64e(s) for a, s in sorted(sig.items())}}
                           for k, sig in sorted(self.signatures.items())],
        }

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(path, (json.dumps(self.to_document(), indent=2, sort_keys=True) + "\n").encode("utf-8"))

    # ------------------------------------------------------------ queries
    def valid_signers(self, admins: tuple[Admin, ...] | None = None) -> set[str]:
        """Key ids of ``admins`` (default: this roster's) with a valid signature."""
        message = self.signed_bytes()
        return {a.key.key_id for a in (admins or self.admins)
                if a.key.key_id in self.signatures and a.key.verify_all(message, self.signatures[a.key.key_id])}

    def revoked(self, key_id: str) -> Revocation | None:
        return next((r for r in self.revocations if r.key_id == key_id), None)

    def site_key(self, key_id: str) -> SiteKey | None:
        return next((s for s in self.sites if s.key.key_id == key_id), None)

    def listed_key(self, key_id: str) -> SiteKey:
        """The site entry of ``key_id``; raises ``bundle.revoked`` or ``bundle.untrusted_signer``."""
        rev = self.revoked(key_id)
        if rev is not None:
            raise fail("bundle.revoked", f"signer key {key_id[:16]}... was revoked on {_time.format_time(rev.revoked)} ({rev.reason})",
                       "do not use this bundle; ask the site to seal again with its new key")
        entry = self.site_key(key_id)
        if entry is None:
            raise fail("bundle.untrusted_signer", f"signer key {key_id[:16]}... is not in roster version {self.version} of {self.consortium}",
                       "add the site's public key with 'forge roster add' and sign the roster, or check you have the current roster")
        return entry

    def check_signer(self, key_id: str, site: str, created: int, now: int) -> SiteKey:
        """The roster entry that lets ``key_id`` sign for ``site`` at ``created`` and now."""
        entry = self.listed_key(key_id)
        if entry.site != site:
            raise fail("bundle.untrusted_signer", f"signer key {key_id[:16]}... belongs to site {entry.site!r}, but the bundle claims site {site!r}",
                       "do not use this bundle; it claims another site's identity")
        for when, label in ((created, "when the bundle was sealed"), (now, "now")):
            if not entry.not_before <= when <= entry.not_after:
                raise fail("bundle.expired_key",
                           f"signer key of {site} is valid from {_time.format_time(entry.not_before)} to "
                           f"{_time.format_time(entry.not_after)}, not {label} ({_time.format_time(when)})",
                           "ask the consortium to renew the site's key in the roster, and the site to seal again")
        return entry

    def describe(self, now: int | None = None) -> dict:
        now = _time.now() if now is None else now
        signers = self.valid_signers()
        return {
            "consortium": self.consortium, "version": self.version, "expires": _time.format_time(self.expires),
            "expired": now > self.expires, "threshold": self.threshold, "valid_signatures": len(signers),
            "trusted": len(signers) >= self.threshold and now <= self.expires,
            "admins": [{"name": a.name, "key_id": a.key.key_id, "signed": a.key.key_id in signers} for a in self.admins],
            "sites": [{"site": s.site, "key_id": s.key.key_id, "algorithms": list(s.key.algorithms),
                       "not_before": _time.format_time(s.not_before), "not_after": _time.format_time(s.not_after),
                       "revoked": self.revoked(s.key.key_id) is not None} for s in self.sites],
            "revocations": [r.to_dict() for r in self.revocations],
            "sha256": self.digest,
        }


# --------------------------------------------------------------------------- parsing


def _bad(path, why: str) -> BundleError:
    return fail("roster.invalid", f"roster {path} is not valid ({why})", "restore the roster from a good copy or ask the consortium for it")


def parse_roster(doc: object, where: str) -> Roster:
    if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict) or not isinstance(doc.get("signatures"), list):
        raise fail("roster.wrong_type", f"{where} is not a forge roster", "give the roster file written by 'forge roster init'")
    s = doc["signed"]
    if s.get("format") != FORMAT:
        raise fail("roster.version", f"{where} has roster format {s.get('format')!r}, this toolkit reads {FORMAT}",
                   "use a roster written by this version of forge-secure")
    try:
        admins = tuple(Admin(str(a["name"]), SigningPublicKey.from_dict(a, f"{where}: admin", "roster.invalid")) for a in s["admins"])
        sites = tuple(
            SiteKey(check_site(e["site"]), SigningPublicKey.from_dict(e, f"{where}: site key", "roster.invalid"),
                    _time.parse_time(e["not_before"], "not_before"), _time.parse_time(e["not_after"], "not_after"))
            for e in s["sites"])
        revocations = tuple(Revocation(str(r["key_id"]), _time.parse_time(r["revoked"], "revoked"), str(r["reason"]))
                            for r in s["revocations"])
        for entry in (*s["admins"], *s["sites"]):
            if entry.get("key_id") != SigningPublicKey.from_dict(entry, where, "roster.invalid").key_id:
                raise _bad(where, f"stated key id {entry.get('key_id')!r} does not match its keys")
        sigs: dict[str, dict[str, bytes]] = {}
        for item in doc["signatures"]:
            kid = item["keyid"]
            if not isinstance(kid, str) or kid in sigs or not isinstance(item["sig"], dict):
                raise _bad(where, "a signature entry is malformed or repeated")
            sigs[kid] = {str(a): b64d(v, f"{where}: signature", "roster.invalid") for a, v in item["sig"].items()}
        roster = Roster(check_site(s["consortium"]), s["version"], _time.parse_time(s["expires"], "expires"),
                        s["threshold"], admins, sites, revocations, sigs)
    except BundleError as e:
        if e.code.startswith("roster."):
            raise
        raise _bad(where, e.message) from None
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad(where, f"missing or mistyped field {e}") from None
    if canonical_json(roster.signed_dict()) != canonical_json(s):
        raise _bad(where, "it holds fields or orderings this toolkit does not write")
    return roster


def read_roster(path: str | os.PathLike) -> Roster:
    """Parse a roster file without trusting it (see :func:`load_roster`)."""
    path = Path(path)
    if path.is_dir():
        raise fail("file.is_directory", f"roster {path} is a directory", "give the path of the roster file itself")
    if not path.exists():
        raise fail("file.missing", f"roster {path} does not exist", "check the path")
    size = path.stat().st_size
    if size == 0:
        raise fail("file.empty", f"roster {path} is empty", "restore it from a good copy")
    if size > MAX_ROSTER:
        raise fail("roster.wrong_type", f"{path} is {size} bytes, far too large for a roster", "give the roster file")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise fail("roster.invalid", f"roster {path} is not JSON (truncated or of the wrong type)",
                   "restore the roster from a good copy or ask the consortium for it") from None
    return replace(parse_roster(doc, str(path)), path=path)


# --------------------------------------------------------------------------- trust


def _state_path(consortium: str, state_dir: str | os.PathLike | None) -> Path:
    root = Path(state_dir) if state_dir is not None else forge_home() / "roster"
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{consortium}.json"


def trust(roster: Roster, *, now: int | None = None, state_dir: str | os.PathLike | None = None, remember: bool = True) -> Roster:
    """Check that ``roster`` is trusted now and not older than one already seen; remember it.

    Raises ``roster.signature`` (too few admin signatures), ``roster.expired``,
    ``roster.rollback``, ``roster.fork`` or ``roster.rotation``.
    """
    now = _time.now() if now is None else now
    signers = roster.valid_signers()
    if len(signers) < roster.threshold:
        raise fail("roster.signature", f"roster version {roster.version} has {len(signers)} valid admin signatures, "
                   f"{roster.threshold} needed", "have the admins sign it with 'forge roster sign', or restore a good copy")
    if now > roster.expires:
        raise fail("roster.expired", f"roster version {roster.version} expired on {_time.format_time(roster.expires)}",
                   "get the current roster from the consortium (admins: renew it with 'forge roster sign --expires 365d')")
    state_file = _state_path(roster.consortium, state_dir)
    with FileLock(str(state_file) + ".lock", timeout=60):
        state = None
        if state_file.exists():
            try:
                state = json.loads(state_file.read_text())
                seen_version, seen_digest = int(state["version"]), str(state["sha256"])
                old_admins = tuple(Admin(a["name"], SigningPublicKey.from_dict(a, "roster state")) for a in state["admins"])
                old_threshold = int(state["threshold"])
            except (ValueError, KeyError, TypeError, BundleError):
                raise fail("roster.state", f"the remembered roster state {state_file} is damaged",
                           "restore it from a backup; deleting it trusts the next roster on first use") from None
            if roster.version < seen_version:
                raise fail("roster.rollback", f"roster version {roster.version} is older than version {seen_version} already seen",
                           "get the current roster from the consortium; an old roster may hide revocations")
            if roster.version == seen_version and roster.digest != seen_digest:
                raise fail("roster.fork", f"roster version {roster.version} differs from the version {seen_version} already seen",
                           "ask the consortium which roster is genuine; two rosters with one version number should never exist")
            rotated = ({a.key.key_id for a in old_admins} != {a.key.key_id for a in roster.admins}
                       or old_threshold != roster.threshold)
            if rotated and len(roster.valid_signers(old_admins)) < old_threshold:
                raise fail("roster.rotation", f"roster version {roster.version} changes the admin keys but is not signed "
                           f"by {old_threshold} of the admins already trusted", "have the previous admins sign it too")
        if remember and (state is None or roster.version > seen_version):
            atomic_write_json(state_file, {
                "consortium": roster.consortium, "version": roster.version, "sha256": roster.digest,
                "threshold": roster.threshold, "admins": [a.to_dict() for a in roster.admins],
                "seen": _time.format_time(now),
            })
    return roster


def load_roster(path_or_roster, *, now: int | None = None, state_dir: str | os.PathLike | None = None,
                remember: bool = True) -> Roster:
    """Read (if a path) and :func:`trust` a roster."""
    roster = path_or_roster if isinstance(path_or_roster, Roster) else read_roster(path_or_roster)
    return trust(roster, now=now, state_dir=state_dir, remember=remember)


# --------------------------------------------------------------------------- editing


def init_roster(out: str | os.PathLike, consortium: str, admins: list[PublicKey], *, threshold: int = 1,
                expires: int) -> Roster:
    """Write a new, unsigned roster version 1 (sign it with :func:`sign_roster`)."""
    out = Path(out)
    if out.exists():
        raise fail("roster.exists", f"{out} already exists", "choose another --out, or edit it with 'forge roster add/revoke'")
    roster = Roster(consortium, 1, expires, threshold, tuple(Admin(a.site, a.signing) for a in admins))
    roster.write(out)
    return roster


def _bump(roster: Roster, expires: int | None, **changes) -> Roster:
    """A new version: edits drop every signature (the admins sign the new content)."""
    return replace(roster, version=roster.version + 1, signatures={},
                   expires=roster.expires if expires is None else expires, **changes)


def add_site_key(path: str | os.PathLike, key: PublicKey, *, not_before: int, not_after: int,
                 expires: int | None = None) -> Roster:
    roster = read_roster(path)
    if not_after <= not_before:
        raise fail("roster.window", "--not-after must be later than --not-before", "give a validity window that is not empty")
    if roster.site_key(key.key_id) or roster.revoked(key.key_id):
        raise fail("roster.duplicate", f"key {key.key_id[:16]}... of {key.site} is already in the roster (or revoked)",
                   "give a new key; a revoked key cannot come back")
    new = _bump(roster, expires, sites=roster.sites + (SiteKey(key.site, key.signing, not_before, not_after),))
    new.write(path)
    return new


def add_admin_key(path: str | os.PathLike, key: PublicKey, *, threshold: int | None = None,
                  expires: int | None = None) -> Roster:
    roster = read_roster(path)
    new = _bump(roster, expires, admins=roster.admins + (Admin(key.site, key.signing),),
                threshold=roster.threshold if threshold is None else threshold)
    new.write(path)
    return new


def revoke_key(path: str | os.PathLike, key_id: str, *, reason: str, at: int | None = None,
               expires: int | None = None) -> Roster:
    roster = read_roster(path)
    if not roster.site_key(key_id):
        known = ", ".join(f"{s.site}:{s.key.key_id[:16]}" for s in roster.sites) or "none"
        raise fail("roster.unknown_key", f"no site key with id {key_id!r} in the roster",
                   f"give the full key id of one of the site keys ({known})")
    if roster.revoked(key_id):
        raise fail("roster.duplicate", f"key {key_id[:16]}... is already revoked", "nothing to do")
    new = _bump(roster, expires, revocations=roster.revocations + (Revocation(key_id, _time.now() if at is None else at, reason),))
    new.write(path)
    return new


def sign_roster(path: str | os.PathLike, key: PrivateKey, *, expires: int | None = None) -> Roster:
    """Add (or replace) the signature of admin ``key``. With ``expires``, first make a new
    version with that expiry (dropping the old signatures), e.g. to renew an expiring roster."""
    roster = read_roster(path)
    if expires is not None:
        roster = _bump(roster, expires)
    pub = key.signing_public()
    if pub.key_id not in {a.key.key_id for a in roster.admins}:
        raise fail("roster.not_admin", f"key {pub.key_id[:16]}... ({key.site}) is not an admin of this roster",
                   "sign with one of the admin keys listed by 'forge roster show'")
    new = replace(roster, signatures={**roster.signatures, pub.key_id: key.sign_all(roster.signed_bytes())})
    new.write(path)
    return new


__all__ = ["Admin", "Revocation", "Roster", "SiteKey", "add_admin_key", "add_site_key", "init_roster", "load_roster",
           "read_roster", "revoke_key", "sign_roster", "trust"]
