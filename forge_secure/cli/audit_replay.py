"""`forge audit replay` and `forge audit canaries issue`: the on-site auditor's own tools.
Thin: parse, call :mod:`forge_secure.privacy.replay` / :mod:`forge_secure.privacy.canaries`, print.

``forge audit replay`` exits 0 when the plugin is verified by replay, 1 when the replay
contradicts it, 2 when it could not run (missing, damaged or foreign envelope, bad key).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _common


def register_under(audit_sub: argparse._SubParsersAction) -> None:
    """Add ``replay`` and ``canaries`` under ``forge audit``."""
    r = audit_sub.add_parser(
        "replay",
        help="re-run a plugin's training from its replay envelope and verify every claim",
        description="Open the replay envelope sealed to you (the auditor), re-run the site's training from its secret and recipe "
        "on the data you hold, and compare every DP claim and the released weights. Exit 0 verified, 1 contradicted, "
        "2 could not run.",
    )
    r.add_argument("envelope", type=Path, metavar="ENVELOPE", help="<plugin>.replay.forge (written by forge train --auditor)")
    r.add_argument("--plugin", type=Path, required=True, metavar="DIR", help="the released plugin directory")
    r.add_argument("--key", type=Path, required=True, metavar="KEY", help="the auditor's decryption.key")
    r.add_argument("--roster", type=Path, required=True, help="the consortium roster (checks the site's signature)")
    r.add_argument("--data", metavar="DATA", help="the site's data to replay on (default: the source the envelope names)")
    r.add_argument("--canary-record", type=Path, metavar="RECORD", help="your canary record, when the site inserted your canaries")
    r.add_argument("--tolerance", type=float, help="relative L2 distance of the adapters allowed off-platform (default 1e-4)")
    _common.add_passphrase_flags(r, "--key")
    _common.add_json_flag(r)
    r.set_defaults(func=cmd_replay)

    c = audit_sub.add_parser("canaries", help="issue canaries to a site (half held back) for the one-run audit")
    csub = c.add_subparsers(dest="canaries_command", metavar="ACTION", required=True)
    i = csub.add_parser(
        "issue",
        help="draw canaries under your secret and seal to the site only those to insert",
        description="Draw --count canaries shaped like the site's data and a fair coin for each from a fresh secret; write your "
        "private record (keep it: the audit needs it) and seal to the site a grant with only the canaries whose coin came up "
        "heads. The site inserts them with forge train --canary-grant; it never learns which were held back.",
    )
    i.add_argument("--site", required=True, help="the site that receives the grant")
    i.add_argument("--count", type=int, help="number of canaries drawn (default 256; about half are inserted)")
    i.add_argument("--like", required=True, metavar="DATA", help="data shaped like the site's: bundled:site-1, a CSV, or a .npz")
    i.add_argument("--label-column", help="label column of a CSV (default: label)")
    i.add_argument("--signer", type=Path, required=True, metavar="KEY", help="your (the auditor's) signing.key")
    i.add_argument(
        "--site-key", type=Path, required=True, metavar="PUBLIC_JSON", help="the site's public.json (the grant is encrypted to it)"
    )
    i.add_argument("--out", type=Path, required=True, metavar="GRANT", help="the sealed grant to send to the site (.forge)")
    i.add_argument("--record", type=Path, required=True, metavar="RECORD", help="your private record (JSON, written 0600)")
    i.add_argument(
        "--roster",
        type=Path,
        help="the consortium roster that lists the site's key as a recipient (default: the latest roster trusted on this machine)",
    )
    _common.add_passphrase_flags(i, "--signer")
    _common.add_json_flag(i)
    i.set_defaults(func=cmd_canaries_issue)


def cmd_replay(args: argparse.Namespace) -> int:
    from ..privacy.canaries import read_record
    from ..privacy.replay import DEFAULT_TOLERANCE, assemble_data, open_replay_envelope, replay

    recipe = open_replay_envelope(args.envelope, key=args.key, roster=args.roster, passphrase=_common.passphrase(args))
    record = read_record(args.canary_record) if args.canary_record else None
    data = assemble_data(recipe, spec=args.data, canary_record=record)
    result = replay(recipe, args.plugin, data, tolerance=DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance)
    if args.json:
        _common.emit_json(result.to_dict())
    else:
        from rich.markup import escape

        colour = "green" if result.verified else "red"
        word = "VERIFIED BY REPLAY" if result.verified else "NOT VERIFIED"
        _common.console.print(
            f"[bold {colour}]{word}[/bold {colour}] {escape(str(args.plugin))}: {escape(result.message)}",
            highlight=False,
            soft_wrap=True,
            markup=True,
        )
        for c in result.comparisons:
            if not c.ok:
                _common.console.print(
                    f"  [red]{escape(c.field)}[/red]: claimed {escape(repr(c.claimed))}, recipe {escape(repr(c.replayed))}",
                    highlight=False,
                    soft_wrap=True,
                    markup=True,
                )
        _common.console.print(
            f"  {len(result.comparisons)} claims compared; replay took {result.seconds:.1f} s"
            + ("" if result.same_environment else " (another platform or library versions than the site's)"),
            highlight=False,
        )
    return 0 if result.verified else 1


def cmd_canaries_issue(args: argparse.Namespace) -> int:
    from ..crypto.keys import load_signing_key
    from ..fileio import atomic_write_bytes
    from ..plugins.data import load_data
    from ..privacy.canaries import DEFAULT_COUNT, issue_record, write_grant

    for path in (args.out, args.record):
        if path.exists():
            from ..errors import ForgeFileError

            raise ForgeFileError(
                f"{path} already exists", fix="choose a new path; grants and records are never overwritten", code="file.exists"
            )
    signer = load_signing_key(args.signer, _common.passphrase(args))
    like = load_data(args.like, label_column=args.label_column)
    record = issue_record(args.site, DEFAULT_COUNT if args.count is None else args.count, like)
    write_grant(record, signer=signer, site_key=args.site_key, out=args.out, roster=args.roster)
    import json

    atomic_write_bytes(args.record, json.dumps(record, sort_keys=True, indent=1).encode(), mode=0o600)
    summary = {
        "site": args.site,
        "count": record["count"],
        "included": record["included"],
        "grant": str(args.out),
        "record": str(args.record),
        "grant_id": record["grant_id"],
    }
    if args.json:
        _common.emit_json(summary)
    else:
        _common.console.print(
            f"issued {record['count']} canaries to {args.site}: {record['included']} sealed to the site in "
            f"{args.out}, the other {record['count'] - record['included']} held back. Keep "
            f"{args.record} private: the audit needs it (forge audit --canary-record).",
            highlight=False,
            soft_wrap=True,
        )
    return 0
