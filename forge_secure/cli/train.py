"""`forge train`, `forge eval`, `forge plugin show`, `forge ledger show`.

Thin: every command parses its arguments, calls one library function
(:func:`forge_secure.privacy.site.train_site_summary`, :func:`forge_secure.plugins.evaluate.evaluate_plugin`,
:func:`forge_secure.plugins.evaluate.describe_plugin`, :func:`forge_secure.privacy.ledger.ledger_report`)
and prints its result as a rich table, or as one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from . import _common


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the `forge` parser."""
    p = sub.add_parser(
        "train",
        help="train a LoRA plugin on a site's data, with differential privacy",
        description="Train a LoRA plugin with DP-SGD (Opacus) on one site's data and write the plugin directory.",
    )
    p.add_argument("--site", required=True, help="the site (hospital) that trains, e.g. site-1")
    p.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help="bundled:site-1 (that site's coin-flip training set), a CSV with a label column, or a MedMNIST-layout .npz",
    )
    p.add_argument(
        "--base", default="tabular-mlp", help="tabular-mlp, vit-tiny, or a local Hugging Face model directory (default: tabular-mlp)"
    )
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
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="public seed of the initial LoRA A matrix (default 0); the DP noise and sampling never come from it, "
        "but from a fresh secret drawn from the OS on every run",
    )
    p.add_argument("--accountant", choices=("prv", "rdp"), help="privacy accountant (default prv)")
    p.add_argument("--budget", type=float, help="the site's total epsilon budget for this data set; training that would pass it is refused")
    audit = p.add_argument_group("audit", "replay envelope and auditor canaries (what an on-site audit needs to verify the claims)")
    audit.add_argument(
        "--auditor",
        type=Path,
        metavar="PUBLIC_JSON",
        help="seal the run's secret and exact recipe to this auditor's public.json, beside the plugin "
        "(<out>.replay.forge), so the auditor can replay the training and verify every claim",
    )
    audit.add_argument("--signer", type=Path, metavar="KEY", help="the site's signing.key (signs the replay envelope)")
    audit.add_argument(
        "--canary-grant",
        type=Path,
        metavar="GRANT",
        help="insert the auditor's canaries: the .forge grant from 'forge audit canaries issue'",
    )
    audit.add_argument("--grant-key", type=Path, metavar="KEY", help="the site's decryption.key (opens the canary grant)")
    audit.add_argument("--roster", type=Path, help="the consortium roster (checks the auditor's signature on the grant)")
    _common.add_passphrase_flags(audit, "the site's keys")
    p.add_argument("--label-column", help="label column of a CSV (default: label)")
    p.add_argument(
        "--membership-seed",
        type=int,
        metavar="S",
        help="your own CSV/.npz only: train on an independent coin-flip draw of its records from seed S (the rest is "
        "holdout), so that a membership audit is valid; forge.json records only sha256(S), so S must be a secret "
        "random number of at least 2**96 (python -c 'import secrets; print(secrets.randbits(128))')",
    )
    p.add_argument("--include-prob", type=float, default=0.5, help="inclusion probability of those coin flips (default 0.5)")
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="accuracy and ROC AUC of a plugin on a data set",
        description="Evaluate a plugin: accuracy (with a Clopper-Pearson interval) and ROC AUC (bootstrap interval).",
    )
    p.add_argument("plugin", type=Path, metavar="DIR")
    p.add_argument(
        "--data", required=True, metavar="DATA", help="bundled:site-1 (its test split), a CSV or a .npz (its test split unless :train/:val)"
    )
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


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from ..privacy.site import train_site_summary

    config_kwargs = dict(
        rank=args.rank,
        alpha=args.alpha,
        ffa=args.ffa or None,
        ffa_seed=args.ffa_seed,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()) if args.targets else None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        noise_multiplier=args.noise_multiplier,
        target_epsilon=args.epsilon,
        delta=args.delta,
        accountant=args.accountant,
        no_dp=args.no_dp or None,
    )
    summary = train_site_summary(
        site=args.site,
        data_spec=args.data,
        base_name=args.base,
        out=args.out,
        label_column=args.label_column,
        budget=args.budget,
        membership_seed=args.membership_seed,
        include_prob=args.include_prob,
        canary_grant=args.canary_grant,
        grant_key=args.grant_key,
        roster=args.roster,
        auditor=args.auditor,
        signer=args.signer,
        passphrase=_common.passphrase(args),
        **config_kwargs,
    )
    if args.json:
        _common.emit_json(summary)
        return 0
    from rich.table import Table

    dp, lora, base = summary["dp"], summary["lora"], summary["base"]
    t = Table(title=f"plugin for {args.site}", show_header=False)
    t.add_row("written to", str(args.out))
    t.add_row("base", f"{base['name']} ({base['digest'][:16]}...)")
    t.add_row("data", f"{(summary['data'] or {}).get('name')} ({summary['rows']} rows)")
    t.add_row(
        "LoRA", f"rank {lora['rank']}, {'FFA (A frozen)' if lora['ffa'] else 'A and B trained'}, targets {', '.join(lora['targets'])}"
    )
    if dp.get("enabled"):
        t.add_row(
            "DP",
            f"epsilon {_fmt_eps(dp.get('epsilon'))}, delta {dp.get('delta'):.2g} ({dp.get('accountant')}); "
            f"noise {dp.get('noise_multiplier'):.3g}, sample rate {dp.get('sample_rate'):.3g}, "
            f"{dp.get('steps')} steps, clip {dp.get('max_grad_norm')}",
        )
    else:
        t.add_row("DP", _common.styled(("none (--no-dp): epsilon = inf", "yellow")))
    t.add_row("randomness", f"fresh OS secret (commitment {dp['randomness']['secret_commitment'][:16]}...)")
    canaries = summary["canaries"]
    if canaries:
        t.add_row("auditor canaries", f"{canaries['count']} inserted (grant {canaries['grant_id'][:12]}...)")
    t.add_row(
        "replay envelope",
        summary["replay_envelope"]
        or _common.styled(("none: without --auditor, an on-site audit can only take the DP claim on the site's word", "yellow")),
    )
    if "test" in summary:
        r = summary["test"]
        t.add_row("test split", f"accuracy {r['accuracy']:.3f}, ROC AUC {r['roc_auc']:.3f} ({r['rows']} rows)")
    _common.console.print(t)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..plugins.evaluate import evaluate_plugin

    result = evaluate_plugin(args.plugin, args.data, label_column=args.label_column, seed=args.seed, base=args.base)
    if args.json:
        _common.emit_json(result)
        return 0
    from rich.table import Table

    t = Table(title=f"{args.plugin} on {result['data']}")
    for col in ("rows", "accuracy (95% CI)", "ROC AUC (95% CI)", "base accuracy", "epsilon"):
        t.add_column(col)
    acc_ci = result["accuracy_ci95"]
    auc_ci = result["roc_auc_ci95"]
    t.add_row(
        str(result["rows"]),
        f"{result['accuracy']:.3f} [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}]" if acc_ci else "n/a",
        f"{result['roc_auc']:.3f} [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}]" if auc_ci else "n/a (one class only)",
        f"{result['base_accuracy']:.3f}",
        _fmt_eps(result["epsilon"]),
    )
    _common.console.print(t)
    return 0


