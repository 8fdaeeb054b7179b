"""The registered audit checks. Importing this package registers all of them in CHECKS.

Checks, in the order an audit runs them:

- ``provenance``: bundle signatures against the roster (signer listed, not revoked, key
  valid), and payload digests chaining through the merge lineage to each audited version;
- ``roster-freshness``: the roster is trusted (admin signatures) and not about to expire;
- ``dp-claims``: epsilon re-derived from the recorded mechanism, never taken on trust;
- ``dp-randomness``: the noise and sampling came from a secret, not a published seed;
- ``replay``: the auditor re-runs each plugin's training from its replay envelope (verified by replay);
- ``delta``: delta below 1/n;
- ``site-budget``: each site's ledger total, re-derived, within the per-site budget;
- ``membership``, ``reconstruction``: leakage measured by the attack suites;
- ``consistency``: empirical epsilon lower bound vs the claimed epsilon;
- ``auditor-canaries``: the one-run audit on the auditor's own canaries (half held back);
- ``he-contributions``: minimum contributions of a homomorphic merge.
"""

from .base import CHECKS, Check, CheckSettings, register_check

RUN_ORDER = (
    "provenance",
    "roster-freshness",
    "dp-claims",
    "dp-randomness",
    "replay",
    "delta",
    "site-budget",
    "membership",
    "reconstruction",
    "consistency",
    "auditor-canaries",
    "he-contributions",
)

from . import budget, canaries, consistency, dp, leakage, merges, provenance, replay  # noqa: E402,F401  (registration)

__all__ = ["CHECKS", "Check", "CheckSettings", "RUN_ORDER", "register_check"]
