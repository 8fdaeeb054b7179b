"""``forge bench``: the leakage-resistance benchmark over a grid of privacy budgets, LoRA
ranks, plain LoRA against FFA-LoRA, merge methods, attacks and seeds.

One TOML file describes the grid (:mod:`attacks.bench.config`; the bundled default is
``default_bench.toml``); :func:`run_bench` runs it with a per-cell on-disk cache
(:mod:`attacks.bench.cache`, keys in :mod:`attacks.bench.grid`) in worker processes or on
Ray (:mod:`forge_secure.parallel`), and writes a tidy CSV, a summary (Markdown, HTML) with
t-intervals across seeds, and plots (:mod:`attacks.bench.report`, :mod:`attacks.bench.plots`).
With ``[canaries]``, every target plugin trains on auditor-style canaries and every row carries
the one-run audit on them; every empirical epsilon carries its ceiling, and a claim above it
reads "cannot tell" (:mod:`attacks.bench.leakage`).
"""

from .config import BenchConfig, CanarySpec, DataSpec, GridSpec, RunSpec, TrainingSpec, config_from_dict, load_config
from .grid import Cell, expand_grid
from .registries import BENCH_ATTACKS, merge_registry


def __getattr__(name: str):
    # the runner pulls in torch, scipy and matplotlib: import it only when it is used, so
    # validating a config (and refusing a bad one) stays fast
    if name in ("run_bench", "BenchResult"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BENCH_ATTACKS",
    "BenchConfig",
    "BenchResult",
    "CanarySpec",
    "Cell",
    "DataSpec",
    "GridSpec",
    "RunSpec",
    "TrainingSpec",
    "config_from_dict",
    "expand_grid",
    "load_config",
    "merge_registry",
    "run_bench",
]
