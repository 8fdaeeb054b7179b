"""The one exception hierarchy of forge-secure.

Every error a user can cause is a :class:`ForgeError`. It carries a stable reason
``code`` (for machines and tests), a ``message`` that names the bad value, and a
``fix`` that says what to do. Specific subclasses also inherit the matching built-in
exception, so ``except ValueError`` keeps working for library users.

The CLI prints ``str(error)`` on one line and exits 2; it never shows a traceback for a
``ForgeError``.
"""

from __future__ import annotations


class ForgeError(Exception):
    """Base class: a problem the user can fix. ``code`` is a dotted reason code."""

    default_code = "forge.error"

    def __init__(self, message: str, *, fix: str | None = None, code: str | None = None):
        self.message = message
        self.fix = fix
        self.code = code or self.default_code
        super().__init__(str(self))

    def __str__(self) -> str:  # one line: what is wrong, then what to do
        text = self.message.rstrip(".")
        if self.fix:
            fix = self.fix.rstrip(".")
            text += ". " + fix[:1].upper() + fix[1:] + "."
        else:
            text += "."
        return text

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "fix": self.fix}


class ForgeValueError(ForgeError, ValueError):
    """A bad argument or setting (unknown name, out-of-range number, inconsistent options)."""

    default_code = "value.invalid"


class ForgeConfigError(ForgeValueError):
    """A configuration file or dataclass that does not validate."""

    default_code = "config.invalid"


class ForgeDataError(ForgeValueError):
    """A data file that cannot be used (wrong shape, missing column, unreadable)."""

    default_code = "data.invalid"


class ForgeFileError(ForgeError, OSError):
    """A path that is missing, of the wrong type (file vs directory) or already in use."""

    default_code = "file.invalid"

    def __init__(self, message: str, *, fix: str | None = None, code: str | None = None):
        ForgeError.__init__(self, message, fix=fix, code=code)


class ForgeIntegrityError(ForgeError):
    """Something that was signed, hashed or authenticated does not check out."""

    default_code = "integrity.failed"


class ForgeBudgetError(ForgeError):
    """A differential-privacy budget would be exceeded, or a ledger is unusable."""

    default_code = "budget.exceeded"


class ForgeDependencyError(ForgeError, ImportError):
    """An optional dependency needed for the requested feature is missing."""

    default_code = "dependency.missing"

    def __init__(self, message: str, *, fix: str | None = None, code: str | None = None):
        ForgeError.__init__(self, message, fix=fix, code=code)
