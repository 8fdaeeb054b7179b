"""Shared CLI plumbing: consoles, ``--json`` output, error printing."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from rich.console import Console

from .. import progress
from ..errors import ForgeError

console = Console()
console_err = Console(stderr=True)


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def configure(args: argparse.Namespace) -> None:
    progress.enable(not getattr(args, "json", False) and console_err.is_terminal)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return str(obj)  # "inf", "nan": JSON has no literal for them
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
        console_err.print(f"[bold red]error[/bold red] [dim]({e.code})[/dim]: {e}", highlight=False, soft_wrap=True)
