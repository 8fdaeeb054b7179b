"""The one error type of the crypto area.

Every bad bundle, key file, roster or replay raises :class:`BundleError` with a dotted
reason ``code`` (``bundle.truncated``, ``bundle.signature``, ``roster.rollback``,
``key.bad_passphrase``, ...), a message naming the bad value and a fix. Callers (and the
CLI) catch this one type; tests match on ``code``.
"""

from __future__ import annotations

from ..errors import ForgeIntegrityError


class BundleError(ForgeIntegrityError):
    """A sealed bundle, key, roster or replay store that cannot be trusted or used."""

    default_code = "bundle.invalid"


def fail(code: str, message: str, fix: str) -> BundleError:
    """Build a :class:`BundleError` (``raise fail(...)``) so call sites stay one line."""
    return BundleError(message, fix=fix, code=code)
