"""forge-secure: differentially private, sealed and leakage-audited LoRA plugins.

The packages follow the data flow of the design: ``plugins`` (bases, data, the plugin
directory) -> ``privacy`` (DP training, accountants, the budget ledger) -> ``crypto``
(keys, roster, sealed bundles) -> ``merge`` (Fusion, homomorphic Fusion, Mixture).
``attacks`` and ``audits`` are separate top-level packages that import this one.
"""

__version__ = "0.1.0"
