"""Benchmark: reference models per second, batched against one at a time.

Trains 1, 8 and 64 reference models with the recipe of a target plugin on ``bundled:site-1``
(online splits topped up to the target's training-set size, no cache), in this process:

- one at a time: ``train_references(..., batch=False, workers=1)`` (``train_plugin`` per reference);
- batched: ``train_references(..., batch=True, workers=1)`` (:mod:`attacks.reference_batch`).

The target ratio (issue 15): 64 batched references in at most 8x the wall time of one
reference trained the ordinary way. Imports and the base load are done before timing (both
paths share them); each figure is the median of ``--repeat`` runs. Writes the ``references``
section of docs/benchmarks.md.

Usage: ``.venv/bin/python benchmarks/bench_references.py [--quick] [--no-write]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPES = {
    "DP (epsilon 8)": dict(target_epsilon=8.0, delta=1e-3, epochs=30, batch_size=16, lr=0.05, rank=8, alpha=16),
    "no DP": dict(no_dp=True, epochs=30, batch_size=16, lr=0.05, rank=8, alpha=16),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 and 8 references only, one repeat")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-refs-"))
    os.environ.setdefault("FORGE_HOME", str(work / "home"))
    import torch

    torch.set_num_threads(1)
    from attacks.references import train_references
    from forge_secure.plugins.data import load_data
    from forge_secure.plugins.sources import prepare_training_data
    from forge_secure.privacy import TrainConfig, train_plugin

    counts = (1, 8) if args.quick else (1, 8, 64)
    repeat = 1 if args.quick else args.repeat
    td = prepare_training_data("bundled:site-1")
    cands, pop = load_data("bundled:site-1/pool"), load_data("bundled:public")
    rows = []
    for label, cfg in RECIPES.items():
        meta = train_plugin(TrainConfig(**cfg), td.data, site="site-1", commitment=td.commitment).meta
        train_references(meta, cands, pop, count=2, cache=False, batch=True)  # warm: imports, base, accountant cache
        train_references(meta, cands, pop, count=1, cache=False, batch=False)
        times: dict[tuple[int, bool], float] = {}
        cpu: dict[tuple[int, bool], float] = {}
        for R in counts:
            for batch in (False, True):
                runs, cpus = [], []
                for k in range(repeat):
                    t, c = time.perf_counter(), time.process_time()
                    train_references(meta, cands, pop, count=R, seed=100 + k, cache=False, batch=batch, workers=1)
                    runs.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
                times[(R, batch)], cpu[(R, batch)] = statistics.median(runs), statistics.median(cpus)
                print(
                    label,
                    R,
                    "batched" if batch else "one at a time",
                    f"{times[(R, batch)]:.2f}s wall, {cpu[(R, batch)]:.2f}s CPU",
                    flush=True,
                )
        rows.append((label, times, cpu))

    lines = [
        f"Target recipes on `bundled:site-1` ({len(td.data)} training records; rank 8, 30 epochs, batch 16); references "
        f"online, topped up to the target's size; median of {repeat} runs, in one process with one torch thread.",
        "",
        "Wall time is what a user waits on this machine; CPU time (one thread) is the same work without the other "
        "processes sharing the cores, so it is the figure to compare across loads.",
        "",
        "| recipe | references | one at a time: wall (CPU) | batched: wall (CPU) | references / s, wall (one at a time → batched) "
        "| batched / one reference: wall (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, times, cpu in rows:
        one, one_c = times[(1, False)], cpu[(1, False)]
        for R in counts:
            a, b = times[(R, False)], times[(R, True)]
            lines.append(
                f"| {label} | {R} | {a:.2f} s ({cpu[(R, False)]:.2f} s) | {b:.2f} s ({cpu[(R, True)]:.2f} s) | "
                f"{R / a:.1f} → {R / b:.1f} | {b / one:.1f}x ({cpu[(R, True)] / one_c:.1f}x) |"
            )
    if 64 in counts:
        worst = max(t[(64, True)] / t[(1, False)] for _, t, _ in rows)
        worst_c = max(c[(64, True)] / c[(1, False)] for _, _, c in rows)
        lines += [
            "",
            f"64 batched references cost at most **{worst:.1f}x** the wall time (**{worst_c:.1f}x** the CPU time) of one "
            f"reference trained one at a time (target: at most 8x).",
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _report import write_section

        write_section(
            "references",
            "Reference models: batched against one at a time",
            "python benchmarks/bench_references.py" + (" --quick" if args.quick else f" --repeat {args.repeat}"),
            body,
        )


if __name__ == "__main__":
    main()
