"""The registered audit checks. Importing this package registers all of them in CHECKS.

Checks, in the order an audit runs them:

- ``provenance``: bundle signatures against the roster (signer listed, not revoked, key
  valid), and payload digests chaining through the merge lineage to each audited version;
- ``roster-freshness``: the roster is trusted (admin signatures) and not about to expire;
- ``dp-claims``: epsilon re-derived from the recorded mechanism, never taken on trust;
- ``delta``: delta below 1/n;
- ``site-budget``: each site's ledger total, re-derived, within the per-site budget;
- ``membership``, ``reconstruction``: leakage measured by the attack suites;
- ``consistency``: empirical epsilon lower bound vs the claimed epsilon;
- ``he-contributions``: minimum contributions of a homomorphic merge.
"""

from .base import CHECKS, Check, CheckSettings, register_check

RUN_ORDER = (
    "provenance", "roster-freshness", "dp-claims", "delta", "site-budget",
    "membership", "reconstruction", "consistency", "he-contributions",
)

from . import budget, dp, leakage, merges, provenance  # noqa: E402,F401  (registration)

__all__ = ["CHECKS", "Check", "CheckSettings", "RUN_ORDER", "register_check"]
