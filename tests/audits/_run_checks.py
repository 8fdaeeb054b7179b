"""Running chosen audit checks on a test world's evidence, and picking their findings."""

from __future__ import annotations

from audits import CHECKS, Policy, run_audit


def audit(world, *checks: str, **settings):
    """Run only ``checks`` (each with ``settings[name]`` overrides) on the world's evidence."""
    table = {name: CHECKS.get(name).Settings(**settings.get(name.replace("-", "_"), {})) for name in checks}
    return run_audit(Policy(name="test", description="", checks=table), world.evidence, options=world.options())


def findings(report, check: str) -> list:
    return next(c for c in report.checks if c.name == check).findings


def by_subject(report, check: str) -> dict:
    return {f.subject: f for f in findings(report, check)}
