"""The one codec for non-finite numbers (an epsilon without DP is infinite).

JSON has no literal for infinity or NaN, and canonical JSON (RFC 8785, what the toolkit
signs) has no floats at all. Every writer of numbers that may be non-finite encodes them
here, and every reader decodes them here:

- :func:`encode` / :func:`jsonable` (plain JSON: ``forge.json``, reports, results): a
  finite float stays a float; ``inf``, ``-inf`` and ``nan`` become the strings ``"inf"``,
  ``"-inf"`` and ``"nan"``; numpy scalars become Python numbers.
- ``encode(x, text=True)`` / ``jsonable(obj, canonical=True)`` (signed canonical JSON: a
  bundle's DP claim, the hub ledger): every float becomes its ``repr`` (``"1.1"``), the
  non-finite ones the same strings as above; integers a double cannot hold exactly become
  their decimal text.
- :func:`decode` reads all of these back, and what older files hold (``"Infinity"``,
  ``"+inf"``, a number's ``repr``), into a Python ``float``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

MAX_SAFE_INT = (1 << 53) - 1  # RFC 8785 / I-JSON: integers a double holds exactly

_WORDS = {
    "inf": math.inf,
    "+inf": math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
    "nan": math.nan,
}


@overload
def encode(x: float, *, text: Literal[True]) -> str: ...
@overload
def encode(x: float, *, text: Literal[False] = ...) -> float | str: ...
@overload
def encode(x: float, *, text: bool) -> float | str: ...


def encode(x: float, *, text: bool = False) -> float | str:
    """One number for JSON: a finite float as it is (``text``: its ``repr``); a non-finite one
    as ``"inf"``, ``"-inf"`` or ``"nan"``."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x) if text else x


def decode(value: Any) -> float:
    """A number as any encoder of the toolkit wrote it, as a float (``"inf"`` -> ``math.inf``).

    Raises :class:`ValueError` for anything else (a bool, ``None``, a word, a list)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return decode(value.item())
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _WORDS:
            return _WORDS[word]
        try:
            return float(word)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a number")


def jsonable(obj: Any, *, canonical: bool = False) -> Any:
    """``obj`` with every number encoded by :func:`encode` (dicts, lists and tuples walked).

    ``canonical``: floats as their ``repr`` and integers beyond 2**53 - 1 as decimal text, as
    canonical JSON requires; other non-JSON values become their ``str``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, canonical=canonical) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, canonical=canonical) for v in obj]
    if not canonical and hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float):
        return encode(obj, text=canonical) if canonical or not math.isfinite(obj) else obj
    if canonical:
        if isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) > MAX_SAFE_INT:
            return str(obj)
        if obj is None or isinstance(obj, (str, int, bool)):
            return obj
        return str(obj)
    return obj
