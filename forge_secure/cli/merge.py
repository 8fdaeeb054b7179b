"""`forge` sub-commands of this area. See forge_secure/cli/__init__.py."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this area's sub-commands to the `forge` parser."""
