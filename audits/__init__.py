"""Compliance audits: policy, checks, the report model and its renderers."""
