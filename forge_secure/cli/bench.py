"""``forge bench``: the leakage-resistance benchmark (library: :mod:`attacks.bench`).

    forge bench [--config bench.toml | default] [--out DIR] [--workers N] [--ray auto|HOST:PORT]
                [--cache DIR] [--dry-run] [--print-default] [--json]

The configuration is validated completely before any work starts; finished cells are taken
from the on-disk cache (``$FORGE_HOME/cache/bench`` unless ``--cache``), so an interrupted
run resumes and a changed setting reruns only the cells it touches.
"""

from __future__ import annotations

import argparse

from . import _common


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the `forge` parser."""
    p = sub.add_parser(
        "bench",
        help="run a leakage-resistance grid (epsilon x rank x LoRA/FFA x merge x attack x seed)",
        description="Run the grid of a bench TOML file: train DP site plugins (with auditor-style canaries), merge them, "
        "measure utility and attack them; print the few columns that matter (within 100 characters) and write "
        "results.csv, summary.md/html (the full table, plots inline) and plots to --out. Cells are cached, so a rerun "
        "resumes. Start from the bundled grid: forge bench --print-default > bench.toml",
    )
    p.add_argument("--config", default="default", help='bench TOML file, or "default" for the bundled grid (default)')
    p.add_argument(
        "--out", default="forge-bench", help="output directory (default ./forge-bench; a previous bench output there is replaced)"
    )
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: [run] workers of the config)")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help='run on Ray: "auto" starts a local Ray, or HOST:PORT of a cluster')
    p.add_argument("--cache", default=None, metavar="DIR", help="cell cache directory (default $FORGE_HOME/cache/bench)")
    p.add_argument("--dry-run", action="store_true", help="validate the config and show the plan (cells, cached, to run); do no work")
    p.add_argument("--print-default", action="store_true", help="print the bundled default config (to copy and edit) and exit")
    _common.add_json_flag(p)
    p.set_defaults(func=run)


def _dry_run(args, config) -> int:
    from attacks.bench.cache import BenchCache
    from attacks.bench.data import load_bench_data
    from attacks.bench.runner import plan, preflight

    cache = BenchCache(args.cache)
    data = load_bench_data(config.data)
    preflight(config, data)
    pairs, skipped = plan(config, cache, data.digest)
    cached = sum(cache.has_result(k) for _, _, k in pairs)
    info = {
        "config": config.source,
        "cells": len(pairs) // max(len(config.seeds), 1),
        "seeds": list(config.seeds),
        "runs": len(pairs),
        "cached": cached,
        "to_run": len(pairs) - cached,
        "skipped": skipped,
        "grid": config.to_dict()["grid"],
    }
    if args.json:
        _common.emit_json(info)
    else:
        _common.console.print(
            f"{info['cells']} cells x {len(config.seeds)} seeds = {info['runs']} runs: {cached} cached, {info['to_run']} to run"
            + (f"; {len(skipped)} cells skipped (not applicable)" if skipped else "")
        )
    return 0


#: the terminal table's widest rendering, in characters (the full table is in summary.md/html)
TERMINAL_WIDTH = 100


def terminal_table(summary, *, title: str):
    """The few columns that matter as a rich Table that fits :data:`TERMINAL_WIDTH` columns:
    one row per cell; bounds are 95% lower bounds, "one-run eps" pooled over the seeds."""
    from rich.markup import escape
    from rich.table import Table

    from attacks.bench import report

    head, body = report.terminal_rows(summary)
    # no box: two spaces between columns, so the widest grid (several ranks, "mixture", "no leak
    # seen") still fits 100 characters
    table = Table(
        title=escape(title),
        box=None,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold underline",
        caption="eps: 95% lower bounds (one-run: canaries, pooled over seeds); ceiling: most a perfect attack shows",
        caption_justify="left",
    )
    for h in head:
        table.add_column(escape(h), justify="left" if h in ("LoRA", "merge", "attack", "verdict") else "right", no_wrap=True)
    styles = {"BUG": "bold red", "leaks": "yellow", "cannot tell": "dim"}
    for r in body:
        table.add_row(*(escape(c) for c in r), style=styles.get(r[-1]))
    return table


def run(args: argparse.Namespace) -> int:
    from attacks.bench.config import DEFAULT_CONFIG, load_config
    from forge_secure.errors import ForgeValueError

    if args.print_default:
        print(DEFAULT_CONFIG.read_text(encoding="utf-8"), end="")
        return 0
    if args.workers is not None and args.workers < 1:
        raise ForgeValueError(f"--workers {args.workers} must be at least 1", fix="use e.g. --workers 2", code="bench.workers")
    config = load_config(args.config)  # every config error surfaces here, before any work
    if args.dry_run:
        return _dry_run(args, config)
    from attacks.bench.output import check_out

    check_out(args.out)  # refuse a wrong --out before importing and running anything heavy
    from attacks.bench.runner import run_bench

    result = run_bench(config, args.out, cache_root=args.cache, workers=args.workers, ray=args.ray)
    if args.json:
        _common.emit_json(result.to_dict())
        return 0
    from attacks.bench import report

    width = min(_common.console.width, TERMINAL_WIDTH)

    def _print(*a, **kw):
        _common.console.print(*a, width=width, **kw)

    summary = report.summarize(result.rows, config.confidence, config.canaries.p_target)
    _print(terminal_table(summary, title=f"forge bench ({len(result.rows)} runs)"))
    _print(
        f"{result.computed} runs computed, {result.cached} from the cache, {result.trained} plugins trained, "
        f"{result.seconds:.1f} s. Full table (every metric with its {config.confidence:.0%} t-interval over seeds): "
        f"{result.out}/summary.md and summary.html; plots in {result.out}/plots/; one row per run in results.csv.",
        highlight=False,
        markup=False,
    )
    if result.flagged:
        _print(f"{len(result.flagged)} run(s) measured more leakage than the claimed epsilon (a bug):", style="bold red")
        for f in result.flagged:
            _print(f"  {f}", markup=False, highlight=False)
    if result.skipped:
        _print(f"skipped {len(result.skipped)} cells that do not apply: " + "; ".join(result.skipped), markup=False, highlight=False)
    return 0
