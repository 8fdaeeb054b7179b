"""`forge train`, `forge eval`, `forge plugin show`, `forge ledger show`.

Thin: every command resolves its arguments through the library (``forge_secure.plugins``
for data, bases and plugin directories; ``forge_secure.privacy`` for DP training and the
budget ledger), then prints a rich table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import ForgeValueError
from . import _common


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this area's sub-commands to the `forge` parser."""
    p = sub.add_parser("train", help="train a LoRA plugin on a site's data, with differential privacy",
                       description="Train a LoRA plugin with DP-SGD (Opacus) on one site's data and write the plugin directory.")
    p.add_argument("--site", required=True, help="the site (hospital) that trains, e.g. site-1")
    p.add_argument("--data", required=True, metavar="DATA",
                   help="bundled:site-1 (that site's coin-flip training set), a CSV with a label column, or a MedMNIST-layout .npz")
    p.add_argument("--base", default="tabular-mlp", help="tabular-mlp, vit-tiny, or a local Hugging Face model directory (default: tabular-mlp)")
    privacy = p.add_mutually_exclusive_group(required=True)
    privacy.add_argument("--epsilon", type=float, help="target epsilon; the noise multiplier is calibrated to reach it")
    privacy.add_argument("--noise-multiplier", type=float, help="DP-SGD noise multiplier sigma (epsilon is then computed)")
    privacy.add_argument("--no-dp", action="store_true", help="train without differential privacy (recorded as epsilon = inf)")
    p.add_argument("--delta", type=float, help="DP delta (default: below 1/n)")
    p.add_argument("--out", required=True, type=Path, help="the new plugin directory (must not exist or be empty)")
    p.add_argument("--rank", type=int, help="LoRA rank")
    p.add_argument("--alpha", type=float, help="LoRA alpha")
    p.add_argument("--ffa", action="store_true", help="FFA-LoRA: A frozen (derived from the base digest and a public seed), only B trained")
    p.add_argument("--ffa-seed", type=int, help="public seed of the frozen A matrices (FFA-LoRA)")
    p.add_argument("--targets", help="comma-separated module names to adapt (default: the base's)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="expected batch size (Poisson sampling rate = batch size / rows)")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--max-grad-norm", type=float, help="per-sample clipping norm")
    p.add_argument("--seed", type=int, default=0,
                   help="public seed of the initial LoRA A matrix (default 0); the DP noise and sampling never come from it, "
                        "but from a fresh secret drawn from the OS on every run")
    p.add_argument("--accountant", choices=("prv", "rdp"), help="privacy accountant (default prv)")
    p.add_argument("--budget", type=float, help="the site's total epsilon budget for this data set; training that would pass it is refused")
    audit = p.add_argument_group("audit", "replay envelope and auditor canaries (what an on-site audit needs to verify the claims)")
    audit.add_argument("--auditor", type=Path, metavar="PUBLIC_JSON",
                       help="seal the run's secret and exact recipe to this auditor's public.json, beside the plugin "
                            "(<out>.replay.forge), so the auditor can replay the training and verify every claim")
    audit.add_argument("--signer", type=Path, metavar="KEY", help="the site's signing.key (signs the replay envelope)")
    audit.add_argument("--canary-grant", type=Path, metavar="GRANT",
                       help="insert the auditor's canaries: the .forge grant from 'forge audit canaries issue'")
    audit.add_argument("--grant-key", type=Path, metavar="KEY", help="the site's decryption.key (opens the canary grant)")
    audit.add_argument("--roster", type=Path, help="the consortium roster (checks the auditor's signature on the grant)")
    pp = audit.add_mutually_exclusive_group()
    pp.add_argument("--passphrase-file", metavar="FILE", help="passphrase of the site's keys, from the first line of FILE")
    pp.add_argument("--passphrase-env", metavar="VAR", help="passphrase of the site's keys, from environment variable VAR")
    p.add_argument("--label-column", help="label column of a CSV (default: label)")
    p.add_argument("--membership-seed", type=int, metavar="S",
                   help="your own CSV/.npz only: train on an independent coin-flip draw of its records from seed S (the rest is "
                        "holdout), so that a membership audit is valid; forge.json records only sha256(S)")
    p.add_argument("--include-prob", type=float, default=0.5, help="inclusion probability of those coin flips (default 0.5)")
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy and ROC AUC of a plugin on a data set",
                       description="Evaluate a plugin: accuracy (with a Clopper-Pearson interval) and ROC AUC (bootstrap interval).")
    p.add_argument("plugin", type=Path, metavar="DIR")
    p.add_argument("--data", required=True, metavar="DATA", help="bundled:site-1 (its test split), a CSV or a .npz (its test split unless :train/:val)")
    p.add_argument("--label-column", help="label column of a CSV (default: label)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap for the AUC interval")
    p.add_argument("--base", help="the base model, if not where forge.json says (e.g. a moved Hugging Face directory)")
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plugin", help="inspect plugin directories")
    psub = p.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    s = psub.add_parser("show", help="check a plugin directory and show its forge.json record")
    s.add_argument("plugin", type=Path, metavar="DIR")
    s.add_argument("--base", help="the base model, if not where forge.json says (e.g. a moved Hugging Face directory)")
    _common.add_json_flag(s)
    s.set_defaults(func=cmd_plugin_show)

    p = sub.add_parser("ledger", help="the per-site DP budget ledgers")
    lsub = p.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    s = lsub.add_parser("show", help="list DP releases and the composed epsilon, per site and data set")
    s.add_argument("--site", help="only this site")
    s.add_argument("--delta", type=float, help="delta for the composed epsilon (default: the smallest delta recorded)")
    _common.add_json_flag(s)
    s.set_defaults(func=cmd_ledger_show)


