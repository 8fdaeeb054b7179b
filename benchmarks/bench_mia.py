"""Benchmark: the membership-inference suite on the bundled data.

Measures, in one run, and writes the ``mia`` section of docs/benchmarks.md:

1. LiRA (online / offline, per-example and fixed variance) and RMIA (online / offline)
   with 4, 16 and 64 reference models against a plugin trained on ``bundled:site-1``:
   ROC AUC, TPR at 0.1 % and 1 % FPR (with the FPR reached and 95 % bootstrap intervals),
   the empirical epsilon, and wall time (reference training, every reference trained
   afresh, plus scoring);
2. reference-model throughput: local worker processes against one process (ratio), and a
   local Ray;
3. agreement of the library's LiRA scores with an independent plain-NumPy computation of
   the paper's formula (Carlini et al. 2022, Eq. 4 and Alg. 1) on the same logits.

Usage: ``.venv/bin/python benchmarks/bench_mia.py [--quick] [--target-dp] [--no-ray]``.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- independent LiRA


def numpy_lira(target_logits, ref_logits, in_mask, labels, *, online=True, fixed_variance=False):
    """LiRA written from the paper, record by record, sharing no code with the library.

    phi = log(p_y / (1 - p_y)) from softmax probabilities p = exp(z - max z) / sum exp(z - max z)
    (Carlini et al. 2022, Sec. 4.2); online: log N(phi; mu_in, s_in^2) - log N(phi; mu_out,
    s_out^2), offline: log P[Z <= phi], Z ~ N(mu_out, s_out^2); mu = median, s = std per record,
    or one std over all IN (OUT) statistics with fixed variance.
    """
    from math import erfc, log, pi, sqrt

    def phi_of(z, y):
        z = np.asarray(z, dtype=np.float64)
        e = np.exp(z - z.max())
        p = e / e.sum()
        rest = sum(p[k] for k in range(len(p)) if k != y)  # sum over y' != y, not 1 - p_y
        return log(p[y]) - log(rest)

    def log_normal_pdf(x, mu, s):
        return -0.5 * log(2 * pi * s * s) - (x - mu) ** 2 / (2 * s * s)

    R, n = in_mask.shape
    phis = np.array([[phi_of(ref_logits[r, i], labels[i]) for i in range(n)] for r in range(R)])
    all_in = [phis[r, i] for r in range(R) for i in range(n) if in_mask[r, i]]
    all_out = [phis[r, i] for r in range(R) for i in range(n) if not in_mask[r, i]]
    out = np.empty(n)
    for i in range(n):
        x = phi_of(target_logits[i], labels[i])
        ins = [phis[r, i] for r in range(R) if in_mask[r, i]]
        outs = [phis[r, i] for r in range(R) if not in_mask[r, i]]
        mu_out = float(np.median(outs))
        s_out = max(float(np.std(all_out if fixed_variance else outs)), 1e-6)
        if online:
            mu_in = float(np.median(ins))
            s_in = max(float(np.std(all_in if fixed_variance else ins)), 1e-6)
            out[i] = log_normal_pdf(x, mu_in, s_in) - log_normal_pdf(x, mu_out, s_out)
        else:
            cdf = 0.5 * erfc(-(x - mu_out) / (s_out * sqrt(2)))  # erfc keeps the lower tail accurate
            out[i] = log(cdf) if cdf > 0 else -math.inf
    return out


# --------------------------------------------------------------------------- helpers


def _fmt_ci(v, ci, pct=False):
    k = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    return f"{k * v:.{1 if pct else 3}f}{unit} [{k * ci[0]:.{1 if pct else 3}f}, {k * ci[1]:.{1 if pct else 3}f}]"


def train_target(out_dir: Path, *, no_dp: bool, epochs: int, rank: int, seed: int = 0) -> Path:
    from forge_secure.plugins.sources import prepare_training_data
    from forge_secure.privacy import TrainConfig, train_plugin

    td = prepare_training_data("bundled:site-1")
    cfg = (
        TrainConfig(epochs=epochs, batch_size=16, lr=0.05, rank=rank, alpha=2 * rank, seed=seed, no_dp=True)
        if no_dp
        else TrainConfig(epochs=epochs, batch_size=16, lr=0.05, rank=rank, alpha=2 * rank, seed=seed, target_epsilon=8.0, delta=1e-3)
    )
    train_plugin(cfg, td.data, site="site-1", commitment=td.commitment, out=out_dir)
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 and 16 references only, fewer bootstrap replicates")
    ap.add_argument("--target-dp", action="store_true", help="attack a DP (epsilon 8) target instead of a non-DP one")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray throughput row")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes in the throughput comparison")
    ap.add_argument(
        "--grid-workers",
        type=int,
        default=1,
        help="workers for the attack grid (default 1: in this process, which avoids each spawn's import cost)",
    )
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    from attacks import metrics as M
    from attacks.membership.base import make_attack
    from attacks.membership.run import resolve_candidates
    from attacks.membership.target import load_target
    from attacks.references import ReferenceSet, train_references
    from forge_secure.plugins.data import load_data

    counts = (4, 16) if args.quick else (4, 16, 64)
    n_boot = 200 if args.quick else 1000
    work = Path(tempfile.mkdtemp(prefix="bench-mia-"))
    os.environ.setdefault("FORGE_HOME", str(work / "home"))

    t0 = time.perf_counter()
    target_dir = train_target(work / "target", no_dp=not args.target_dp, epochs=args.epochs, rank=args.rank)
    t_target = time.perf_counter() - t0
    target = load_target(target_dir)
    cands = resolve_candidates("bundled:site-1", meta=target.meta)
    pop = load_data("bundled:public")
    t_logits, p_logits = target.logits(cands.data.X), target.logits(pop.X)
    y = cands.data.y
    claimed = target.claimed_epsilon
    delta = float(claimed["delta"]) if claimed.get("delta") is not None else 0.0

    variants = [
        ("LiRA online", "lira", {"online": True}),
        ("LiRA online, fixed var.", "lira", {"online": True, "fixed_variance": True}),
        ("LiRA offline", "lira", {"online": False}),
        ("LiRA offline, fixed var.", "lira", {"online": False, "fixed_variance": True}),
        ("RMIA online", "rmia", {"online": True}),
        ("RMIA offline", "rmia", {"online": False}),
    ]
    rows = []
    refsets: dict[tuple[int, bool], ReferenceSet] = {}
    train_time: dict[tuple[int, bool], float] = {}
    for R in counts:
        for online in (True, False):
            cache_root = work / f"cache-{R}-{online}"  # fresh cache: every reference trained in this timing
            t = time.perf_counter()
            refsets[(R, online)] = train_references(
                target.meta,
                cands.data,
                pop,
                count=R,
                seed=0,
                online=online,
                workers=args.grid_workers,
                cache_root=cache_root,
                base_digest=target.base.digest,
            )
            train_time[(R, online)] = time.perf_counter() - t
            print(f"trained {R} {'online' if online else 'offline'} references in {train_time[(R, online)]:.1f}s", flush=True)
        for label, name, kw in variants:
            refs = refsets[(R, kw["online"])]
            t = time.perf_counter()
            attack = make_attack(name, **kw).fit(refs, y, population_labels=pop.y)
            scores = attack.score(t_logits, y, population_target_logits=p_logits)
            t_score = time.perf_counter() - t
            m = M.attack_metrics(scores, cands.labels, n_boot=n_boot, seed=0)
            eps = M.split_clopper_pearson_epsilon(scores, cands.labels, delta=delta, seed=0)["epsilon_lb"]
            k = max(1, round(0.1 * len(scores)))
            one = M.one_run_audit(scores, cands.labels, k_plus=k, k_minus=k, delta=delta)["epsilon_lb"]
            rows.append((R, label, m, eps, one, train_time[(R, kw["online"])] + t_score))
            print(R, label, f"AUC {m['auc']['value']:.3f}", flush=True)

    # LiRA agreement with the independent NumPy implementation
    agree = []
    R = counts[-1]
    refs = refsets[(R, True)]
    for label, kw in (
        ("online", {"online": True}),
        ("online, fixed var.", {"online": True, "fixed_variance": True}),
        ("offline", {"online": False}),
    ):
        lib = make_attack("lira", **kw).fit(refs, y).score(t_logits, y)
        ref_np = numpy_lira(t_logits, refs.candidate_logits, refs.in_mask, y, **kw)
        ok = np.isfinite(ref_np)  # the plain formula underflows to log 0 in the far tail; the library does not
        rel = np.abs(lib[ok] - ref_np[ok]) / np.maximum(1.0, np.abs(ref_np[ok]))
        agree.append((label, float(np.max(rel)), float(np.max(np.abs(ref_np[ok]))), int((~ok).sum())))

    # throughput: one process vs worker processes vs local Ray (same 8 references, no cache)
    n_tp = 8
    tp = []
    modes = [("1 process", {"workers": 1}), (f"{args.workers} worker processes", {"workers": args.workers})]
    if not args.no_ray:
        modes.append((f"local Ray ({args.workers} CPUs)", {"workers": args.workers, "ray": "auto"}))
    for label, kw in modes:
        t = time.perf_counter()
        train_references(target.meta, cands.data, pop, count=n_tp, seed=99, online=True, cache=False, base_digest=target.base.digest, **kw)
        dt = time.perf_counter() - t
        tp.append((label, dt, n_tp / dt))
        print(label, f"{n_tp / dt:.2f} refs/s", flush=True)

    # ------------------------------------------------------------------ report
    lines = [
        f"Target: a plugin on `bundled:site-1` ({'DP, target epsilon 8' if args.target_dp else 'no DP'}, rank {args.rank}, "
        f"{args.epochs} epochs, claimed epsilon {claimed['epsilon']}), {len(y)} candidates "
        f"({int(cands.labels.sum())} members by coin flip), population `bundled:public` ({len(pop)} records). "
        f"Target trained in {t_target:.1f}s. Intervals: 95 % stratified bootstrap ({n_boot} replicates). "
        f"With {int((cands.labels == 0).sum())} non-members the smallest resolvable FPR is "
        f"{100 / max(1, int((cands.labels == 0).sum())):.1f} %, so TPR at 0.1 % and 1 % FPR is measured at FPR 0 "
        '(column "FPR reached").',
        "",
        "| refs | attack | ROC AUC [95 % CI] | TPR at 0.1 % FPR | TPR at 1 % FPR | FPR reached | eps LB (CP / one-run) | wall time |",
        "|---:|---|---|---|---|---|---|---:|",
    ]
    for R, label, m, eps, one, wall in rows:
        t1, t2 = m["tpr_at_fpr"]
        lines.append(
            f"| {R} | {label} | {_fmt_ci(m['auc']['value'], m['auc']['ci'])} | {_fmt_ci(t1['tpr'], t1['ci'], True)} | "
            f"{_fmt_ci(t2['tpr'], t2['ci'], True)} | {100 * t1['fpr_reached']:.2f} % / {100 * t2['fpr_reached']:.2f} % | "
            f"{eps:.2f} / {one:.2f} | {wall:.1f} s |"
        )
    lines += [
        "",
        "Wall time = training that many references afresh (online and offline references are separate sets) plus scoring.",
        "",
        f"Reference-model throughput ({n_tp} references, no cache):",
        "",
        "| runner | wall time | references / s | ratio to 1 process |",
        "|---|---:|---:|---:|",
    ]
    for label, dt, rate in tp:
        lines.append(f"| {label} | {dt:.1f} s | {rate:.2f} | {rate / tp[0][2]:.2f}x |")
    lines += [
        "",
        f"LiRA agreement with an independent NumPy implementation of the paper's formula ({R} references, same logits):",
        "",
        "| variant | max difference (relative, floor 1) | max abs score | records where the plain formula underflows |",
        "|---|---:|---:|---:|",
    ]
    for label, diff, scale, bad in agree:
        lines.append(f"| {label} | {diff:.2e} | {scale:.2e} | {bad} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # a site-packages "benchmarks" shadows this folder
        from _report import write_section

        cmd = "python benchmarks/bench_mia.py" + (" --quick" if args.quick else "") + (" --target-dp" if args.target_dp else "")
        write_section("mia", "Membership inference: LiRA / RMIA, reference throughput, LiRA agreement", cmd, body)


if __name__ == "__main__":
    main()
