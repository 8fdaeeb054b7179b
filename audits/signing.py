"""Signing an audit report with the auditor's key, and verifying it (``forge verify-report``).

The signature covers a small canonical-JSON statement (sorted keys, no floats) that names the
sha256 of every rendered file (``report.json``, ``report.html``, ``report.pdf``), the verdict
and the report id. It is signed in DSSE's pre-authentication encoding (PAE, as for bundles)
with every signature algorithm of the auditor's key (Ed25519, plus ML-DSA-65 for a
post-quantum key: both must verify). Keys are the files of ``forge keys new``
(``signing.key`` to sign, ``public.json`` to verify), loaded by
:mod:`forge_secure.crypto.keys`. The key id stored in the signature is a hint, never trusted:
verification uses the public key the verifier gives.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

from forge_secure.errors import ForgeDataError, ForgeIntegrityError
from forge_secure.fileio import canonical_json, sha256_file

SIGNATURE_FILE = "report.sig.json"
SIGNATURE_FORMAT = "forge-report-signature/1"
STATEMENT_TYPE = "forge-audit-report-statement/1"
PAYLOAD_TYPE = "application/vnd.forge-secure.audit-report-statement+json"
SIGNED_FILES = ("report.json", "report.html", "report.pdf")


class ReportSignatureError(ForgeIntegrityError):
    """A report whose signature or file digests do not check out."""

    default_code = "report.signature"


def _pae(body: bytes) -> bytes:
    from forge_secure.crypto._primitives import pae

    return pae(PAYLOAD_TYPE, body)


def load_auditor_key(path: str | os.PathLike, passphrase: bytes | None = None):
    """The auditor's signing key (``signing.key`` from ``forge keys new``, or its directory)."""
    from forge_secure.crypto.keys import load_signing_key

    return load_signing_key(path, passphrase)


def load_auditor_public_key(path: str | os.PathLike):
    """The auditor's public key (``public.json`` from ``forge keys new``, or its directory)."""
    from forge_secure.crypto.keys import load_public_key

    return load_public_key(path)


def statement_for(report_dir: Path, report_dict: dict) -> dict:
    return {
        "type": STATEMENT_TYPE,
        "report_id": report_dict["report_id"],
        "verdict": report_dict["verdict"],
        "created_at": report_dict["created_at"],
        "files": {name: sha256_file(report_dir / name) for name in SIGNED_FILES},
    }


def sign_report_dir(report_dir: str | os.PathLike, key) -> dict:
    """The signature document for the rendered files in ``report_dir`` (not yet written)."""
    report_dir = Path(report_dir)
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    body = canonical_json(statement_for(report_dir, report))
    sigs = key.sign_all(_pae(body))
    return {
        "format": SIGNATURE_FORMAT,
        "payload_type": PAYLOAD_TYPE,
        "statement": base64.b64encode(body).decode("ascii"),
        "signer": {"site": key.site, "key_id": key.key_id, "algorithms": list(key.algorithms)},
        "signatures": {alg: base64.b64encode(sig).decode("ascii") for alg, sig in sigs.items()},
    }


def signature_bytes(doc: dict) -> bytes:
    """The one serialisation of a signature document (verification insists on these bytes)."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _bad(
    message: str, code: str, fix: str = "the report was changed after it was signed; get the original from the auditor"
) -> ReportSignatureError:
    return ReportSignatureError(message, fix=fix, code=code)


def verify_report_dir(report_dir: str | os.PathLike, public_key) -> dict:
    """Check ``report_dir``'s signature with the auditor's ``public_key`` (a PublicKey) and every
    signed file's digest. Returns the verified statement; raises ReportSignatureError."""
    from forge_secure.fileio import read_json_file

    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        from forge_secure.errors import ForgeFileError

        raise ForgeFileError(
            f"report directory {report_dir} does not exist or is not a directory",
            fix="give the --out directory of forge audit",
            code="report.missing",
        )
    sig_path = report_dir / SIGNATURE_FILE
    if not sig_path.exists():
        raise _bad(
            f"{sig_path} is missing: the report is not signed", "report.unsigned", "sign it: forge audit ... --key AUDITOR_SIGNING_KEY"
        )
    try:
        doc = read_json_file(sig_path, "report signature")
    except ForgeDataError as e:
        raise _bad(f"{sig_path} is unreadable ({e.message})", "report.signature_corrupt") from None
    if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT or doc.get("payload_type") != PAYLOAD_TYPE:
        raise _bad(f"{sig_path} is not a forge report signature", "report.signature_corrupt")
    if sig_path.read_bytes() != signature_bytes(doc):
        raise _bad(f"{sig_path} was edited (it is not the signature file as written)", "report.signature_corrupt")
    signer = doc.get("signer")
    if not isinstance(signer, dict) or signer.get("key_id") != public_key.key_id or signer.get("site") != public_key.site:
        raise _bad(
            f"the report names signer {signer.get('site') if isinstance(signer, dict) else signer!r}, not the given auditor key "
            f"{public_key.key_id[:16]}... ({public_key.site})",
            "report.bad_signature",
            "check --key: give the public key of the auditor who signed the report",
        )
    try:
        body = base64.b64decode(str(doc["statement"]).encode("ascii"), validate=True)
        sigs = {str(a): base64.b64decode(str(s).encode("ascii"), validate=True) for a, s in dict(doc["signatures"]).items()}
    except (KeyError, TypeError, ValueError, binascii.Error, UnicodeEncodeError):
        raise _bad(f"{sig_path} is damaged (statement or signatures not base64)", "report.signature_corrupt") from None
    message = _pae(body)
    signing = public_key.signing
    missing = sorted(set(signing.algorithms) - set(sigs))
    if missing:
        raise _bad(f"the report has no {', '.join(missing)} signature, which the auditor's key requires", "report.signature_missing")
    if not signing.verify_all(message, {a: sigs[a] for a in signing.algorithms}):
        raise _bad(
            f"the report signature does not verify with the auditor key {public_key.key_id[:16]}... ({public_key.site})",
            "report.bad_signature",
            "the statement was changed, or the report was signed by another key; check --key and get the original report",
        )
    try:
        statement = json.loads(body.decode("utf-8"))
        files = statement["files"]
    except (ValueError, KeyError, TypeError):
        raise _bad("the signed statement is not a report statement", "report.signature_corrupt") from None
    if statement.get("type") != STATEMENT_TYPE or set(files) != set(SIGNED_FILES):
        raise _bad("the signed statement is not a report statement", "report.signature_corrupt")
    for name in SIGNED_FILES:
        p = report_dir / name
        if not p.is_file():
            raise _bad(f"{p} is missing", "report.file_missing")
        if sha256_file(p) != files[name]:
            raise _bad(f"{p} does not match its signed digest (changed after signing)", "report.tampered")
    report = read_json_file(report_dir / "report.json", "report")
    if (
        not isinstance(report, dict)
        or report.get("verdict") != statement.get("verdict")
        or report.get("report_id") != statement.get("report_id")
    ):
        raise _bad("report.json's verdict or id differs from the signed statement", "report.tampered")
    return statement
