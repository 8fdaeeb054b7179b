"""`forge audit` and `forge verify-report`. Thin: parse, call :mod:`audits`, print.

Exit codes: ``forge audit`` 0 = the audit passed (possibly with INCONCLUSIVE checks, which it
prints, when the policy does not count them as failures), 1 = it failed, 2 = it could not run
(bad policy, missing evidence, bad key, existing --out, missing --attack-results file). ``forge verify-report`` 0 = signature and
files check out, 1 = they do not (changed or wrongly signed), 2 = it could not check (missing
directory, bad key file).
"""

from __future__ import annotations

import argparse
import sys

from . import _common


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the `forge` parser."""
    p = sub.add_parser(
        "audit",
        help="audit an evidence directory against a policy and write a signed report",
        description="Run the policy's checks on an evidence directory (layout: audits/README.md) and write "
        "report.json, report.html and report.pdf (+ report.sig.json with --key) into --out. "
        "Exit 0 on pass, 1 on fail, 2 when the audit could not run.",
    )
    p.add_argument("--policy", metavar="P", help="policy TOML (default: the shipped default policy)")
    p.add_argument("--evidence", metavar="DIR", help="evidence directory")
    p.add_argument("--out", metavar="REPORT_DIR", help="new directory for the report")
    p.add_argument("--key", metavar="AUDITOR_KEY", help="the auditor's signing.key (forge keys new) to sign the report")
    _common.add_passphrase_flags(p, "--key")
    p.add_argument("--decryption-key", metavar="KEY", help="the recipient's decryption.key: open each bundle to bind plugin weights to it")
    _common.add_passphrase_flags(p, "--decryption-key", prefix="decryption-")
    p.add_argument(
        "--attack-results",
        metavar="FILE",
        action="append",
        default=[],
        help="results file of an attack you ran yourself (forge attack mia / recon), kept outside the evidence "
        "directory; repeatable. Only these, and site files whose scores the audit re-derives, count as leakage evidence",
    )
    p.add_argument("--print-default-policy", action="store_true", help="print the default policy TOML and exit")
    onsite = p.add_argument_group("on-site audit", "what the auditor brings to verify DP claims instead of taking them on the site's word")
    onsite.add_argument(
        "--replay-key", metavar="KEY", help="the auditor's decryption.key: open each plugin's replay envelope and re-run its training"
    )
    onsite.add_argument(
        "--canary-record",
        metavar="RECORD",
        action="append",
        default=[],
        help="the auditor's private canary record (forge audit canaries issue); repeat for several sites",
    )
    onsite.add_argument(
        "--site-data",
        metavar="SITE=DATA",
        action="append",
        default=[],
        help="replay SITE's training on DATA (default: the source its envelope names); repeatable",
    )
    _common.add_passphrase_flags(onsite, "--replay-key", prefix="replay-")
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_audit)
    from .audit_replay import register_under

    register_under(p.add_subparsers(dest="audit_command", metavar="[replay | canaries]", required=False))

    v = sub.add_parser(
        "verify-report",
        help="check an audit report's signature and file digests",
        description="Verify report.sig.json in REPORT_DIR with the auditor's public key and check that report.json, "
        "report.html and report.pdf are exactly the signed files. Exit 0 valid, 1 invalid, 2 could not check.",
    )
    v.add_argument("report_dir", metavar="REPORT_DIR")
    v.add_argument("--key", metavar="AUDITOR_PUBLIC_KEY", required=True, help="the auditor's public.json (or its key directory)")
    _common.add_json_flag(v)
    v.set_defaults(func=cmd_verify_report)


def _need(args, *names: str) -> None:
    from ..errors import ForgeValueError

    missing = [n for n in names if not getattr(args, n.replace("-", "_"))]
    if missing:
        raise ForgeValueError(
            f"forge audit needs {', '.join('--' + n for n in missing)}",
            fix="run: forge audit --evidence DIR --out REPORT_DIR [--policy P] [--key AUDITOR_KEY]",
            code="cli.missing_argument",
        )


def cmd_audit(args: argparse.Namespace) -> int:
    from audits import audit_directory, default_policy_text

    if args.print_default_policy:
        sys.stdout.write(default_policy_text())
        return 0
    _need(args, "evidence", "out")
    passphrase = _common.passphrase(args)
    decryption_passphrase = _common.passphrase(args, prefix="decryption-")
    if decryption_passphrase is not None and not args.decryption_key:
        from ..errors import ForgeValueError

        raise ForgeValueError(
            "a decryption passphrase was given without --decryption-key",
            fix="add --decryption-key KEY, or drop the decryption passphrase",
            code="cli.missing_argument",
        )
    site_data = {}
    for pair in args.site_data:
        site, sep, spec = pair.partition("=")
        if not sep or not site or not spec:
            from ..errors import ForgeValueError

            raise ForgeValueError(
                f"--site-data {pair!r} is not SITE=DATA", fix="give e.g. --site-data site-1=records.csv", code="cli.bad_argument"
            )
        site_data[site] = spec
    report = audit_directory(
        args.evidence,
        args.policy,
        out=args.out,
        key=args.key,
        passphrase=passphrase,
        decryption_key=args.decryption_key,
        decryption_passphrase=decryption_passphrase,
        attack_results=args.attack_results,
        replay_key=args.replay_key,
        replay_passphrase=_common.passphrase(args, prefix="replay-"),
        canary_records=args.canary_record,
        site_data=site_data,
    )
    verdict = report.verdict.value
    if args.json:
        _common.emit_json(
            {
                "verdict": verdict,
                "report_dir": str(args.out),
                "report_id": report.report_id,
                "signed": bool(args.key),
                "verdict_detail": report.verdict_detail(),
                "counts": report.counts(),
                "checks": [{"name": c.name, "status": c.status.value} for c in report.checks],
                "failures": [{"check": f.check, "subject": f.subject, "summary": f.summary, "remedy": f.remedy} for f in report.failures()],
                "inconclusive": [
                    {"check": f.check, "subject": f.subject, "summary": f.summary, "remedy": f.remedy} for f in report.inconclusive()
                ],
                "claims": report.claims(),
            }
        )
    else:
        _print_summary(report, args)
    return 0 if report.passed else 1


def _print_summary(report, args) -> None:
    from rich.markup import escape
    from rich.table import Table

    style = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim", "inconclusive": "bold magenta"}
    table = Table(title=f"audit against policy {report.policy.get('name')}", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("findings", justify="right")
    for c in report.checks:
        s = c.status.value
        table.add_row(c.name, _common.styled((s.upper(), style[s])), str(len(c.findings)))
    con = _common.console
    con.print(table)
    for f in report.failures() + report.inconclusive():
        s = f.status.value
        con.print(
            f"[{style[s]}]{s.upper()}[/{style[s]}] {escape(f.check)} [dim]{escape(f.subject)}[/dim]: {escape(f.summary)}\n"
            f"    [italic]what to do:[/italic] {escape(f.remedy)}",
            highlight=False,
            soft_wrap=True,
            markup=True,
        )
    claimed = sorted(
        {
            r["plugin"]
            for r in report.claims()
            if r["claim"] == "dp-parameters" and r["basis"] == "claimed" and not r["plugin"].startswith("merged/")
        }
    )
    if claimed:
        con.print(
            f"[yellow]DP parameters claimed only (not verified by replay):[/yellow] {escape(', '.join(claimed))}",
            highlight=False,
            soft_wrap=True,
            markup=True,
        )
    colour = "green" if report.passed else "red"
    detail = report.verdict_detail()
    if report.passed and detail["inconclusive_checks"]:
        con.print(
            f"[bold {colour}]AUDIT PASSED[/bold {colour}] [bold magenta]with {len(detail['inconclusive_checks'])} INCONCLUSIVE check(s): "
            f"{escape(', '.join(detail['inconclusive_checks']))}[/bold magenta] (they could neither confirm nor refute the claims)",
            highlight=False,
            soft_wrap=True,
            markup=True,
        )
    else:
        con.print(f"[bold {colour}]AUDIT {'PASSED' if report.passed else 'FAILED'}[/bold {colour}]", markup=True)
    con.print(f"report: {args.out}/report.html (also report.json, report.pdf{', report.sig.json' if args.key else ''})", highlight=False)


def cmd_verify_report(args: argparse.Namespace) -> int:
    from audits.signing import ReportSignatureError, load_auditor_public_key, verify_report_dir

    public = load_auditor_public_key(args.key)
    try:
        statement = verify_report_dir(args.report_dir, public)
    except ReportSignatureError as e:
        _common.print_error(e, args)
        return 1
    if args.json:
        _common.emit_json({"valid": True, "signer": public.site, "key_id": public.key_id, **statement})
    else:
        _common.console.print(
            f"[green]valid[/green]: report {_common.escape(statement['report_id'][:16])}... "
            f"(verdict {_common.escape(statement['verdict'].upper())}, "
            f"{_common.escape(statement['created_at'])}) signed by "
            f"{_common.escape(public.site)} ({public.key_id[:16]}...); all files match",
            highlight=False,
            markup=True,
        )
    return 0
