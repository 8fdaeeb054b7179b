"""Audit power: the epsilon lower bound the one-run audit on auditor canaries reaches (issue 12, item 3).

A `tabular-mlp` plugin (LoRA rank 8, the product defaults except the epochs) is trained on the
bundled site-1 data with the included half of ``M`` auditor canaries
(:func:`forge_secure.privacy.canaries.issue_record`: a fresh auditor secret per repetition,
out-of-distribution records with random labels, fair inclusion coins), without noise and with
DP-SGD at epsilon 1, 4 and 8 (delta 1e-5, PRV accountant, fresh training secret). The audit is
the one of ``audits/checks/canaries.py``: each canary scored by
:func:`audits.checks.canaries.canary_scores` (the log-odds of its label under the plugin), guesses
fixed in advance, the Steinke-Nasr-Jagielski bound at 95 % confidence
(:func:`attacks.metrics.one_run_audit`) with delta = the claim's delta (1e-5; for the no-noise
plugin, the delta of a false claim). Guessing policies, all fixed before any score of these runs is
seen: the audit's default, OUT guesses only for the lowest-scoring quarter (chosen on separate
exploratory runs, not these: with two classes a held-back canary's random label is the one the
plugin predicts half the time, so about a quarter of all canaries are held back AND predicted
wrong, and they score below every memorised included canary; guessing IN adds the canaries whose
label the plugin predicts, as likely held back as included); the previous default (IN for the top
25 %, OUT for the bottom 25 %); and a sparser one (10 % / 10 %).
Beside each bound: the ceiling, the largest epsilon a perfect attack (every guess right) could show
on that sample. The bound is itself a 95 % confidence bound; repetitions (fresh canaries, fresh
secrets) show how it varies from run to run.

    .venv/bin/python benchmarks/bench_audit_power.py [--reps 3] [--counts 64,256,1000,4000] [--epochs 100]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import write_section  # noqa: E402

SITE = "site-1"
DELTA = 1e-5
P_TARGET = 0.05
#: (score, fraction guessed IN from the top, fraction guessed OUT from the bottom); all fixed before these runs
POLICIES = {
    "0/25: OUT guesses only, the lowest quarter (the audit's default)": (0.0, 0.25),
    "25/25: IN for the top quarter, OUT for the lowest (the previous default)": (0.25, 0.25),
    "10/10": (0.10, 0.10),
}
SETTINGS = {"no noise": None, "DP, epsilon 1": 1.0, "DP, epsilon 4": 4.0, "DP, epsilon 8": 8.0}
#: the plugins trained: the product's (LoRA rank 8, every setting) and, for the no-noise plugin only, a
#: higher-capacity one trained longer, which memorises more of its included canaries
VARIANTS = {"rank 8": {"rank": 8, "settings": tuple(SETTINGS)}, "rank 32, 3x epochs": {"rank": 32, "settings": ("no noise",)}}
ANCHOR = 5.48  # ML Privacy Meter, 1000 mislabelled canaries, no noise, one run, delta 1e-5


def audit_one(plugin, cset, mask, delta: float) -> dict:
    from attacks.metrics import one_run_audit, one_run_epsilon
    from audits.checks.canaries import canary_scores

    logits = plugin.logits(cset.X)
    scores = canary_scores(plugin, cset)
    m = len(mask)
    out = {}
    for name, (fp, fm) in POLICIES.items():
        kp, km = int(round(fp * m)), int(round(fm * m))
        a = one_run_audit(scores, mask.astype(int), k_plus=kp, k_minus=km, delta=delta, p_target=P_TARGET)
        ceiling = one_run_epsilon(a["guesses"], a["guesses"], m, delta=delta, p_target=P_TARGET)
        out[name] = {"lb": a["epsilon_lb"], "correct": a["correct"], "guesses": a["guesses"], "ceiling": ceiling}
    acc = logits.argmax(axis=1) == cset.y
    out["acc_in"], out["acc_out"] = float(acc[mask].mean()), float(acc[~mask].mean())
    return out


def run(counts: list[int], reps: int, epochs: int) -> list[dict]:
    """Every (M, repetition) draws one canary set and trains every variant's settings on it."""
    import torch

    from forge_secure.plugins.data import load_data
    from forge_secure.privacy import TrainConfig, train_plugin
    from forge_secure.privacy.canaries import all_canaries, issue_record

    torch.set_num_threads(1)
    site = load_data(f"bundled:{SITE}")
    rows = []
    for m in counts:
        for rep in range(reps):
            record = issue_record(SITE, m, site)
            cset, mask = all_canaries(record)
            data = site.concat(cset.subset(mask), name=site.name)
            for variant, spec in VARIANTS.items():
                ep = epochs if spec["rank"] == 8 else 3 * epochs
                for setting in spec["settings"]:
                    eps = SETTINGS[setting]
                    common = dict(rank=spec["rank"], alpha=2 * spec["rank"], epochs=ep)
                    cfg = TrainConfig(no_dp=True, **common) if eps is None else TrainConfig(target_epsilon=eps, delta=DELTA, **common)
                    c0 = time.process_time()
                    plugin = train_plugin(cfg, data, site=SITE)
                    seconds = time.process_time() - c0
                    dp = plugin.meta["dp"]
                    claimed = math.inf if eps is None else float(dp["epsilon"])
                    res = audit_one(plugin, cset, mask, DELTA)
                    rows.append(
                        {
                            "m": m,
                            "rep": rep,
                            "variant": variant,
                            "epochs": ep,
                            "setting": setting,
                            "claimed": claimed,
                            "rows": len(data),
                            "sigma": dp.get("noise_multiplier"),
                            "cpu_s": seconds,
                            **res,
                        }
                    )
                    print(
                        f"M={m} rep={rep} {variant} {setting}: "
                        + ", ".join(
                            f"{p} lb {res[p]['lb']:.3f} ({res[p]['correct']}/{res[p]['guesses']}, ceiling {res[p]['ceiling']:.3f})"
                            for p in POLICIES
                        )
                        + f"; canary accuracy in {res['acc_in']:.2f} / out {res['acc_out']:.2f}; {seconds:.1f} s",
                        flush=True,
                    )
    return rows


