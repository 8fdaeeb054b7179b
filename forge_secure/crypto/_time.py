"""UTC timestamps as the crypto documents store them: ``"2026-11-23T16:34:06Z"`` strings,
integer seconds in code (canonical JSON holds no floats)."""

from __future__ import annotations

import datetime as _dt
import re
import time

from .errors import fail

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def now() -> int:
    return int(time.time())


def format_time(seconds: int) -> str:
    return _dt.datetime.fromtimestamp(int(seconds), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object, what: str) -> int:
    """Parse an ISO 8601 UTC time ``YYYY-MM-DDTHH:MM:SSZ`` into integer seconds."""
    if not isinstance(text, str):
        raise fail(
            "time.invalid",
            f"{what} must be a time string like 2027-01-31T00:00:00Z, got {text!r}",
            "write the time in UTC as YYYY-MM-DDTHH:MM:SSZ",
        )
    try:
        value = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise fail(
            "time.invalid", f"{what} {text!r} is not a UTC time like 2027-01-31T00:00:00Z", "write the time in UTC as YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    return int(value.timestamp())


def parse_when(text: str, what: str, *, reference: int | None = None) -> int:
    """A time given on the command line: an ISO UTC time, or a duration from now (``90d``)."""
    m = _DURATION.match(text.strip())
    if m:
        return (now() if reference is None else reference) + int(m.group(1)) * _UNITS[m.group(2)]
    return parse_time(text.strip(), what)