# --------------------------------------------------------------------------- helpers

def _fmt_eps(value) -> str:
    from ..numbers import decode

    eps = math.inf if value is None else decode(value)
    return "inf" if math.isinf(eps) else f"{eps:.3g}"


def _base_arg(args: argparse.Namespace):
    from ..plugins.bases import load_base

    return load_base(args.base) if getattr(args, "base", None) else None


def auc_of_resamples(y, score, idx):
    """Binary ROC AUC of every resample ``idx[b]`` (rows of indices), vectorised: the
    Mann-Whitney U statistic over n1 n0 from scipy's average ranks (ties count 1/2).
    NaN where a resample holds one class only."""
    import numpy as np
    from scipy.stats import rankdata

    yy, ss = np.asarray(y)[idx].astype(bool), np.asarray(score)[idx]
    ranks = rankdata(ss, axis=1)
    n1 = yy.sum(1)
    n0 = yy.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), ((ranks * yy).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0), np.nan)


def _bootstrap_auc_ci(y, score, seed: int, n_boot: int = 1000) -> list[float] | None:
    """95 % percentile-bootstrap interval of the binary ROC AUC (resampling rows)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    auc = auc_of_resamples(y, score, rng.integers(0, len(y), size=(n_boot, len(y))))
    auc = auc[~np.isnan(auc)]
    if not len(auc):
        return None
    return [float(np.percentile(auc, 2.5)), float(np.percentile(auc, 97.5))]


def evaluate(plugin, data, seed: int = 0) -> dict:
    """Accuracy (Clopper-Pearson 95 % interval) and ROC AUC of ``plugin`` on ``data``
    (scikit-learn; one-vs-rest macro average over the classes present for more than two
    classes). For two classes the AUC gets a 95 % percentile-bootstrap interval."""
    import numpy as np
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    proba = plugin.predict_proba(data.X)
    y = data.y
    n = len(y)
    correct = int((proba.argmax(1) == y).sum())
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="exact") if n else None
    present = np.unique(y)
    result = {"rows": n, "accuracy": correct / n if n else float("nan"),
              "accuracy_ci95": [float(ci.low), float(ci.high)] if ci else None, "roc_auc": float("nan"), "roc_auc_ci95": None,
              "classes_present": [int(c) for c in present]}
    if len(present) < 2:
        return result
    if proba.shape[1] == 2:
        result["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
        result["roc_auc_ci95"] = _bootstrap_auc_ci(y, proba[:, 1], seed)
    else:
        result["roc_auc"] = float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    return result


# --------------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    config_kwargs = dict(
        rank=args.rank, alpha=args.alpha, ffa=args.ffa or None, ffa_seed=args.ffa_seed,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()) if args.targets else None,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_grad_norm=args.max_grad_norm, seed=args.seed,
        noise_multiplier=args.noise_multiplier, target_epsilon=args.epsilon, delta=args.delta,
        accountant=args.accountant, no_dp=args.no_dp or None,
    )
    from ..crypto import read_passphrase
    from ..privacy.site import train_site

    run = train_site(site=args.site, data_spec=args.data, base_name=args.base, out=args.out, label_column=args.label_column,
                     budget=args.budget, membership_seed=args.membership_seed, include_prob=args.include_prob,
                     canary_grant=args.canary_grant, grant_key=args.grant_key, roster=args.roster, auditor=args.auditor,
                     signer=args.signer, passphrase=read_passphrase(args.passphrase_file, args.passphrase_env), **config_kwargs)
    plugin, td = run.plugin, run.training
    meta = plugin.meta
    summary = {"plugin": str(args.out), "site": args.site, "base": meta["base"], "rows": meta.get("data", {}).get("rows"),
               "dp": meta["dp"], "lora": meta["lora"], "training": meta.get("training"), "data": meta.get("data"),
               "adapter_sha256": meta.get("adapter", {}).get("sha256"),
               "replay_envelope": str(run.envelope) if run.envelope else None, "canaries": run.canaries}
    if td.test is not None:
        summary["test"] = evaluate(plugin, td.test)
    if args.json:
        _common.emit_json(summary)
        return 0
    from rich.table import Table

    dp = meta["dp"]
    t = Table(title=f"plugin for {args.site}", show_header=False)
    t.add_row("written to", str(args.out))
    t.add_row("base", f"{meta['base']['name']} ({meta['base']['digest'][:16]}...)")
    t.add_row("data", f"{meta.get('data', {}).get('name')} ({summary['rows']} rows)")
    t.add_row("LoRA", f"rank {meta['lora']['rank']}, {'FFA (A frozen)' if meta['lora']['ffa'] else 'A and B trained'}, "
                      f"targets {', '.join(meta['lora']['targets'])}")
    if dp.get("enabled"):
        t.add_row("DP", f"epsilon {_fmt_eps(dp.get('epsilon'))}, delta {dp.get('delta'):.2g} ({dp.get('accountant')}); "
                        f"noise {dp.get('noise_multiplier'):.3g}, sample rate {dp.get('sample_rate'):.3g}, "
                        f"{dp.get('steps')} steps, clip {dp.get('max_grad_norm')}")
    else:
        t.add_row("DP", _common.styled(("none (--no-dp): epsilon = inf", "yellow")))
    t.add_row("randomness", f"fresh OS secret (commitment {dp['randomness']['secret_commitment'][:16]}...)")
    if run.canaries:
        t.add_row("auditor canaries", f"{run.canaries['count']} inserted (grant {run.canaries['grant_id'][:12]}...)")
    t.add_row("replay envelope", str(run.envelope) if run.envelope else
              _common.styled(("none: without --auditor, an on-site audit can only take the DP claim on the site's word", "yellow")))
    if "test" in summary:
        r = summary["test"]
        t.add_row("test split", f"accuracy {r['accuracy']:.3f}, ROC AUC {r['roc_auc']:.3f} ({r['rows']} rows)")
    _common.console.print(t)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..plugins.data import is_bundled, load_data, resolve_bundled
    from ..plugins.plugin import load_plugin
    from ..plugins.sources import check_compatible

    plugin = load_plugin(args.plugin, base=_base_arg(args))
    spec = str(args.data)
    if is_bundled(spec):
        splits, shard, part = resolve_bundled(spec)
        data = load_data(spec if "/" in spec.split(":", 1)[1] or shard is None else spec + "/test")
    elif spec.endswith(".npz"):
        data = load_data(spec + ":test")
    else:
        data = load_data(spec, label_column=args.label_column)
    check_compatible(plugin.base, data)
    result = evaluate(plugin, data, seed=args.seed)
    # the base alone, on the same data, for comparison
    import numpy as np
    import torch

    with torch.no_grad():
        base_pred = np.concatenate([plugin.base.model(torch.tensor(data.X[i:i + 512])).argmax(1).numpy() for i in range(0, len(data), 512)]) if len(data) else np.zeros(0)
    result["base_accuracy"] = float((base_pred == data.y).mean()) if len(data) else float("nan")
    result.update({"plugin": str(args.plugin), "data": data.name, "site": plugin.site, "epsilon": plugin.meta["dp"]["epsilon"]})
    if args.json:
        _common.emit_json(result)
        return 0
    from rich.table import Table

    t = Table(title=f"{args.plugin} on {data.name}")
    for col in ("rows", "accuracy (95% CI)", "ROC AUC (95% CI)", "base accuracy", "epsilon"):
        t.add_column(col)
    acc_ci = result["accuracy_ci95"]
    auc_ci = result["roc_auc_ci95"]
    t.add_row(str(result["rows"]), f"{result['accuracy']:.3f} [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}]" if acc_ci else "n/a",
              f"{result['roc_auc']:.3f} [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}]" if auc_ci else "n/a (one class only)",
              f"{result['base_accuracy']:.3f}", _fmt_eps(result["epsilon"]))
    _common.console.print(t)
    return 0


def cmd_plugin_show(args: argparse.Namespace) -> int:
    from ..plugins.plugin import adapter_digest, load_plugin

    plugin = load_plugin(args.plugin, base=_base_arg(args))  # checks forge.json, the adapter file and digest, the base digest
    meta = plugin.meta
    n_params = sum(int(t.numel()) for t in plugin.adapter_state().values())
    if args.json:
        _common.emit_json({"plugin": str(args.plugin), "verified": True, "adapter_sha256": adapter_digest(args.plugin),
                           "adapter_parameters": n_params, "meta": meta})
        return 0
    from rich.table import Table

    dp, lora, data = meta["dp"], meta["lora"], meta.get("data") or {}
    t = Table(title=f"plugin {args.plugin} (verified)", show_header=False)
    t.add_row("site / kind", f"{meta['site']} / {meta['kind']}")
    t.add_row("base", f"{meta['base']['name']} sha256 {meta['base']['digest']}")
    t.add_row("adapter", f"sha256 {adapter_digest(args.plugin)}, {n_params} parameters")
    t.add_row("LoRA", f"rank {lora['rank']}, alpha {lora['alpha']}, targets {', '.join(lora['targets'])}, "
                      f"{'FFA (A frozen, seed ' + str(lora.get('ffa_seed')) + ')' if lora['ffa'] else 'A and B trained'}")
    if meta.get("training"):
        t.add_row("training", ", ".join(f"{k} {v}" for k, v in sorted(meta["training"].items())))
    if dp.get("enabled"):
        t.add_row("DP", f"epsilon {_fmt_eps(dp.get('epsilon'))}, delta {dp.get('delta')}, accountant {dp.get('accountant')}, "
                        f"noise {dp.get('noise_multiplier')}, sample rate {dp.get('sample_rate')}, steps {dp.get('steps')}, "
                        f"clip {dp.get('max_grad_norm')}")
    else:
        t.add_row("DP", "none: epsilon = inf")
    if data:
        mem = data.get("membership") or {}
        can = data.get("canaries") or {}
        t.add_row("data", f"{data.get('name')}, {data.get('rows')} rows"
                          + (f", drawn from {mem.get('pool_rows')} by coin flips (p={mem.get('include_prob')}, seed sha256 "
                             f"{str(mem.get('seed_sha256'))[:16]}...)" if mem else "")
                          + (f", {can.get('count')} canaries" if can.get("count") else ""))
    if meta.get("parents"):
        t.add_row("parents", ", ".join(f"{p.get('site')} ({str(p.get('digest'))[:12]}...)" for p in meta["parents"]))
    if meta.get("merge"):
        t.add_row("merge", f"{meta['merge'].get('method')} weights {meta['merge'].get('weights')}")
    _common.console.print(t)
    return 0


def cmd_ledger_show(args: argparse.Namespace) -> int:
    from ..privacy.accountants import validate_delta
    from ..privacy.ledger import Ledger

    if args.delta is not None:
        validate_delta(args.delta)  # delta 0 would otherwise report nothing spent
    entries = Ledger.list_all(site=args.site)
    rows = []
    for led in entries:
        history = led.history()
        deltas = [r.get("delta") for r in led.records() if r.get("delta") is not None]
        delta = args.delta if args.delta is not None else (min(deltas) if deltas else None)
        accountant = led.accountant
        try:
            spent = led.spent(delta) if (history and delta) else 0.0
        except ForgeValueError as e:  # PRV refuses very large epsilons: fall back to RDP, and say so
            if e.code != "dp.prv_range":
                raise
            accountant = "rdp"
            spent = led.spent(delta, accountant="rdp")
        rows.append({"site": led.site, "dataset": led.dataset, "releases": len(led.records()), "history": history,
                     "delta": delta, "epsilon_spent": spent, "budget": led.budget, "accountant": accountant,
                     "path": str(led.path), "records": led.records()})
    if args.json:
        _common.emit_json({"ledgers": rows})
        return 0
    if not rows:
        _common.console.print("no DP releases recorded" + (f" for {args.site}" if args.site else "") + ".")
        return 0
    from rich.table import Table

    t = Table(title="DP budget ledgers")
    for col in ("site", "data set", "releases", "epsilon spent", "delta", "accountant", "budget"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["site"], r["dataset"], str(r["releases"]), _fmt_eps(r["epsilon_spent"]),
                  f"{r['delta']:.2g}" if r["delta"] else "-", str(r["accountant"]),
                  _fmt_eps(r["budget"]) if r["budget"] is not None else "none")
    _common.console.print(t)
    _common.console.print(f"ledger files: {Path(rows[0]['path']).parent.parent}", soft_wrap=True, highlight=False)
    return 0
