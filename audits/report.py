"""The audit report: a frozen data object, and its JSON form (with a versioned schema).

``Report.to_dict()`` is what ``report.json`` holds; it validates against the JSON Schema
shipped as ``audits/schema/report-v1.json`` (:func:`validate_report_dict`), and
``Report.from_dict`` reads it back (e.g. to re-render, or in ``forge verify-report``).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping

from forge_secure import __version__
from forge_secure.errors import ForgeDataError

from .findings import CheckResult, Status

REPORT_FORMAT = "forge-audit-report/1"
SCHEMA_VERSION = "1.0.0"
SCHEMA_FILE = "report-v1.json"


@dataclass(frozen=True)
class Report:
    """Everything an audit concluded. ``verdict`` is FAIL when any check failed, else PASS."""

    report_id: str
    created_at: str                 # ISO 8601 UTC
    toolkit_version: str
    policy: Mapping[str, Any]       # Policy.to_dict()
    evidence_root: str
    inventory: Mapping[str, str]    # {relative path: sha256} of every evidence file
    checks: tuple[CheckResult, ...]
    auditor: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "inventory", dict(sorted(dict(self.inventory).items())))

    @property
    def verdict(self) -> Status:
        worst = Status.worst(c.status for c in self.checks)
        return Status.FAIL if worst is Status.FAIL else Status.PASS

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

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "report_id": self.report_id,
            "created_at": self.created_at,
            "toolkit_version": self.toolkit_version,
            "auditor": self.auditor,
            "verdict": self.verdict.value,
            "counts": self.counts(),
            "policy": dict(self.policy),
            "evidence": {"root": self.evidence_root, "inventory": dict(self.inventory)},
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json_bytes(self) -> bytes:
        """The bytes of ``report.json``: sorted keys, two-space indent, UTF-8, finite floats only
        (non-finite values are already the strings "inf"/"nan" in the model)."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        validate_report_dict(d)
        report = cls(
            report_id=d["report_id"], created_at=d["created_at"], toolkit_version=d["toolkit_version"],
            policy=d["policy"], evidence_root=d["evidence"]["root"], inventory=d["evidence"]["inventory"],
            checks=tuple(CheckResult.from_dict(c) for c in d["checks"]), auditor=d.get("auditor", ""),
        )
        if report.verdict.value != d["verdict"]:
            raise ForgeDataError(
                f"report verdict {d['verdict']!r} does not follow from its checks ({report.verdict.value})",
                fix="the report was edited; re-run forge audit", code="report.inconsistent",
            )
        return report


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def report_schema() -> dict:
    """The JSON Schema (draft 2020-12) of ``report.json``, shipped with the package."""
    return json.loads(resources.files("audits").joinpath("schema", SCHEMA_FILE).read_text(encoding="utf-8"))


def validate_report_dict(d: Any) -> None:
    """Validate a report dict against the shipped schema; ForgeDataError naming the first problem."""
    import jsonschema

    schema = report_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ForgeDataError(
            f"report does not match schema {SCHEMA_FILE} at {where}: {e.message}",
            fix="give a report.json written by forge audit (schema version " + SCHEMA_VERSION + ")",
            code="report.schema",
        )


__all__ = ["REPORT_FORMAT", "SCHEMA_VERSION", "Report", "now_utc", "report_schema", "validate_report_dict", "__version__"]
