"""The audit runner: policy + evidence directory -> frozen Report, and writing a report directory.

:func:`run_audit` only reads. It hashes every evidence file before and after the checks
and refuses to report if anything changed meanwhile (the audit must judge one fixed set of
evidence). :func:`write_report` renders JSON, HTML and PDF into a new directory atomically,
signing them when an auditor key is given. :func:`audit_directory` does both in one call
(what ``forge audit`` and ``forge demo`` use).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from forge_secure import __version__
from forge_secure import progress as _progress
from forge_secure.errors import ForgeError, ForgeIntegrityError
from forge_secure.fileio import atomic_directory, atomic_write_bytes

from .checks import CHECKS
from .evidence import AuditOptions, Evidence
from .findings import CheckResult, Finding, Status
from .policy import Policy, default_policy, load_policy
from .render import render_html, render_json, render_pdf
from .report import Report, now_utc, validate_report_dict
from .signing import SIGNATURE_FILE, load_auditor_key, sign_report_dir, signature_bytes

ProgressFn = Callable[[str, int, int], None]


def run_audit(
    policy: Policy,
    evidence_dir: str | os.PathLike,
    *,
    progress: ProgressFn | None = None,
    options: AuditOptions | None = None,
    created_at: str | None = None,
    auditor: str = "",
) -> Report:
    """Run every enabled check of ``policy`` on ``evidence_dir`` and return the Report.

    ``progress(step, done, total)`` is called as checks (and attacks inside them) advance;
    without it, a rich progress bar shows when the CLI enabled one. The evidence directory is
    never written to.
    """
    evidence = Evidence(evidence_dir, options)
    before = evidence.snapshot()
    enabled = policy.enabled()
    results: list[CheckResult] = []
    with _progress.task("audit checks", total=len(enabled)) as advance:
        for i, (name, settings) in enumerate(enabled.items()):
            cls = CHECKS.get(name)
            if progress:
                progress(name, i, len(enabled))
            try:
                findings = cls().run(evidence, settings, progress=progress)
            except ForgeError as e:  # the evidence made the check impossible: that is a failure
                findings = [
                    Finding(
                        name,
                        Status.FAIL,
                        "(check)",
                        f"the check could not complete: {e}",
                        evidence={"reason_code": e.code},
                        remedy=e.fix or "fix the evidence named above and re-run the audit",
                    )
                ]
            if not findings:
                findings = [Finding(name, Status.SKIP, "(evidence)", "nothing to check in this evidence")]
            results.append(CheckResult(name, cls.title, cls.description, settings.to_dict(), tuple(findings)))
            advance(1)
        if progress:
            progress("done", len(enabled), len(enabled))
    after = evidence.snapshot()
    if after != before:
        changed = sorted(set(before.items()) ^ set(after.items()))
        raise ForgeIntegrityError(
            f"the evidence directory changed while it was audited ({len(changed)} file(s), e.g. {changed[0][0]})",
            fix="stop whatever writes into it and re-run the audit on a fixed copy",
            code="evidence.changed",
        )
    created = created_at or now_utc()
    body = {
        "created_at": created,
        "policy": policy.to_dict(),
        "inventory": before,
        "checks": [r.to_dict() for r in results],
        "toolkit_version": __version__,
        "auditor": auditor,
    }
    report_id = hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8")).hexdigest()
    return Report(
        report_id=report_id,
        created_at=created,
        toolkit_version=__version__,
        policy=policy.to_dict(),
        evidence_root=str(Path(evidence_dir)),
        inventory=before,
        checks=tuple(results),
        auditor=auditor,
    )


def write_report(report: Report, out_dir: str | os.PathLike, *, key=None, overwrite: bool = False) -> Path:
    """Write report.json, report.html, report.pdf (and report.sig.json with ``key``, a loaded
    signing key) into ``out_dir``, atomically: a failure leaves no partial directory."""
    data = render_json(report)
    validate_report_dict(json.loads(data))
    html = render_html(report)
    pdf = render_pdf(report)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        atomic_write_bytes(tmp / "report.json", data)
        atomic_write_bytes(tmp / "report.html", html)
        atomic_write_bytes(tmp / "report.pdf", pdf)
        if key is not None:
            sig = sign_report_dir(tmp, key)
            atomic_write_bytes(tmp / SIGNATURE_FILE, signature_bytes(sig))
    return Path(out_dir)


def _check_out(out: Path, overwrite: bool) -> None:
    from forge_secure.errors import ForgeFileError

    if out.exists() and not out.is_dir():
        raise ForgeFileError(
            f"--out {out} exists and is not a directory", fix="give a new directory for the report", code="file.not_a_directory"
        )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ForgeFileError(f"--out {out} already exists and is not empty", fix="give a new directory for the report", code="file.exists")


def audit_directory(
    evidence_dir: str | os.PathLike,
    policy: Policy | str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    key: str | os.PathLike | None = None,
    passphrase: bytes | None = None,
    decryption_key: str | os.PathLike | None = None,
    decryption_passphrase: bytes | None = None,
    attack_results: Iterable[str | os.PathLike] = (),
    progress: ProgressFn | None = None,
    overwrite: bool = False,
    replay_key: str | os.PathLike | None = None,
    replay_passphrase: bytes | None = None,
    canary_records: tuple | list = (),
    site_data: dict | None = None,
) -> Report:
    """One call for the whole audit: ``policy`` is a Policy, a TOML path, or None (the shipped
    default); with ``out`` the rendered (and, with ``key``, signed) report is written there.

    ``attack_results``: results files of attacks the auditor ran itself (``forge attack mia``
    / ``recon`` on the evidence's plugins), outside the evidence directory. Only these, and
    site-supplied files whose every score the audit re-derives from per-record signals,
    count as leakage evidence.

    ``replay_key`` (the auditor's decryption key), ``canary_records`` (the auditor's private
    canary records) and ``site_data`` (site -> data spec) are what an on-site audit brings to
    verify the DP claims by replay and test them on canaries the site never saw."""
    if policy is None:
        policy = default_policy()
    elif not isinstance(policy, Policy):
        policy = load_policy(Path(policy))
    if out is not None:
        _check_out(Path(out), overwrite)
        if Path(out).resolve().is_relative_to(Path(evidence_dir).resolve()):
            from forge_secure.errors import ForgeFileError

            raise ForgeFileError(
                f"--out {out} is inside the evidence directory {evidence_dir}",
                fix="write the report outside the evidence (the audit never changes its inputs)",
                code="file.inside_input",
            )
    signing_key = load_auditor_key(key, passphrase) if key is not None else None  # fail early, before the work
    if decryption_key is not None:
        from forge_secure.crypto.keys import load_decryption_key

        load_decryption_key(decryption_key, decryption_passphrase)  # fail early on a bad key file
    if replay_key is not None:
        from forge_secure.crypto.keys import load_decryption_key

        load_decryption_key(replay_key, replay_passphrase)  # fail early on a bad key file
    if canary_records:
        from forge_secure.privacy.canaries import read_record

        for rec in canary_records:
            read_record(rec)  # fail early: the record is the auditor's own file
    options = AuditOptions(
        decryption_key=Path(decryption_key) if decryption_key is not None else None,
        passphrase=decryption_passphrase,
        replay_key=Path(replay_key) if replay_key is not None else None,
        replay_passphrase=replay_passphrase,
        canary_records=tuple(Path(p) for p in canary_records),
        site_data=tuple(sorted((site_data or {}).items())),
        attack_results=tuple(Path(p) for p in attack_results),
    )
    report = run_audit(policy, evidence_dir, progress=progress, options=options, auditor=signing_key.site if signing_key else "")
    if out is not None:
        write_report(report, out, key=signing_key, overwrite=overwrite)
    return report
