"""`forge attack ...` sub-command of this suite. See forge_secure/cli/attack.py."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this suite's sub-command under `forge attack`."""
