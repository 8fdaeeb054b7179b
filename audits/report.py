"""The audit report: a frozen data object, and its JSON form (with a versioned schema).

``Report.to_dict()`` is what ``report.json`` holds; it validates against the JSON Schema
shipped as ``audits/schema/report-v2.json`` (:func:`validate_report_dict`), and
``Report.from_dict`` reads it back (e.g. to re-render, or in ``forge verify-report``).

Format history: ``forge-audit-report/1`` (schema 1.x, ``report-v1.json``) had four statuses
and no per-plugin claims; ``forge-audit-report/2`` (schema 2.x) adds the INCONCLUSIVE status,
each finding's ``plugin`` / ``claim`` / ``basis``, the per-plugin ``claims`` table and the
``verdict_detail``. Reports of both formats are read; new reports are written as /2.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from forge_secure import __version__
from forge_secure.errors import ForgeDataError

from .claims import claims_table
from .findings import CheckResult, Finding, Status

REPORT_FORMAT = "forge-audit-report/2"
SCHEMA_VERSION = "2.0.0"
SCHEMA_FILE = "report-v2.json"
#: every format this version reads, with its schema file
SCHEMA_FILES = {"forge-audit-report/1": "report-v1.json", REPORT_FORMAT: SCHEMA_FILE}


@dataclass(frozen=True)
class Report:
    """Everything an audit concluded.

    ``verdict`` is FAIL when any check failed, or when a check is INCONCLUSIVE and the policy
    says ``[verdict] inconclusive_fails = true``; otherwise PASS. A PASS with inconclusive
    checks says so (:meth:`inconclusive_checks`, ``verdict_detail`` in the JSON, and every
    rendering's verdict banner)."""

    report_id: str
    created_at: str  # ISO 8601 UTC
    toolkit_version: str
    policy: Mapping[str, Any]  # Policy.to_dict()
    evidence_root: str
    inventory: Mapping[str, str]  # {relative path: sha256} of every evidence file
    checks: tuple[CheckResult, ...]
    auditor: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "inventory", dict(sorted(dict(self.inventory).items())))

    @property
    def inconclusive_fails(self) -> bool:
        """The policy's ``[verdict] inconclusive_fails`` (false when the policy has no such table)."""
        v = self.policy.get("verdict") if isinstance(self.policy, Mapping) else None
        return bool(v.get("inconclusive_fails", False)) if isinstance(v, Mapping) else False

    @property
    def verdict(self) -> Status:
        worst = Status.worst(c.status for c in self.checks)
        if worst is Status.FAIL or (worst is Status.INCONCLUSIVE and self.inconclusive_fails):
            return Status.FAIL
        return Status.PASS

    def inconclusive_checks(self) -> list[str]:
        """Names of the checks whose status is INCONCLUSIVE."""
        return [c.name for c in self.checks if c.status is Status.INCONCLUSIVE]

    def inconclusive(self) -> list[Finding]:
        return [f for c in self.checks for f in c.findings if f.status is Status.INCONCLUSIVE]

    def verdict_detail(self) -> dict:
        inc = self.inconclusive_checks()
        if self.verdict is Status.FAIL:
            why = (
                "failed checks"
                if any(c.status is Status.FAIL for c in self.checks)
                else "inconclusive checks, which the policy counts as failures"
            )
            headline = f"FAILED ({why})"
        elif inc:
            headline = f"PASSED, but {len(inc)} check(s) INCONCLUSIVE ({', '.join(inc)}): they could neither confirm nor refute the claims"
        else:
            headline = "PASSED"
        return {"headline": headline, "inconclusive_checks": inc, "inconclusive_fails": self.inconclusive_fails}

    def claims(self) -> list[dict]:
        """The per-plugin claims table (:func:`audits.claims.claims_table`)."""
        return claims_table(self.checks)

    @property
    def passed(self) -> bool:
        return self.verdict is Status.PASS

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for c in self.checks:
            for f in c.findings:
                out[f.status.value] += 1
        return out

    def failures(self) -> list:
        return [f for c in self.checks for f in c.findings if f.status is Status.FAIL]

    def actions(self) -> list[Finding]:
        """Findings that need the reader's attention, worst first: FAIL, INCONCLUSIVE, WARN."""
        order = (Status.FAIL, Status.INCONCLUSIVE, Status.WARN)
        return [f for s in order for c in self.checks for f in c.findings if f.status is s]

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "report_id": self.report_id,
            "created_at": self.created_at,
            "toolkit_version": self.toolkit_version,
            "auditor": self.auditor,
            "verdict": self.verdict.value,
            "verdict_detail": self.verdict_detail(),
            "counts": self.counts(),
            "policy": dict(self.policy),
            "evidence": {"root": self.evidence_root, "inventory": dict(self.inventory)},
            "checks": [c.to_dict() for c in self.checks],
            "claims": self.claims(),
        }

    def to_json_bytes(self) -> bytes:
        """The bytes of ``report.json``: sorted keys, two-space indent, UTF-8, finite floats only
        (non-finite values are already the strings "inf"/"nan" in the model)."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> Report:
        validate_report_dict(d)
        report = cls(
            report_id=d["report_id"],
            created_at=d["created_at"],
            toolkit_version=d["toolkit_version"],
            policy=d["policy"],
            evidence_root=d["evidence"]["root"],
            inventory=d["evidence"]["inventory"],
            checks=tuple(CheckResult.from_dict(c) for c in d["checks"]),
            auditor=d.get("auditor", ""),
        )
        if report.verdict.value != d["verdict"]:
            raise ForgeDataError(
                f"report verdict {d['verdict']!r} does not follow from its checks ({report.verdict.value})",
                fix="the report was edited; re-run forge audit",
                code="report.inconsistent",
            )
        if d["format"] == REPORT_FORMAT and (d["claims"] != report.claims() or d["verdict_detail"] != report.verdict_detail()):
            raise ForgeDataError(
                "the report's per-plugin claims table or verdict detail does not follow from its findings",
                fix="the report was edited; re-run forge audit",
                code="report.inconsistent",
            )
        return report


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def report_schema(fmt: str = REPORT_FORMAT) -> dict:
    """The JSON Schema (draft 2020-12) of ``report.json`` in format ``fmt``, shipped with the package."""
    return json.loads(resources.files("audits").joinpath("schema").joinpath(SCHEMA_FILES[fmt]).read_text(encoding="utf-8"))


def validate_report_dict(d: Any) -> None:
    """Validate a report dict against the shipped schema of its format (/1 or /2);
    ForgeDataError naming the first problem."""
    import jsonschema

    fmt = d.get("format") if isinstance(d, dict) else None
    if fmt not in SCHEMA_FILES:
        raise ForgeDataError(
            f"report format {fmt!r} is not one this version reads ({', '.join(SCHEMA_FILES)})",
            fix="give a report.json written by forge audit, or upgrade forge-secure to read newer reports",
            code="report.schema",
        )
    schema = report_schema(fmt)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ForgeDataError(
            f"report does not match schema {SCHEMA_FILES[fmt]} at {where}: {e.message}",
            fix="give a report.json written by forge audit (schema version " + SCHEMA_VERSION + ")",
            code="report.schema",
        )


__all__ = ["REPORT_FORMAT", "SCHEMA_FILES", "SCHEMA_VERSION", "Report", "now_utc", "report_schema", "validate_report_dict", "__version__"]
