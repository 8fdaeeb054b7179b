"""Wall time of the bundled default `forge bench` grid, and how it scales with worker
processes (1 against 2), each from a cold cache, in one run.

    .venv/bin/python benchmarks/bench_grid.py [--workers 1 2] [--seeds 0 1 2] [--no-write]

Each configuration runs the whole default grid (attacks/bench/default_bench.toml) with a
fresh, empty cell cache and a fresh FORGE_HOME (so base models are built once per run,
as on a new machine), and reports the wall time, the runs computed, the plugins trained,
and the speed-up of 2 workers over 1. ``--seeds`` narrows the seeds (stated in the output)
when the machine is too busy for the full grid. Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# benchmarks/ itself, for _report (an installed package named "benchmarks" shadows ours)
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_once(workers: int, seeds: list[int] | None) -> dict:
    from attacks.bench.config import load_config
    from attacks.bench.runner import run_bench

    cfg = load_config("default")
    if seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(seeds))
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        os.environ["FORGE_HOME"] = str(Path(tmp) / "home")  # cold: no cached bases or cells
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_bench(cfg, Path(tmp) / "out", cache_root=Path(tmp) / "cache", workers=workers, ray="")
        wall, main_cpu = time.perf_counter() - t0, time.process_time() - c0
        if workers == 1:  # the cells ran in this process: do not count them twice
            main_cpu -= result.cpu_seconds
        csv = (Path(tmp) / "out" / "summary.md").read_text()
    # On a quiet machine the cells' CPU time divides over the workers (one torch thread each);
    # planning and writing the outputs stay in the main process.
    estimate = main_cpu + result.cpu_seconds / workers
    return {"workers": workers, "wall": wall, "cpu": result.cpu_seconds, "main_cpu": main_cpu, "estimate": estimate, "load": os.getloadavg()[0],
            "runs": len(result.rows), "computed": result.computed, "trained": result.trained,
            "cells": len(result.rows) // len(cfg.seeds), "seeds": list(cfg.seeds), "summary": csv}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="override the default grid's seeds (fewer = faster)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = ap.parse_args(argv)

    results = []
    for w in args.workers:
        r = run_once(w, args.seeds)
        print(f"workers={w}: {r['wall']:.1f} s wall (load {r['load']:.1f}), {r['cpu']:.1f} s CPU in cells, estimate {r['estimate']:.1f} s quiet; "
              f"{r['runs']} runs ({r['cells']} cells x {len(r['seeds'])} seeds), {r['trained']} plugins trained", flush=True)
        results.append(r)
    base = next((r for r in results if r["workers"] == 1), results[0])
    lines = [
        "Default grid (`attacks/bench/default_bench.toml`): "
        f"{base['cells']} cells x {len(base['seeds'])} seeds (seeds {base['seeds']}) = {base['runs']} runs, "
        "cold cache and fresh FORGE_HOME for each line; the machine is shared with other work, so times are "
        "wall-clock under whatever load it had.",
        "",
        "| worker processes | measured wall (s) | 1-min load avg at end | CPU in cells (s) | main-process CPU (s) | quiet-machine estimate (s) | plugins trained | measured speed-up vs 1 worker |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['workers']} | {r['wall']:.1f} ({r['wall'] / 60:.1f} min) | {r['load']:.1f} | {r['cpu']:.1f} | {r['main_cpu']:.1f} | "
            f"{r['estimate']:.1f} ({r['estimate'] / 60:.1f} min) | {r['trained']} | {base['wall'] / r['wall']:.2f}x |"
        )
    lines += [
        "",
        "The quiet-machine estimate is the main process's CPU time (planning, preflight, tables, plots) plus the "
        "cells' CPU time divided by the number of workers (each worker runs one torch thread); it leaves out worker "
        "start-up (a few seconds each). The measured wall time includes whatever else the shared machine was running "
        "(the load average column); CPU time itself grows under heavy contention, so the estimates are indicative, not measurements. Target: the default grid finishes in at most 15 minutes with 2 workers on this "
        "machine's 2 cores.",
        "",
        "<details><summary>Summary table of the 2-worker run</summary>",
        "",
        results[-1]["summary"],
        "</details>",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        from _report import write_section

        cmd = "python benchmarks/bench_grid.py" + (f" --workers {' '.join(map(str, args.workers))}" if args.workers != [1, 2] else "") + (
            f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
        write_section("bench_grid", "forge bench: default grid wall time and worker scaling", cmd, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
