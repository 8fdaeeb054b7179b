"""Accuracy and ROC AUC of merged models on the union of the sites' test sets.

For epsilon 1, 8 and infinity (no DP): three simulated hospitals (the bundled breast-cancer
shards, Dirichlet label skew) each train an FFA-LoRA plugin with DP-SGD (Opacus, PRV
accountant, delta 1e-5); the plugins are merged by every Fusion method and by Mixture
(static and routed), and compared with each single plugin and with a plugin trained
centrally on the union of the sites' training sets at the same epsilon. Weights are the
training-set sizes unless marked "tuned"; tuning and the gate use DP synthetic data (each
site releases noisy class means at epsilon 1, pooled), never the test sets.

Intervals: accuracy with the exact Clopper-Pearson 95 % interval; ROC AUC with a seeded
percentile bootstrap over test records (1,000 resamples). The union test set has about 115
records, so differences of a few points are within noise; read the intervals.

Usage: .venv/bin/python benchmarks/bench_merge_utility.py [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _report import write_section  # noqa: E402


def intervals(p: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_boot: int = 1000):
    from scipy.stats import binomtest
    from sklearn.metrics import roc_auc_score

    correct = int((p.argmax(1) == y).sum())
    ci = binomtest(correct, len(y)).proportion_ci(0.95, method="exact")
    score = p[:, 1]
    auc = float(roc_auc_score(y, score))
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            boots.append(roc_auc_score(y[idx], score[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return correct / len(y), (ci.low, ci.high), auc, (float(lo), float(hi))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synth-epsilon", type=float, default=1.0)
    args = ap.parse_args()
    os.environ.setdefault("FORGE_HOME", tempfile.mkdtemp(prefix="forge-bench-"))
    import torch

    torch.set_num_threads(1)
    from forge_secure.merge import build_mixture, fusion_merge
    from forge_secure.plugins.bases import load_base
    from forge_secure.plugins.data import Dataset, bundled_splits
    from forge_secure.plugins.plugin import load_plugin
    from forge_secure.privacy.accountants import compute_epsilon
    from forge_secure.privacy.config import TrainConfig
    from forge_secure.privacy.synthetic import SynthConfig, combine_synthetic, make_synthetic, save_synthetic
    from forge_secure.privacy.train import train_plugin

    base = load_base("tabular-mlp")
    splits = bundled_splits()
    X = np.concatenate([s.test.X for s in splits.sites])
    y = np.concatenate([s.test.y for s in splits.sites])
    union_train = [s.train() for s in splits.sites]
    central_data = Dataset(
        X=np.concatenate([d.X for d in union_train]),
        y=np.concatenate([d.y for d in union_train]),
        n_classes=2,
        name="bundled:union/train",
        kind="tabular",
    )
    work = Path(tempfile.mkdtemp(prefix="forge-merge-bench-"))
    delta = 1e-5
    synth_parts = [
        make_synthetic(base, d, SynthConfig(target_epsilon=args.synth_epsilon, delta=delta, seed=args.seed + i), site=s.site)
        for i, (s, d) in enumerate(zip(splits.sites, union_train, strict=True))
    ]
    synth_path = save_synthetic(combine_synthetic(synth_parts), work / "synth.npz")
    sigma_s = synth_parts[0].meta["release"]["noise_multiplier"]
    results = {}
    notes = []
    started = time.time()
    for eps in (1.0, 8.0, math.inf):
        tag = "inf" if math.isinf(eps) else f"{eps:g}"
        rng = np.random.default_rng(args.seed)

        def cfg(seed, eps=eps):
            common = dict(ffa=True, epochs=args.epochs, batch_size=16, lr=0.1, seed=seed)
            return TrainConfig(no_dp=True, **common) if math.isinf(eps) else TrainConfig(target_epsilon=eps, delta=delta, **common)

        d = work / f"eps-{tag}"
        paths = []
        rows = {}
        for i, (shard, data) in enumerate(zip(splits.sites, union_train, strict=True)):
            plugin = train_plugin(cfg(args.seed + i), data, site=shard.site, base=base, out=d / shard.site)
            paths.append(plugin.path)
            rows[f"single {shard.site} ({len(data)} rows)"] = plugin.predict_proba(X)
            if i == 0 and not math.isinf(eps):
                hist = [tuple(h) for h in plugin.meta["dp"]["history"]] + [(sigma_s, 1.0, 1)]
                notes.append(
                    f"epsilon {tag}: site-1's plugin alone {plugin.meta['dp']['epsilon']:.3g}; with its synthetic-data release "
                    f"composed (PRV) {compute_epsilon(hist, delta):.3g}"
                )
        central = train_plugin(cfg(args.seed + 10), central_data, site="central", base=base, out=d / "central")
        for method in ("exact", "ffa", "ties", "dare"):
            rows[f"Fusion {method}"] = load_plugin(fusion_merge(paths, d / method, method=method, seed=args.seed)).predict_proba(X)
        rows["Fusion ffa, tuned on synthetic"] = load_plugin(
            fusion_merge(paths, d / "ffa-tuned", method="ffa", tune_on=synth_path, seed=args.seed)
        ).predict_proba(X)
        rows["Fusion sequential (MedForge), tuned on synthetic"] = load_plugin(
            fusion_merge(paths, d / "seq", method="sequential", tune_on=synth_path, seed=args.seed)
        ).predict_proba(X)
        rows["Mixture static (rows)"] = build_mixture(paths).predict_proba(X)
        rows["Mixture static, tuned on synthetic (MedForge)"] = build_mixture(paths, tune_on=synth_path, seed=args.seed).predict_proba(X)
        rows["Mixture gate router (synthetic)"] = build_mixture(paths, router="gate", tune_on=synth_path, seed=args.seed).predict_proba(X)
        rows["Mixture similarity router (training-free)"] = build_mixture(paths, router="similarity").predict_proba(X)
        rows[f"central ({len(central_data)} rows)"] = central.predict_proba(X)
        rows["base model (no plugin)"] = np.exp(torch.log_softmax(base.model(torch.tensor(X)).double(), 1).detach().numpy())
        results[tag] = {name: intervals(p, y, rng) for name, p in rows.items()}
        for name, (a, _, auc, _) in results[tag].items():
            print(f"eps {tag:>3} {name:<50} acc {a:.3f} auc {auc:.3f}", flush=True)
    names = list(results["1"].keys())
    lines = [
        f"Union test set: {len(y)} records from the three sites' fixed test "
        f"splits. FFA-LoRA plugins (rank 8, alpha 16), {args.epochs} epochs, "
        f"batch 16, lr 0.1, DP-SGD with PRV accounting at delta {delta:g}; "
        f"seed {args.seed}. Synthetic tuning data: each site releases noisy "
        f"class means at epsilon {args.synth_epsilon:g} (sigma {sigma_s:.3g}, clip 8), pooled; the test sets are never used for tuning. "
        "Accuracy: exact 95 % Clopper-Pearson interval; AUC: 95 % percentile bootstrap.",
        "",
        "| model | " + " | ".join(f"eps {t}: accuracy [95 % CI] | eps {t}: ROC AUC [95 % CI]" for t in results) + " |",
        "|---|" + "---:|---:|" * len(results),
    ]
    for name in names:
        cells = []
        for t in results:
            a, (alo, ahi), auc, (ulo, uhi) = results[t][name]
            cells += [f"{a:.3f} [{alo:.2f}, {ahi:.2f}]", f"{auc:.3f} [{ulo:.2f}, {uhi:.2f}]"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    best_single = {t: max(v[0] for k, v in results[t].items() if k.startswith("single")) for t in results}
    lines += [
        "",
        "Best single plugin's accuracy: " + ", ".join(f"eps {t}: {best_single[t]:.3f}" for t in results) + ". "
        "Merged (Fusion ffa) minus best single: "
        + ", ".join(f"eps {t}: {results[t]['Fusion ffa'][0] - best_single[t]:+.3f}" for t in results)
        + ".",
    ]
    lines += [""] + [f"- {n}" for n in notes]
    lines.append(f"- run time {time.time() - started:.0f} s wall")
    write_section(
        "merge-utility",
        "Merged models on the union test set (accuracy, ROC AUC)",
        "python benchmarks/bench_merge_utility.py",
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
