"""Benchmark: which membership attack (and variant) is strongest at the default budget?

At the default number of reference models (16), on three targets trained on
``bundled:site-1`` (the demo's DP FFA-LoRA recipe at epsilon 8; ``forge train --no-dp``'s
default recipe; an overfit no-DP recipe with 40 canaries), every attack variant is scored
through ``forge attack mia``'s own path (``run_mia``): one run with online references and
one with offline references per target, then every other variant re-derived from the saved
signals with ``attacks.membership.rescore`` (the same references, no retraining).

Honest selection: the default is chosen on reference seed 0 (the highest AUC averaged over
the targets, TPR at 1 % FPR breaking ties) and its figures are then reported on fresh
references (seed 1), which played no part in the choice. Intervals: 95 % bootstrap.
Writes the ``default-attack`` section of docs/benchmarks.md.

Usage: ``.venv/bin/python benchmarks/bench_default_attack.py [--references 16] [--no-write]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = {
    "demo: DP FFA-LoRA, epsilon 8": dict(target_epsilon=8.0, ffa=True),
    "no DP, default recipe": dict(no_dp=True),
    "no DP, overfit + 40 canaries": dict(no_dp=True, epochs=60, batch_size=16, lr=0.1, rank=16, alpha=32, canaries=40),
}
VARIANTS = [  # (label, attack, settings, references' mode)
    ("LiRA online", "lira", {"online": True, "fixed_variance": False}, "online"),
    ("LiRA online, fixed variance", "lira", {"online": True, "fixed_variance": True}, "online"),
    ("LiRA offline", "lira", {"online": False, "fixed_variance": False}, "offline"),
    ("LiRA offline, fixed variance", "lira", {"online": False, "fixed_variance": True}, "offline"),
    ("RMIA online", "rmia", {"online": True}, "online"),
    ("RMIA offline", "rmia", {"online": False}, "offline"),
    ("reference-calibrated loss", "reference", {}, "online"),
    ("LOSS (no references)", "loss", {}, "online"),
]


def train_target(out: Path, cfg: dict) -> Path:
    from forge_secure.plugins.sources import default_canary_seed, prepare_training_data
    from forge_secure.privacy import TrainConfig, train_plugin

    cfg = dict(cfg)
    canaries = cfg.pop("canaries", 0)
    td = prepare_training_data("bundled:site-1", canaries=canaries, canary_seed=default_canary_seed("site-1", 0) if canaries else None)
    train_plugin(TrainConfig(seed=0, **cfg), td.data, site="site-1", commitment=td.commitment, out=out)
    return out


def measure_target(path: Path, references: int, seed: int, n_boot: int) -> dict[str, dict]:
    from attacks.membership import rescore
    from attacks.membership.run import MiaSettings, run_mia

    base = {}
    for mode in ("online", "offline"):
        base[mode] = run_mia(
            path,
            "bundled:site-1",
            settings=MiaSettings(attack="lira", online=mode == "online", references=references, seed=seed, n_boot=n_boot),
        )
    return {label: rescore(base[mode], attack, **kw) for label, attack, kw, mode in VARIANTS}


def _row(res: dict) -> tuple[float, tuple, float, float]:
    m = res["metrics"]
    tpr1 = next(r for r in m["tpr_at_fpr"] if abs(r["target_fpr"] - 0.01) < 1e-12)
    return m["auc"]["value"], tuple(m["auc"]["ci"]), tpr1["tpr"], res["empirical_epsilon"]["epsilon_lb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--references", type=int, default=16)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-default-attack-"))
    os.environ.setdefault("FORGE_HOME", str(work / "home"))
    t0 = time.perf_counter()
    paths = {name: train_target(work / f"target-{i}", cfg) for i, (name, cfg) in enumerate(TARGETS.items())}
    table: dict[int, dict[str, dict[str, tuple]]] = {}
    for seed in (0, 1):
        table[seed] = {}
        for name, path in paths.items():
            for label, res in measure_target(path, args.references, seed, args.n_boot).items():
                table[seed].setdefault(label, {})[name] = _row(res)
            print(f"seed {seed}: {name} done ({time.perf_counter() - t0:.0f}s)", flush=True)

    def mean(seed, label, k):
        return float(np.mean([v[k] for v in table[seed][label].values()]))

    ranked = sorted(table[0], key=lambda lab: (mean(0, lab, 0), mean(0, lab, 2)), reverse=True)
    best = ranked[0]
    names = list(TARGETS)
    lines = [
        f"{args.references} reference models (the default), candidates = the pool of `bundled:site-1` (members by coin flip; the "
        "overfit target adds its 40 canaries), population `bundled:public`. Each cell: ROC AUC [95 % bootstrap CI] / TPR at 1 % FPR. "
        "Online and offline references are separate sets (offline ones never saw a candidate); every variant of a mode is rescored "
        "from the same saved signals.",
        "",
    ]
    for seed, title in (
        (0, "Selection (reference seed 0): the default is the first row"),
        (1, "Confirmation on fresh references (seed 1, not used for the choice)"),
    ):
        lines += [f"**{title}**", "", "| attack | " + " | ".join(names) + " | mean AUC |", "|---|" + "---|" * len(names) + "---:|"]
        for label in ranked if seed == 0 else [best] + [x for x in ranked if x != best]:
            cells = []
            for n in names:
                auc, ci, tpr, _ = table[seed][label][n]
                cells.append(f"{auc:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] / {100 * tpr:.1f} %")
            lines.append(f"| {label}{' (default)' if label == best else ''} | " + " | ".join(cells) + f" | {mean(seed, label, 0):.3f} |")
        lines.append("")
    lines.append(
        f"Chosen default: **{best}** (highest mean AUC at seed 0; on fresh references its mean AUC is {mean(1, best, 0):.3f}, "
        f"rank {1 + sorted(table[1], key=lambda lab: mean(1, lab, 0), reverse=True).index(best)} of {len(ranked)}). "
        f"Total time {time.perf_counter() - t0:.0f} s."
    )
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _report import write_section

        write_section(
            "default-attack",
            "Membership: the default attack, chosen by measurement",
            f"python benchmarks/bench_default_attack.py --references {args.references} --n-boot {args.n_boot}",
            body,
        )


if __name__ == "__main__":
    main()
