"""Shared CLI plumbing: consoles, ``--json`` output, error printing.

No outside text is ever read as markup: both consoles are made with ``markup=False`` and
``highlight=False``, so a path, a site name, a consortium name or a plugin's forge.json field
such as ``[/x]`` or ``[link=...]`` prints as itself (tables included; rich renders their
strings with the console's setting). Emphasis comes from styles (``print(text,
style="bold")`` or :func:`styled`), never from markup in an f-string. Nothing is a format
string either: messages are built with f-strings from values, never ``text.format(...)``
or ``%`` on outside text."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from rich.console import Console
from rich.markup import escape as _escape
from rich.text import Text

from .. import progress
from ..errors import ForgeError
from ..numbers import encode

console = Console(markup=False, highlight=False, emoji=False)
console_err = Console(stderr=True, markup=False, highlight=False, emoji=False)


def escape(text: object) -> str:
    """``text`` made safe for a place that does read markup (a rich Console of another module made
    with markup on). The consoles here need none of it."""
    return _escape(str(text))


def styled(*parts: tuple[object, str] | object) -> Text:
    """A line of plain text pieces, each optionally with a style: ``styled(("error", "bold red"), ": ", msg)``.
    The pieces are never parsed as markup."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            text.append(str(part[0]), style=part[1])
        else:
            text.append(str(part))
    return text


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def add_passphrase_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str, *, prefix: str = "") -> None:
    """``--{prefix}passphrase-file FILE`` or ``--{prefix}passphrase-env VAR`` (one of them): the
    passphrase of ``what`` (a key), read with :func:`passphrase`."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(f"--{prefix}passphrase-file", metavar="FILE", help=f"passphrase of {what}, from the first line of FILE")
    g.add_argument(f"--{prefix}passphrase-env", metavar="VAR", help=f"passphrase of {what}, from environment variable VAR")


def passphrase(args: argparse.Namespace, *, prefix: str = "") -> bytes | None:
    """The passphrase given with the flags of :func:`add_passphrase_flags` (None when neither was)."""
    from ..crypto import read_passphrase

    dest = prefix.replace("-", "_")
    return read_passphrase(getattr(args, f"{dest}passphrase_file"), getattr(args, f"{dest}passphrase_env"))


def configure(args: argparse.Namespace) -> None:
    progress.enable(not getattr(args, "json", False) and console_err.is_terminal)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return encode(obj)  # "inf", "nan": JSON has no literal for them (the one codec)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return obj


def emit_json(obj: Any) -> None:
    print(json.dumps(_jsonable(obj), indent=2, sort_keys=True))


def print_error(e: ForgeError, args: argparse.Namespace) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": e.to_dict()}, sort_keys=True))
    else:
        console_err.print(styled(("error", "bold red"), " ", (f"({e.code})", "dim"), f": {e}"), soft_wrap=True)
