"""The ``forge`` command. Thin: it parses, calls the library, prints.

Each area of the toolkit registers its sub-commands from its own module in this package
(``train``, ``crypto``, ``merge``, ``attack``, ``audit``, ``bench``, ``demo``), so the
areas stay apart; this module only builds the parser and turns errors into one line and
an exit code (2 for a usage problem or an error the user can fix).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..errors import ForgeError
from . import _common

# area modules, each with ``register(subparsers)``
AREAS = ("train", "crypto", "merge", "attack", "audit", "bench", "demo", "hub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forge",
        description="forge-secure: DP LoRA plugins, sealed submissions, merges, leakage attacks and audits.",
    )
    parser.add_argument("--version", action="version", version=f"forge-secure {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        module = importlib.import_module(f"{__name__}.{area}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _common.configure(args)
    try:
        code = args.func(args)
        return int(code or 0)
    except ForgeError as e:
        _common.print_error(e, args)
        return 2
    except KeyboardInterrupt:
        _common.console_err.print(_common.styled(("interrupted", "red"), ": nothing was written"))
        return 130
    except Exception as e:  # a bug, not bad input: say so, keep it one line unless --debug
        if getattr(args, "debug", False):
            raise
        _common.console_err.print(
            _common.styled(
                ("internal error", "red"),
                f": {e.__class__.__name__}: {e}. This is a bug in forge-secure; rerun with --debug and report the traceback.",
            )
        )
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