def _cells(rows: list[dict], m: int):
    for variant, spec in VARIANTS.items():
        for setting in spec["settings"]:
            cell = [r for r in rows if r["m"] == m and r["variant"] == variant and r["setting"] == setting]
            if cell:
                yield variant, setting, cell


def render(rows: list[dict], counts: list[int], reps: int, epochs: int, total_s: float) -> str:
    lines = [
        f"`tabular-mlp` on bundled {SITE} data plus the included half of M auditor canaries; batch 32, lr 0.05, C = 1. Plugins: "
        f"LoRA rank 8 (the product default) trained {epochs} epochs, without noise and with DP at epsilon 1, 4, 8 (delta "
        f"{DELTA:g}, PRV); and, without noise only, LoRA rank 32 trained {3 * epochs} epochs, which memorises more of its "
        "included canaries than rank 8 does (compare the canary accuracies: neither memorises thousands). "
        f"One-run audit at 95 % confidence, delta {DELTA:g}; "
        f"{reps} repetitions per cell (fresh canaries, fresh secrets). Cells: median lower bound [min, max over repetitions]; "
        "ceiling = the largest bound a perfect attack (every guess right) could show on that sample under the same policy.",
        "",
    ]
    for policy in POLICIES:
        lines += [
            f"Policy: {policy}:",
            "",
            "| M | plugin | epochs | sigma | claimed epsilon | **epsilon lower bound** median [min, max] | correct / guesses "
            "(median) | ceiling | bound <= claim | canary accuracy included / held back |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in counts:
            for variant, setting, cell in _cells(rows, m):
                lbs = [r[policy]["lb"] for r in cell]
                claimed = cell[0]["claimed"]
                ok = sum(lb <= c["claimed"] for lb, c in zip(lbs, cell, strict=True))
                sig = "-" if cell[0]["sigma"] is None else f"{np.median([r['sigma'] for r in cell]):.3f}"
                lines.append(
                    f"| {m} | {variant}, {setting} | {cell[0]['epochs']} | {sig} "
                    f"| {'none (inf)' if math.isinf(claimed) else f'{claimed:.3g}'} "
                    f"| **{np.median(lbs):.3f}** [{min(lbs):.3f}, {max(lbs):.3f}] "
                    f"| {int(np.median([r[policy]['correct'] for r in cell]))} / {cell[0][policy]['guesses']} "
                    f"| {cell[0][policy]['ceiling']:.3f} | {'n/a' if math.isinf(claimed) else f'{ok}/{len(cell)}'} "
                    f"| {np.median([r['acc_in'] for r in cell]):.2f} / {np.median([r['acc_out'] for r in cell]):.2f} |"
                )
        lines.append("")
    dp_rows = [r for r in rows if not math.isinf(r["claimed"])]
    above = [r for r in dp_rows if any(r[p]["lb"] > r["claimed"] for p in POLICIES)]
    lines.append(
        f"DP plugins: {len(dp_rows) - len(above)} of {len(dp_rows)} stay below their claim under every policy"
        + ("." if not above else ": NOT " + ", ".join(f"M={r['m']} {r['setting']} rep {r['rep']}" for r in above) + ".")
    )
    lines += [
        "",
        "A false claim of epsilon 1 on a no-noise plugin: repetitions in which the bound exceeds 1 (the claim is contradicted):",
        "",
    ]
    for m in counts:
        for variant, setting, cell in _cells(rows, m):
            if setting != "no noise":
                continue
            lines.append(
                f"- M = {m}, {variant}: "
                + "; ".join(
                    f"{p}: {sum(r[p]['lb'] > 1.0 for r in cell)}/{len(cell)} (bounds {', '.join(format(r[p]['lb'], '.2f') for r in cell)})"
                    for p in POLICIES
                )
            )
    for variant, setting, cell in _cells(rows, 1000):
        if setting != "no noise":
            continue
        best = max(max(r[p]["lb"] for p in POLICIES) for r in cell)
        per = "; ".join(f"{p}: median {np.median([r[p]['lb'] for r in cell]):.2f} (ceiling {cell[0][p]['ceiling']:.2f})" for p in POLICIES)
        lines += [
            "",
            f"Anchor: ML Privacy Meter reports {ANCHOR} for a model trained without noise with 1000 mislabelled canaries "
            f"(one run, delta 1e-5). Here, M = 1000, {variant}, no noise: {per}; best single run {best:.2f}.",
        ]
    lines += [
        "",
        "What limits the no-noise rows at M = 1000 and 4000 is memorisation, not the audit: the canary accuracy "
        "columns show how many included canaries the plugin predicts (a held-back one is predicted half the time, by "
        "chance). `tabular-mlp` has one hidden layer of 64 units, and a LoRA adapter on it memorises all of about 128 "
        "random-label canaries but only part of 500 or 2000; the OUT guesses are right only where every included "
        "canary scores above the held-back ones it does not predict. ML Privacy Meter's 5.48 comes from a CIFAR-10 "
        "network with millions of weights memorising 1000 mislabelled canaries. The sample of 4000 canaries could "
        "show 5.70 here, above that anchor, but this base cannot memorise enough of them: exploratory runs (not "
        "these) with LoRA rank 64, and with canaries placed on the base's decision boundary, memorised no more "
        "(0.74 of 2000 included).",
    ]
    lines += ["", f"Total runtime {total_s / 60:.1f} min (CPU, one thread, all cells)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--counts", default="64,256,1000,4000")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    c0 = time.process_time()
    rows = run(counts, args.reps, args.epochs)
    text = render(rows, counts, args.reps, args.epochs, time.process_time() - c0)
    print(text)
    if not args.no_write:
        cmd = "python benchmarks/bench_audit_power.py"
        if (args.reps, args.counts, args.epochs) != (3, "64,256,1000,4000", 100):
            cmd += f" --reps {args.reps} --counts {args.counts} --epochs {args.epochs}"
        write_section("audit_power", "Audit power: the one-run audit on auditor canaries", cmd, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
