"""``run_bench``: plan the grid, skip what the cache already holds, run the rest in worker
processes (or on Ray), then write the outputs.

Outputs in ``out`` (written into a temporary sibling and renamed into place at the end, so
an interrupted run leaves no half-written directory; the cache keeps finished cells):

* ``results.csv``   - tidy, one row per cell and seed (columns: :data:`report.COLUMNS`);
* ``summary.md``, ``summary.html`` - means and t-intervals across seeds;
* ``plots/*.png|svg`` - utility and TPR at 1 % FPR against epsilon, empirical against
  claimed epsilon with the diagonal;
* ``config.toml``   - a copy of the configuration that was run; ``bench.json`` - the run
  log (cells computed and taken from the cache, plugins trained, wall time, skipped cells).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_secure import __version__, progress
from forge_secure.fileio import atomic_directory, atomic_write_json

from . import grid as G
from . import plots, report
from .cache import BenchCache
from .cell import GroupTask, row_from_json, run_group
from .config import BenchConfig
from .data import load_bench_data
from .output import MARKER, check_out
from .registries import fusion_registry


@dataclass
class BenchResult:
    out: Path
    rows: list[dict[str, Any]]
    computed: int  # (cell, seed) results computed in this run
    cached: int  # taken from the cache
    trained: int  # plugins trained in this run (targets and references)
    seconds: float
    cpu_seconds: float = 0.0  # CPU time of the workers on the cells of this run (load-independent)
    skipped: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "rows": len(self.rows),
            "computed": self.computed,
            "cached": self.cached,
            "trained": self.trained,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "skipped": self.skipped,
            "flagged": self.flagged,
        }


def applicable(cell: G.Cell) -> str | None:
    """Why a cell cannot run (e.g. a Fusion method that needs FFA-LoRA on plain LoRA), else None."""
    reg = fusion_registry()
    if reg is not None and cell.merge in reg:
        method = reg.get(cell.merge)
        if getattr(method, "needs_ffa", False) and not cell.ffa:
            return f"{cell.label()}: merge {cell.merge!r} needs FFA-LoRA plugins"
    return None


def plan(config: BenchConfig, cache: BenchCache, data_digest: str) -> tuple[list[tuple[G.Cell, int, str]], list[str]]:
    pairs, skipped = [], []
    for cell in G.expand_grid(config):
        why = applicable(cell)
        if why:
            skipped.append(why)
            continue
        for seed in config.seeds:
            pairs.append((cell, seed, G.cell_key(config, cell, seed, data_digest)))
    return pairs, skipped


def preflight(config: BenchConfig, data) -> None:
    """The checks that need the libraries, done once before any work: the base model exists
    and accepts the data, every training recipe of the grid validates as a
    :class:`forge_secure.privacy.TrainConfig` (accountant, learning rate, ...), and every
    membership attack accepts its settings."""
    import numpy as np
    import torch

    from forge_secure.errors import ForgeDataError
    from forge_secure.plugins.bases import load_base
    from forge_secure.privacy import TrainConfig

    from .registries import BENCH_ATTACKS

    t = config.training
    base = load_base(t.base)
    try:
        with torch.no_grad():
            out = base.model(torch.as_tensor(np.array(data.public.X[:2])))
        out = getattr(out, "logits", out)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ForgeDataError(
            f"the data {config.data.source!r} does not fit base {t.base!r} (records "
            f"of shape {data.public.shape}: {str(e).splitlines()[0][:120]})",
            fix="give data with the features the base expects, or another base",
            code="bench.data_base_mismatch",
        ) from None
    if out.shape[-1] != data.public.n_classes and data.public.n_classes > out.shape[-1]:
        raise ForgeDataError(
            f"the data has {data.public.n_classes} classes, base {t.base!r} predicts {out.shape[-1]}",
            fix="give data with as many classes as the base, or another base",
            code="bench.data_base_mismatch",
        )
    for rank in config.grid.rank:
        for lora in config.grid.lora:
            for eps in config.grid.epsilon:
                dp = {"no_dp": True} if math.isinf(eps) else {"target_epsilon": eps, "delta": t.delta}
                TrainConfig(
                    base=t.base,
                    rank=rank,
                    alpha=t.alpha_scale * rank,
                    ffa=lora == "ffa",
                    epochs=t.epochs,
                    batch_size=t.batch_size,
                    lr=t.lr,
                    optimizer=t.optimizer,
                    max_grad_norm=t.max_grad_norm,
                    accountant=t.accountant,
                    **dp,
                )
    from forge_secure.privacy import ACCOUNTANTS

    ACCOUNTANTS.get(t.accountant)
    for name in config.grid.attack:
        if BENCH_ATTACKS.get(name).kind == "membership":
            from attacks.membership import make_attack

            s = config.attack_settings(name)
            attack = make_attack(name, **{k: v for k, v in s.items() if k not in ("references", "population")})
            if attack.min_references() > s["references"]:
                from forge_secure.errors import ForgeConfigError

                raise ForgeConfigError(
                    f"bench config [attack.{name}]: these settings need at least {attack.min_references()} reference models, "
                    f"references = {s['references']}",
                    fix=f"set references = {attack.min_references()} or more, or choose a variant that needs fewer",
                    code="bench.config.too_few_references",
                )


def run_bench(
    config: BenchConfig,
    out: str | Path,
    *,
    cache_root: str | Path | None = None,
    workers: int | None = None,
    ray: str | None = None,
) -> BenchResult:
    """Run (or resume) the grid of ``config`` and write its outputs to ``out``."""
    t0 = time.perf_counter()
    out = Path(out)
    replace = check_out(out)  # before any work
    ray = ray if ray is not None else config.run.ray
    workers = workers if workers is not None else config.run.workers
    if ray and ray != "auto":
        from forge_secure.parallel import check_ray_address

        check_ray_address(ray)  # an unreachable cluster is an error before any work, not a hang
    cache = BenchCache(cache_root)
    data = load_bench_data(config.data)
    preflight(config, data)
    pairs, skipped = plan(config, cache, data.digest)
    if not pairs:
        from forge_secure.errors import ForgeConfigError

        raise ForgeConfigError(
            "no cell of the grid can run: " + "; ".join(skipped[:3]),
            fix='add lora = ["ffa"] or another merge method',
            code="bench.config.empty_grid",
        )
    missing = [(c, s) for c, s, k in pairs if not cache.has_result(k)]
    groups = G.group_runs(missing)
    tasks = [GroupTask(config, g, tuple(cells), str(cache.root), data.digest) for g, cells in groups.items()]
    from forge_secure.parallel import run_tasks

    results = run_tasks(run_group, tasks, workers=workers, ray=ray or None, description="bench cells")
    computed = sum(len(r["computed"]) for r in results)
    trained = sum(int(r["trained"]) for r in results)
    cpu = sum(float(r["cpu_seconds"]) for r in results)

    rows = []
    for cell, seed, key in pairs:
        doc = cache.load_result(key)
        if doc is None:  # pragma: no cover - a worker returned without storing: a bug
            raise RuntimeError(f"cell {cell.label()} seed {seed} has no result after the run")
        row = row_from_json(doc["row"])
        # the tidy table has every column in every row: what an attack does not measure is NaN
        row["above_claim"] = bool(row.get("above_claim")) or bool(row.get("canary_above_claim"))
        rows.append({c: row.get(c, False if c in ("above_claim", "canary_above_claim") else math.nan) for c in report.COLUMNS})
    flagged = [flag_text(r) for r in plots.flagged_rows(rows)]
    result = BenchResult(out, rows, computed, len(pairs) - len(missing), trained, 0.0, cpu, skipped, flagged)
    write_outputs(config, result, replace=replace, t0=t0)
    return result


def flag_text(r: dict[str, Any]) -> str:
    """One line naming a run whose empirical bound is above its claim, and which bound."""
    bounds = []
    if r.get("empirical_epsilon") is not None and math.isfinite(r["empirical_epsilon"]) and r["empirical_epsilon"] > r["claimed_epsilon"]:
        bounds.append(f"threshold bound {r['empirical_epsilon']:.2f}")
    if r.get("canary_above_claim"):
        bounds.append(f"one-run bound on the canaries {r['canary_epsilon']:.2f}")
    return (
        f"{r['attack']} on {r['merge']} ({r['lora']}, rank {r['rank']}, seed {r['seed']}): "
        f"{' and '.join(bounds) or 'empirical bound'} > claimed {r['claimed_epsilon']:.2f}"
    )


def write_outputs(config: BenchConfig, result: BenchResult, *, replace: bool, t0: float) -> None:
    with progress.task("writing tables and plots", total=None):
        with atomic_directory(result.out, overwrite=replace) as tmp:
            report.write_csv(result.rows, tmp / "results.csv")
            summary = report.summarize(result.rows, config.confidence, config.canaries.p_target)
            (tmp / "summary.md").write_text(
                f"# forge bench: {Path(config.source).name}\n\n"
                + report.markdown(summary, config.confidence, len(config.seeds))
                + (
                    "\n**Empirical epsilon above the claim (bugs):**\n\n" + "\n".join(f"- {f}" for f in result.flagged) + "\n"
                    if result.flagged
                    else ""
                )
                + ("\nSkipped (not applicable): " + "; ".join(result.skipped) + "\n" if result.skipped else ""),
                encoding="utf-8",
            )
            written = plots.write_plots(result.rows, tmp / "plots", config.confidence, config.canaries.p_target)
            pngs = [f"plots/{p.name}" for p in written if p.suffix == ".png"]
            meta = {
                "configuration": config.source,
                "data": config.data.source,
                "base": config.training.base,
                "seeds": ", ".join(map(str, config.seeds)),
                "canaries per site": config.canaries.count or "none",
                "cells x seeds": len(result.rows),
                "toolkit": f"forge-secure {__version__}",
            }
            (tmp / "summary.html").write_text(
                report.html(
                    summary,
                    config.confidence,
                    len(config.seeds),
                    title="forge bench: leakage against privacy budget",
                    plots=pngs,
                    flagged=result.flagged,
                    meta=meta,
                    embed_root=tmp,
                ),
                encoding="utf-8",
            )
            if Path(config.source).is_file():
                shutil.copyfile(config.source, tmp / "config.toml")
            (tmp / "config.resolved.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
            result.seconds = time.perf_counter() - t0
            atomic_write_json(tmp / MARKER, {"format": "forge-bench-run/1", "toolkit_version": __version__, **result.to_dict()})
