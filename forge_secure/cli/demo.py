"""`forge demo`: the whole forge-secure path on the bundled data, in stages.

Stage 1 (issue 2), "sites": three simulated hospitals (the bundled breast-cancer shards,
non-IID) each train a DP FFA-LoRA plugin on their coin-flip training set at epsilon 8,
with their own budget ledger, and are evaluated on their test split. Later issues append
stages (sealing, merging, attacks, audit) to :data:`STAGES`; each stage is a function
``stage(ctx) -> None`` that reads and extends the context dict and prints what it did.

The demo writes only inside ``--out`` (default ``./forge-demo``): it is built in a
temporary sibling and renamed into place at the end, so a failed run leaves nothing. A
rerun replaces its own previous output, recognised by the marker file
``.forge-demo.json``; any other non-empty directory is refused. Its ledgers live inside
the demo directory, so the demo never touches the user's real budget ledgers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import ForgeFileError
from ..fileio import atomic_directory, atomic_write_json
from . import _common

MARKER = ".forge-demo.json"
DEMO_SITES = ("site-1", "site-2", "site-3")
DEMO_EPSILON = 8.0
DEMO_BUDGET = 10.0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this area's sub-commands to the `forge` parser."""
    p = sub.add_parser("demo", help="run the forge-secure path on the bundled data (three simulated hospitals)",
                       description="Three simulated hospitals train DP plugins on the bundled breast-cancer data; "
                                   "prints what each did and where the results are.")
    p.add_argument("--out", type=Path, default=Path("forge-demo"), help="output directory (default ./forge-demo); a previous demo there is replaced")
    p.add_argument("--epsilon", type=float, default=DEMO_EPSILON, help=f"each site's target epsilon (default {DEMO_EPSILON:g})")
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_demo)


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ForgeFileError(f"{out} exists and is not a directory", fix="choose another --out", code="demo.out_exists")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ForgeFileError(
            f"{out} is not empty and was not written by forge demo",
            fix="choose another --out, or remove the directory yourself",
            code="demo.out_exists",
        )


def stage_sites(ctx: dict) -> None:
    """Each hospital trains a DP FFA-LoRA plugin on its coin-flip training set."""
    import numpy as np
    import torch

    from ..plugins.bases import load_base
    from ..plugins.data import bundled_splits
    from .train import evaluate, train_site

    work: Path = ctx["work"]
    base = load_base("tabular-mlp")
    splits = bundled_splits()
    results = []
    for site in DEMO_SITES:
        t0 = time.perf_counter()
        plugin, td = train_site(site=site, data_spec=f"bundled:{site}", base_name="tabular-mlp", out=work / "plugins" / site,
                                budget=DEMO_BUDGET, ledger_root=work / "ledgers", target_epsilon=ctx["epsilon"], ffa=True, seed=0)
        test = splits.site(site).test
        ev = evaluate(plugin, test)
        with torch.no_grad():
            base_acc = float((base.model(torch.tensor(test.X)).argmax(1).numpy() == test.y).mean())
        dp = plugin.meta["dp"]
        results.append({
            "site": site, "train_rows": len(td.data), "pool_rows": td.commitment["membership"]["pool_rows"],
            "test_rows": len(test), "epsilon": dp["epsilon"], "delta": dp["delta"], "noise_multiplier": dp.get("noise_multiplier"),
            "steps": dp.get("steps"), "accuracy": ev["accuracy"], "accuracy_ci95": ev["accuracy_ci95"], "roc_auc": ev["roc_auc"],
            "base_accuracy": base_acc, "plugin": str(ctx["out"] / "plugins" / site), "seconds": round(time.perf_counter() - t0, 2),
            "label_share_benign": float(np.mean(td.data.y)),
        })
    ctx["sites"] = results
    ctx["base"] = {"name": base.name, "digest": base.digest}


STAGES: list[tuple[str, Callable[[dict], None]]] = [("sites", stage_sites)]


def _print_sites(ctx: dict) -> None:
    from rich.table import Table

    t = Table(title=f"Stage 1: three hospitals train DP plugins (FFA-LoRA, target epsilon {ctx['epsilon']:g})")
    for col in ("site", "rows (pool)", "benign", "eps (delta)", "sigma/steps", "accuracy (95% CI)", "AUC", "base acc"):
        t.add_column(col, overflow="fold")
    for r in ctx["sites"]:
        lo, hi = r["accuracy_ci95"]
        t.add_row(r["site"], f"{r['train_rows']} ({r['pool_rows']})", f"{r['label_share_benign']:.2f}", f"{float(r['epsilon']):.2f} ({r['delta']:.0e})",
                  f"{r['noise_multiplier']:.2f}/{r['steps']}", f"{r['accuracy']:.2f} ({lo:.2f}-{hi:.2f})", f"{r['roc_auc']:.2f}",
                  f"{r['base_accuracy']:.2f}")
    _common.console.print(t)
    _common.console.print(
        f"Base {ctx['base']['name']} sha256 {ctx['base']['digest'][:16]}... ; each site's delta is below 1/n of its rows; "
        "accuracy and AUC are on each site's held-out test split; 'benign' is the label share (non-IID skew)."
    )
    for r in ctx["sites"]:
        _common.console.print(f"  {r['site']}: {r['plugin']}", soft_wrap=True, highlight=False)


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_target(out)
    ctx: dict = {"out": out.resolve(), "epsilon": float(args.epsilon)}
    t0 = time.perf_counter()
    with atomic_directory(out, overwrite=True) as work:
        ctx["work"] = work
        for name, stage in STAGES:
            stage(ctx)
        ctx["seconds"] = round(time.perf_counter() - t0, 2)
        summary = {k: v for k, v in ctx.items() if k not in ("work", "out")}
        summary["out"] = str(ctx["out"])
        atomic_write_json(work / "summary.json", summary)
        atomic_write_json(work / MARKER, {"forge_demo": __version__, "stages": [n for n, _ in STAGES]})
    if args.json:
        _common.emit_json(summary)
        return 0
    _print_sites(ctx)
    _common.console.print(
        f"Each plugin is a PEFT adapter directory plus forge.json. Budget ledgers: {out}/ledgers/; summary: {out}/summary.json. "
        f"Took {ctx['seconds']:.1f} s. Inspect a plugin with: forge plugin show {out}/plugins/site-1",
        soft_wrap=True, highlight=False,
    )
    return 0
