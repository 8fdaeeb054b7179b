"""`forge attack mia|recon`: the attack suites. Each suite registers its own sub-command."""

from __future__ import annotations

import argparse

from . import attack_mia, attack_recon


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="run a membership-inference or reconstruction attack on a plugin or merged model")
    attack_sub = p.add_subparsers(dest="attack_command", metavar="SUITE", required=True)
    attack_mia.register(attack_sub)
    attack_recon.register(attack_sub)
