"""Sealed submissions: keys, the trust roster, and signed, encrypted bundles.

The recipe layer, in the manner of ``cryptography.fernet``::

    from forge_secure.crypto import seal, verify, open_bundle
    seal("plugins/site-1", "keys/site-1/signing.key", "keys/consortium/public.json", "site-1.forge")
    info = verify("site-1.forge", "roster.json")                 # needs no secret
    opened = open_bundle("site-1.forge", "keys/consortium/decryption.key", "roster.json", "inbox/site-1")

Every failure raises :class:`BundleError` with a reason ``code``. The raw primitives live in
``forge_secure.crypto._primitives`` and are not part of the API.
"""

from .bundle import Opened, Verified, open_bundle, seal, verify
from .errors import BundleError
from .keys import PrivateKey, PublicKey, load_decryption_key, load_public_key, load_signing_key, new_keys, read_passphrase
from .replay import ReplayStore, SequenceCounter
from .roster import Recipient, Roster, add_admin_key, add_recipient, add_site_key, init_roster, read_roster, revoke_key, sign_roster
from .trust import load_roster, pin_root, trusted_rosters

__all__ = [
    "BundleError",
    "Opened",
    "PrivateKey",
    "PublicKey",
    "Recipient",
    "ReplayStore",
    "Roster",
    "SequenceCounter",
    "Verified",
    "add_admin_key",
    "add_recipient",
    "add_site_key",
    "pin_root",
    "trusted_rosters",
    "init_roster",
    "load_decryption_key",
    "load_public_key",
    "load_roster",
    "load_signing_key",
    "new_keys",
    "open_bundle",
    "read_passphrase",
    "read_roster",
    "revoke_key",
    "seal",
    "sign_roster",
    "verify",
]
