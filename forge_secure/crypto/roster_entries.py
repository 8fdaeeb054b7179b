"""The entries of a roster (an admin, a site key, a recipient, a revocation) and the constants of
its format. The roster itself, its parsing and its checks are in :mod:`forge_secure.crypto.roster`,
which re-exports these names."""

from __future__ import annotations

from dataclasses import dataclass

from . import _primitives as P
from . import _time
from .errors import fail
from .keys import PublicKey, SigningPublicKey, b64e, check_site
from .keys import key_id as _key_id

FORMAT = "forge-roster/2"
FORMAT_V1 = "forge-roster/1"
FORMATS = (FORMAT_V1, FORMAT)
PAYLOAD_TYPE = "application/vnd.forge.roster+json"
MAX_ROSTER = 4 << 20
RECIPIENT_ROLES = ("consortium", "auditor", "site")  # site: the auditor seals canary grants to it


@dataclass(frozen=True)
class Recipient:
    """An encryption key that bundles may be sealed to."""

    name: str
    role: str
    kem: str
    public_key: bytes

    def __post_init__(self):
        check_site(self.name)
        if self.role not in RECIPIENT_ROLES:
            raise fail(
                "roster.invalid",
                f"recipient role {str(self.role)[:40]!r} is not one of {list(RECIPIENT_ROLES)}",
                "give --role consortium or --role auditor",
            )
        if not isinstance(self.kem, str) or self.kem not in P.KEMS:
            raise fail(
                "roster.invalid",
                f"recipient key encapsulation {str(self.kem)[:40]!r} is not supported",
                f"use one of: {', '.join(P.KEMS.names())}",
            )
        try:
            P.KEMS.get(self.kem).public_from_raw(self.public_key)
        except ValueError as e:
            raise fail(
                "roster.invalid", f"the {self.kem} recipient key of {self.name} is not valid ({e})", "restore the roster from a good copy"
            ) from None

    @property
    def key_id(self) -> str:
        return _key_id(self.public_key)

    @classmethod
    def from_public(cls, pub: PublicKey, role: str = "consortium") -> Recipient:
        return cls(pub.site, role, pub.kem, pub.encryption_key)

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "key_id": self.key_id, "kem": self.kem, "public_key": b64e(self.public_key)}


@dataclass(frozen=True)
class SiteKey:
    site: str
    key: SigningPublicKey
    not_before: int
    not_after: int

    def to_dict(self) -> dict:
        return {
            "site": self.site,
            "key_id": self.key.key_id,
            **self.key.to_dict(),
            "not_before": _time.format_time(self.not_before),
            "not_after": _time.format_time(self.not_after),
        }


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
