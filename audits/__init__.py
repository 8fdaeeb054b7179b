"""Compliance audits: policy, checks, the report model and its renderers.

Library entry points::

    from audits import audit_directory, load_policy, run_audit, write_report
    report = audit_directory("evidence/", "policy.toml", out="report/", key="auditor/signing.key")
    report.verdict        # Status.PASS / Status.FAIL

The evidence-directory layout is described in :mod:`audits.evidence` and audits/README.md.
"""

from .checks import CHECKS
from .evidence import AuditOptions, Evidence, snapshot
from .findings import CheckResult, Finding, Plot, Status
from .policy import Policy, default_policy, default_policy_text, load_policy, parse_policy
from .report import Report, report_schema, validate_report_dict
from .runner import audit_directory, run_audit, write_report
from .signing import verify_report_dir

__all__ = [
    "CHECKS",
    "AuditOptions",
    "CheckResult",
    "Evidence",
    "Finding",
    "Plot",
    "Policy",
    "Report",
    "Status",
    "audit_directory",
    "default_policy",
    "default_policy_text",
    "load_policy",
    "parse_policy",
    "report_schema",
    "run_audit",
    "snapshot",
    "validate_report_dict",
    "verify_report_dir",
    "write_report",
]
