"""`forge attack mia`: membership inference on a plugin, merged plugin or Mixture.

Thin: parses, calls :func:`attacks.membership.run.run_mia`, writes the results file and
the ROC plot, prints a summary (or ``--json``).
"""

from __future__ import annotations

import argparse

from . import _common


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def _pos_int(text: str) -> int:
    v = _nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


#: the default attack and variant (MiaSettings' defaults; kept here so that building the parser
#: imports no attack code; tests/attacks/membership/test_rescore.py checks they agree)
DEFAULT_ATTACK_TEXT = "lira, online, per-record variance"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `forge attack mia`."""
    p = sub.add_parser(
        "mia",
        help="membership inference (LiRA, RMIA, LOSS, reference) with low-FPR metrics and an empirical epsilon",
        description="Attack a plugin, merged plugin or Mixture: score each candidate record, report ROC AUC and TPR at "
        "0.1%% / 1%% FPR with intervals, and an empirical epsilon lower bound next to the claimed epsilon.",
    )
    p.add_argument("--target", help="plugin directory (forge.json) or mixture directory (mixture.json) (required)")
    p.add_argument("--data", help="(required) candidate records: a site's pool (bundled:site-1) or a file with --membership-seed")
    p.add_argument(
        "--attack",
        default=None,
        help="attack by registered name: lira, rmia, loss, reference "
        "(default: the strongest at the default budget, measured in docs/benchmarks.md: " + DEFAULT_ATTACK_TEXT + ")",
    )
    p.add_argument("--references", type=_nonneg_int, default=16, help="reference models to train or load (default 16)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--online", dest="online", action="store_true", default=None, help="references trained with and without each candidate"
    )
    mode.add_argument("--offline", dest="online", action="store_false", help="references trained on population data only")
    p.add_argument(
        "--population",
        default="auto",
        help="population data for references and RMIA (default: the bundled public split for bundled data; 'none' to disable)",
    )
    p.add_argument(
        "--membership-seed", type=_nonneg_int, default=None, help="the site's membership seed (checked against the target's commitment)"
    )
    p.add_argument("--nonmembers", default=None, help="non-member records; then --data holds the members (no one-run audit)")
    p.add_argument("--label-column", default=None, help="label column of CSV data (default 'label')")
    p.add_argument("--base", default=None, help="the base model you expect the target to use (refused if its digest differs)")
    p.add_argument("--recipe", default=None, help="plugin directory whose recipe trains the references (for merged plugins)")
    p.add_argument("--component", default=None, help="for a Mixture: the site of the component trained on the candidates")
    var = p.add_mutually_exclusive_group()
    var.add_argument(
        "--fixed-variance",
        dest="fixed_variance",
        action="store_true",
        default=None,
        help="LiRA: one global variance (better with few references)",
    )
    var.add_argument("--per-record-variance", dest="fixed_variance", action="store_false", help="LiRA: a variance per record")
    p.add_argument("--rmia-a", type=float, default=None, help="RMIA offline: the a of P(x) ~ ((1+a) P_OUT + 1-a)/2 (default: tuned)")
    p.add_argument("--gamma", type=float, default=1.0, help="RMIA: likelihood-ratio threshold gamma (default 1)")
    p.add_argument("--temperature", type=float, default=2.0, help="RMIA: softmax temperature (default 2)")
    p.add_argument("--canary-seed", type=_nonneg_int, default=None, help="seed of the target's canaries (forge train --canary-seed)")
    p.add_argument("--no-canaries", dest="use_canaries", action="store_false", help="leave the target's canaries out of the candidates")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the reference splits, training and bootstrap (default 0)")
    p.add_argument("--n-boot", type=_pos_int, default=1000, help="bootstrap replicates for the intervals (default 1000)")
    p.add_argument(
        "--workers",
        type=_pos_int,
        default=None,
        help="worker processes for reference training (default 1: references train batched in this process, "
        "measured fastest; see docs/benchmarks.md)",
    )
    p.add_argument(
        "--one-at-a-time",
        dest="batch",
        action="store_false",
        default=None,
        help="train references one by one instead of batched (the same models, slower)",
    )
    p.add_argument(
        "--ray", default=None, metavar="ADDRESS", help="train references on a Ray cluster (host:port), or 'auto' for a local Ray"
    )
    p.add_argument("--no-cache", dest="cache", action="store_false", help="retrain references even when cached")
    p.add_argument("--out", help="(required) results JSON (every score and per-record signal, labels, settings, metrics, epsilon)")
    p.add_argument("--plot", default=None, help="ROC plot (linear and log-log), .png or .svg")
    _common.add_json_flag(p)
    p.set_defaults(func=handle, _mia_parser=p)
    mia_sub = p.add_subparsers(dest="mia_command", metavar="rescore", required=False)
    r = mia_sub.add_parser(
        "rescore",
        help="recompute an attack's scores and metrics from a results file's signals (no training)",
        description="Re-derive scores, metrics and the empirical epsilon from the per-record signals a results file keeps "
        "(checked against their digests; an edited file is refused). Without options: the file's own attack and figures.",
    )
    r.add_argument("results", help="results JSON written by forge attack mia")
    r.add_argument("--attack", default=None, help="registered attack to score with (default: the file's)")
    r_mode = r.add_mutually_exclusive_group()
    r_mode.add_argument("--online", dest="online", action="store_true", default=None, help="the attack's online variant")
    r_mode.add_argument("--offline", dest="online", action="store_false", help="the attack's offline variant")
    r.add_argument("--fixed-variance", action="store_true", default=None, help="LiRA: one global variance")
    r.add_argument("--rmia-a", type=float, default=None, help="RMIA offline: a (default: tuned)")
    r.add_argument("--gamma", type=float, default=None, help="RMIA: gamma")
    r.add_argument("--temperature", type=float, default=None, help="RMIA: softmax temperature")
    r.add_argument("--references", type=_pos_int, default=None, help="use the first K references of the file (default: all)")
    r.add_argument("--n-boot", type=_pos_int, default=None, help="bootstrap replicates (default: the file's)")
    r.add_argument("--out", default=None, help="write the rescored results JSON here")
    r.add_argument("--plot", default=None, help="ROC plot (linear and log-log), .png or .svg")
    _common.add_json_flag(r)
    r.set_defaults(func=handle_rescore)


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attacks.membership.run import MiaSettings, run_mia, summary_lines, write_results
    from attacks.plots import _format_of, plot_roc
    from forge_secure.errors import ForgeValueError

    missing = [f"--{k}" for k in ("target", "data", "out") if getattr(args, k) is None]
    if missing:
        args._mia_parser.error(f"the following arguments are required: {', '.join(missing)} (or use: forge attack mia rescore RESULTS)")
    out = Path(args.out)
    if out.is_dir():
        raise ForgeValueError(f"--out {out} is a directory", fix="give a file name such as results.json", code="attack.out")
    if args.plot:
        _format_of(Path(args.plot))  # fail before the work, not after
    chosen = {k: v for k, v in (("attack", args.attack), ("online", args.online), ("fixed_variance", args.fixed_variance)) if v is not None}
    settings = MiaSettings(
        **chosen,
        references=args.references,
        rmia_a=args.rmia_a,
        gamma=args.gamma,
        temperature=args.temperature,
        seed=args.seed,
        n_boot=args.n_boot,
    )
    results = run_mia(
        args.target,
        args.data,
        settings=settings,
        population=args.population,
        membership_seed=args.membership_seed,
        nonmembers=args.nonmembers,
        base=args.base,
        recipe=args.recipe,
        component=args.component,
        label_column=args.label_column,
        workers=args.workers,
        ray=args.ray,
        cache=args.cache,
        canary_seed=args.canary_seed,
        use_canaries=args.use_canaries,
        batch=args.batch,
    )
    write_results(results, out)
    if args.plot:
        plot_roc({results["attack"]: (results["scores"], results["labels"])}, args.plot)
    if args.json:
        _common.emit_json(
            {
                "results": str(out),
                "plot": args.plot,
                "attack": results["attack"],
                "metrics": results["metrics"],
                "empirical_epsilon": results["empirical_epsilon"],
                "claimed_epsilon": results["claimed_epsilon"],
            }
        )
    else:
        for line in summary_lines(results):
            _common.console.print(line, highlight=False, markup=False)
        _common.console.print(f"results: {out}" + (f"; plot: {args.plot}" if args.plot else ""), highlight=False, markup=False)
    return 0


def _print_results(args, results: dict, out, plot) -> None:
    from attacks.membership.run import summary_lines

    if args.json:
        _common.emit_json(
            {
                "results": str(out) if out else None,
                "plot": plot,
                "attack": results["attack"],
                "metrics": results["metrics"],
                "empirical_epsilon": results["empirical_epsilon"],
                "claimed_epsilon": results["claimed_epsilon"],
                "rescored": results.get("rescored"),
            }
        )
        return
    for line in summary_lines(results):
        _common.console.print(line, highlight=False, markup=False)


def handle_rescore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attacks.membership import rescore
    from attacks.membership.run import write_results
    from attacks.plots import _format_of, plot_roc
    from forge_secure.errors import ForgeValueError

    if args.out and Path(args.out).is_dir():
        raise ForgeValueError(f"--out {args.out} is a directory", fix="give a file name such as rescored.json", code="attack.out")
    if args.plot:
        _format_of(Path(args.plot))
    settings = {
        k: v
        for k, v in (
            ("online", args.online),
            ("fixed_variance", args.fixed_variance),
            ("rmia_a", args.rmia_a),
            ("gamma", args.gamma),
            ("temperature", args.temperature),
            ("references", args.references),
            ("n_boot", args.n_boot),
        )
        if v is not None
    }
    results = rescore(Path(args.results), args.attack, **settings)
    if args.out:
        write_results(results, Path(args.out))
    if args.plot:
        plot_roc({results["attack"]: (results["scores"], results["labels"])}, args.plot)
    _print_results(args, results, args.out, args.plot)
    if not args.json and args.out:
        _common.console.print(f"results: {args.out}", highlight=False, markup=False)
    return 0
