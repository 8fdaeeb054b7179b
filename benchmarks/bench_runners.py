"""Benchmark: runner scaling, and the choice of the default runner.

1. A ``forge bench`` grid whose cells each take 10 s or more in one process, run three ways
   from an empty cache: in this process (``workers=1``, the baseline), on 2 persistent local
   workers (``forge_secure.parallel.WorkerPool``), and on a local Ray with 2 long-lived
   actors. Wall times include starting the workers (their imports and base loads) and Ray.
   Target (issue 15): 2 workers at least 1.7x one process.
2. 64 reference models (batched) in this process against 2 persistent workers, cold (the
   pool starts with the call) and warm (the same pool's second call): the measurement behind
   ``forge attack mia --workers``'s default of 1.

Writes the ``runners`` section of docs/benchmarks.md.

Usage: ``.venv/bin/python benchmarks/bench_runners.py [--groups 6] [--no-ray] [--no-write]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def grid_config(groups: int, references: int, epochs: int):
    from attacks.bench import config_from_dict

    return config_from_dict(
        {
            "bench": {"seeds": list(range(groups))},
            "data": {"n_sites": 2},
            "training": {"epochs": epochs, "batch_size": 16},
            "grid": {"epsilon": ["inf"], "rank": [4], "lora": ["ffa"], "merge": ["none"], "attack": ["lira"]},
            "attack": {"lira": {"references": references}},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=6, help="grid cells (one training group each)")
    ap.add_argument("--references", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-runners-"))
    os.environ.setdefault("FORGE_HOME", str(work / "home"))
    from attacks.bench.runner import run_bench
    from forge_secure.parallel import close_pools

    cfg = grid_config(args.groups, args.references, args.epochs)
    run_bench(grid_config(1, 2, 1), work / "warm", cache_root=work / "cache-warm", workers=1)  # imports and base cache
    # "1 process" uses torch's default threads (both cores); "1 process, 1 thread" is one worker's share, the unit
    # that N workers (one torch thread each) multiply
    modes = [
        ("1 process", {"workers": 1}),
        ("1 process, 1 torch thread", {"workers": 1, "threads": 1}),
        ("2 persistent workers", {"workers": 2}),
    ]
    if not args.no_ray:
        modes.append(("Ray, 2 actors (local)", {"workers": 2, "ray": "auto"}))
    grid = []
    import torch

    for label, kw in modes:
        kw = dict(kw)
        threads, saved = kw.pop("threads", None), torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        t = time.perf_counter()
        try:
            res = run_bench(cfg, work / f"out-{len(grid)}", cache_root=work / f"cache-{len(grid)}", **kw)
        finally:
            torch.set_num_threads(saved)
        wall = time.perf_counter() - t
        close_pools()
        grid.append((label, wall, res.cpu_seconds, res.computed))
        print(label, f"{wall:.1f}s", flush=True)

    # the default runner of reference training
    from attacks.references import train_references
    from forge_secure.parallel import worker_pool
    from forge_secure.plugins.data import load_data
    from forge_secure.plugins.sources import prepare_training_data
    from forge_secure.privacy import TrainConfig, train_plugin

    td = prepare_training_data("bundled:site-1")
    meta = train_plugin(TrainConfig(target_epsilon=8.0, delta=1e-3, epochs=30, batch_size=16), td.data, site="site-1").meta
    cands, pop = load_data("bundled:site-1/pool"), load_data("bundled:public")
    train_references(meta, cands, pop, count=2, cache=False)
    refs = []
    for label, workers in (("1 process (default)", 1), ("2 persistent workers, cold", 2), ("2 persistent workers, warm", 2)):
        t = time.perf_counter()
        train_references(meta, cands, pop, count=64, seed=len(refs), cache=False, workers=workers)
        refs.append((label, time.perf_counter() - t))
        print(label, f"{refs[-1][1]:.1f}s", flush=True)
    assert worker_pool(2).workers == 2
    close_pools()

    one, one_thread = grid[0][1], grid[1][1]
    load = os.getloadavg()
    lines = [
        f"Machine load while measuring: load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on "
        f"{os.cpu_count()} cores. Speed-ups need idle cores: on a machine busier than its core count, extra workers only "
        "compete with the other processes for the same cores.",
        "",
        f"Grid: {args.groups} cells (no DP, FFA-LoRA rank 4, 2 sites, {args.epochs} epochs, LiRA with {args.references} references, "
        "every reference the whole pipeline), empty cache each time; wall time includes starting the workers.",
        "",
        '"1 process" lets torch use every core inside one process (its CPU time exceeds its wall time); "1 process, '
        "1 torch thread\" is what one worker does (each worker runs one torch thread), so the workers' scaling is the "
        "last column. Each worker first imports torch, PEFT (with transformers) and Opacus, about 10 s of CPU on this "
        "machine (`python -X importtime`), which the wall times include; that start is what keeps 2 workers below 2x one "
        "thread, and it is paid once per run, not per cell.",
        "",
        "| runner | wall time | seconds per cell | speed-up over 1 process | speed-up over 1 thread | worker CPU time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, wall, cpu, n in grid:
        lines.append(f"| {label} | {wall:.1f} s | {wall / max(n, 1):.1f} s | {one / wall:.2f}x | {one_thread / wall:.2f}x | {cpu:.0f} s |")
    lines += [
        "",
        "64 batched reference models (DP epsilon 8 recipe), no cache:",
        "",
        "| runner | wall time | ratio to 1 process |",
        "|---|---:|---:|",
    ]
    for label, wall in refs:
        lines.append(f"| {label} | {wall:.1f} s | {refs[0][1] / wall:.2f}x |")
    lines += [
        "",
        "Default: `--workers 1` for reference training (batched references in one process are not slower than "
        "splitting them over workers that must first import torch and load the base); `--workers N` and `--ray` "
        "for grids of long cells, where the persistent workers pay their start once.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _report import write_section

        write_section(
            "runners",
            "Runner scaling: one process, persistent workers, Ray actors",
            f"python benchmarks/bench_runners.py --groups {args.groups} --references {args.references} --epochs {args.epochs}"
            + (" --no-ray" if args.no_ray else ""),
            body,
        )


if __name__ == "__main__":
    main()