def cmd_plugin_show(args: argparse.Namespace) -> int:
    from ..plugins.evaluate import describe_plugin

    shown = describe_plugin(args.plugin, base=args.base)
    if args.json:
        _common.emit_json(shown)
        return 0
    from rich.table import Table

    meta = shown["meta"]
    dp, lora, data = meta["dp"], meta["lora"], meta.get("data") or {}
    t = Table(title=f"plugin {args.plugin} (verified)", show_header=False)
    t.add_row("site / kind", f"{meta['site']} / {meta['kind']}")
    t.add_row("base", f"{meta['base']['name']} sha256 {meta['base']['digest']}")
    t.add_row("adapter", f"sha256 {shown['adapter_sha256']}, {shown['adapter_parameters']} parameters")
    t.add_row(
        "LoRA",
        f"rank {lora['rank']}, alpha {lora['alpha']}, targets {', '.join(lora['targets'])}, "
        f"{'FFA (A frozen, seed ' + str(lora.get('ffa_seed')) + ')' if lora['ffa'] else 'A and B trained'}",
    )
    if meta.get("training"):
        t.add_row("training", ", ".join(f"{k} {v}" for k, v in sorted(meta["training"].items())))
    if dp.get("enabled"):
        t.add_row(
            "DP",
            f"epsilon {_fmt_eps(dp.get('epsilon'))}, delta {dp.get('delta')}, accountant {dp.get('accountant')}, "
            f"noise {dp.get('noise_multiplier')}, sample rate {dp.get('sample_rate')}, steps {dp.get('steps')}, "
            f"clip {dp.get('max_grad_norm')}",
        )
    else:
        t.add_row("DP", "none: epsilon = inf")
    if data:
        mem = data.get("membership") or {}
        can = data.get("canaries") or {}
        t.add_row(
            "data",
            f"{data.get('name')}, {data.get('rows')} rows"
            + (
                f", drawn from {mem.get('pool_rows')} by coin flips (p={mem.get('include_prob')}, seed sha256 "
                f"{str(mem.get('seed_sha256'))[:16]}...)"
                if mem
                else ""
            )
            + (f", {can.get('count')} canaries" if can.get("count") else ""),
        )
    if meta.get("parents"):
        t.add_row("parents", ", ".join(f"{p.get('site')} ({str(p.get('digest'))[:12]}...)" for p in meta["parents"]))
    if meta.get("merge"):
        t.add_row("merge", f"{meta['merge'].get('method')} weights {meta['merge'].get('weights')}")
    _common.console.print(t)
    return 0


def cmd_ledger_show(args: argparse.Namespace) -> int:
    from ..privacy.ledger import ledger_report

    rows = ledger_report(site=args.site, delta=args.delta)
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
        t.add_row(
            r["site"],
            r["dataset"],
            str(r["releases"]),
            _fmt_eps(r["epsilon_spent"]),
            f"{r['delta']:.2g}" if r["delta"] else "-",
            str(r["accountant"]),
            _fmt_eps(r["budget"]) if r["budget"] is not None else "none",
        )
    _common.console.print(t)
    _common.console.print(f"ledger files: {Path(rows[0]['path']).parent.parent}", soft_wrap=True, highlight=False)
    return 0
