"""`forge attack recon`: reconstruction attacks on a plugin (gradient inversion of one update,
the informed adversary, canary exposure), each beside the ReRo bound of its DP guarantee.

Thin: parses, calls the attack registered under ``--kind`` in
:data:`attacks.reconstruction.run.RECONSTRUCTION_ATTACKS`, writes the results JSON (and the picture) atomically,
prints a summary (or ``--json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _common

KINDS = ("gradient", "informed", "canary")  # help text only; the registry decides


def _int(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        return v

    return parse


def _reps(text: str) -> tuple[int, ...]:
    try:
        reps = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not reps or min(reps) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: repetitions must be integers >= 0, e.g. 0,1,2,4,8")
    return reps


def _groups(text: str) -> tuple[tuple[int, ...], ...]:
    try:
        return tuple(tuple(int(c) for c in g.split(",")) for g in text.split(";") if g.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give one-hot groups as column indices, e.g. '3,4,5;6,7'") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add `forge attack recon`."""
    p = sub.add_parser(
        "recon",
        help="reconstruction attacks (gradient inversion, informed adversary, canary exposure) beside the ReRo bound",
        description="Try to rebuild training records from a plugin or one plugin update, and set the empirical success "
        "(with a Clopper-Pearson interval) beside a random baseline and the reconstruction-robustness bound that the "
        "plugin's DP guarantee gives.",
    )
    p.add_argument("--target", required=True, help="plugin directory (forge.json), or a Mixture directory with --component")
    p.add_argument(
        "--component",
        default=None,
        metavar="SITE",
        help="for a Mixture target: the site whose component plugin is attacked (a Mixture keeps every site's plugin "
        "unchanged; its router is fitted on DP synthetic data only)",
    )
    p.add_argument("--kind", required=True, help=f"attack by registered name: {', '.join(KINDS)}")
    p.add_argument(
        "--recipe",
        default=None,
        metavar="PLUGIN_DIR",
        help="a parent site plugin whose DP-SGD recipe the attack uses (needed for a merged plugin, whose forge.json "
        "holds none): gradient uses its DP setting on the merged model, informed runs its DP-SGD and releases the "
        "merge with the other parents fixed (the site's ReRo bound applies), canary retrains with it",
    )
    p.add_argument(
        "--parents",
        nargs="+",
        default=None,
        metavar="PLUGIN_DIR",
        help="informed on a ties, dare or sequential merge: the merge's other parent plugin directories (the adversary "
        "knows them and redoes the merge with each candidate; matched by adapter digest, any order)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="records to attack (gradient), the known training records (informed) or the training data to plant "
        "canaries in (canary); default for built-in bases: the bundled site's holdout (gradient) or training set",
    )
    p.add_argument("--prior", default=None, help="the attacker's population data (default: the bundled public split for built-in bases)")
    p.add_argument("--label-column", default=None, help="label column of CSV data (default 'label')")
    p.add_argument("--trials", type=_int(1), default=10, help="attacked updates (gradient) or games (informed) (default 10)")
    p.add_argument("--seed", type=_int(0), default=0, help="seed of every random draw (default 0)")
    p.add_argument("--batch-size", type=_int(1), default=1, help="gradient: records per attacked update (default 1)")
    p.add_argument("--steps", type=_int(1), default=None, help="gradient: optimisation steps (default 1500 tabular, 2000 images)")
    p.add_argument("--restarts", type=_int(1), default=None, help="gradient: random restarts (default 8 tabular, 4 images)")
    p.add_argument("--labels", default="given", help="gradient: labels given, by the iDLG rule (idlg), or searched (search)")
    p.add_argument(
        "--tolerance", type=float, default=0.25, help="gradient, tabular: a continuous feature counts within this many std (default 0.25)"
    )
    p.add_argument("--categorical", type=_groups, default=(), help="gradient, tabular: one-hot column groups, e.g. '3,4,5;6,7'")
    p.add_argument(
        "--no-noise",
        dest="dp",
        action="store_const",
        const="none",
        default="plugin",
        help="gradient: attack the update without the plugin's DP noise (what a non-DP site would send)",
    )
    p.add_argument("--candidates", type=_int(2), default=10, help="informed: prior size n, baseline 1/n (default 10)")
    p.add_argument(
        "--mode", default="gradients", help="informed: adversary sees every noisy gradient (gradients) or the final plugin (model)"
    )
    p.add_argument(
        "--repetitions",
        type=_reps,
        default=(0, 1, 2, 4, 8),
        help="canary: repetition counts, 0 for control canaries never inserted (default 0,1,2,4,8)",
    )
    p.add_argument("--canaries", type=_int(1), default=4, help="canary: canaries per repetition count (default 4)")
    p.add_argument("--canary-candidates", type=_int(2), default=100, help="canary: size of each canary's candidate set |R| (default 100)")
    p.add_argument("--bound-samples", type=_int(1000), default=100_000, help="Monte Carlo samples of the ReRo bound (default 100000)")
    p.add_argument("--out", required=True, help="results JSON")
    p.add_argument("--plot", default=None, help="picture: originals and reconstructions (PNG)")
    _common.add_json_flag(p)
    p.set_defaults(func=handle)


def _default_data(plugin, which: str, kind: str = "", site: str | None = None) -> str:
    from forge_secure.errors import ForgeValueError

    prefix = {"tabular-mlp": "bundled", "vit-tiny": "bundled-digits"}.get(plugin.base.name)
    if prefix is None:
        raise ForgeValueError(f"no bundled data for base {plugin.base.name!r}", fix=f"give --{which}", code="recon.no_data")
    if which == "prior":
        return f"{prefix}:public"
    site = site or plugin.meta.get("site") or "site-1"
    # the gradient attack inverts the *next* local step, on records the plugin has not seen yet
    # (the site's holdout); the informed adversary and the canary test use its training set
    return f"{prefix}:{site}/{'holdout' if kind == 'gradient' else 'train'}"


def _mixture_component(target: Path, site: str | None) -> Path:
    """The plugin directory to attack: ``target`` itself, or a Mixture's component of ``site``.
    Reconstruction from a Mixture is reconstruction from one of its components: each is a
    site's plugin copied unchanged, and the router is post-processing of DP synthetic data."""
    from forge_secure.errors import ForgeValueError
    from forge_secure.fileio import read_json_file
    from forge_secure.merge.mixture import MIXTURE_FORMAT

    manifest = target / "mixture.json"
    if not manifest.is_file():
        if site is not None:
            raise ForgeValueError(
                f"--component {site} is for a Mixture target, and {target} holds no mixture.json",
                fix="drop --component, or give a directory written by forge merge mixture",
                code="recon.component",
            )
        return target
    meta = read_json_file(manifest, what="mixture manifest")
    entries = meta.get("plugins") if isinstance(meta, dict) and meta.get("format") == MIXTURE_FORMAT else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries):
        raise ForgeValueError(
            f"{manifest} is not a {MIXTURE_FORMAT} manifest", fix="restore the Mixture from a good copy", code="recon.component"
        )
    sites = [str(e.get("site")) for e in entries]
    if site is None or site not in sites:
        raise ForgeValueError(
            (f"{target} is a Mixture of {', '.join(sites)}" if site is None else f"the Mixture {target} has no component of site {site!r}")
            + "; reconstruction attacks one component (a site's plugin, kept unchanged in the Mixture)",
            fix=f"add --component SITE with SITE one of: {', '.join(sites)}",
            code="recon.component",
        )
    rel = Path(entries[sites.index(site)]["path"])
    path = (target / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or not path.is_relative_to(target.resolve()):
        raise ForgeValueError(
            f"{manifest} points outside the Mixture ({rel})", fix="restore the Mixture from a good copy", code="recon.component"
        )
    return path


def handle(args: argparse.Namespace) -> int:
    from attacks.reconstruction.run import RECONSTRUCTION_ATTACKS, ReconSettings, resolve_recipe
    from forge_secure.errors import ForgeValueError
    from forge_secure.fileio import atomic_write_json
    from forge_secure.plugins import load_data, load_plugin

    out = Path(args.out)
    if out.is_dir():
        raise ForgeValueError(f"--out {out} is a directory", fix="give a file name such as results.json", code="recon.out")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise ForgeValueError(f"--plot {args.plot} is not a .png file name", fix="give a file name ending in .png", code="recon.plot")
    run = RECONSTRUCTION_ATTACKS.get(args.kind)  # unknown kinds fail here, before any loading
    if args.parents and args.kind != "informed":
        raise ForgeValueError(
            f"--parents is used by --kind informed only, not {args.kind}",
            fix="drop --parents (gradient and canary need only --recipe)",
            code="recon.settings",
        )
    settings = ReconSettings(
        trials=args.trials,
        seed=args.seed,
        batch_size=args.batch_size,
        steps=args.steps,
        restarts=args.restarts,
        labels=args.labels,
        tolerance=args.tolerance,
        dp=args.dp,
        candidates=args.candidates,
        mode=args.mode,
        repetitions=args.repetitions,
        canaries_per_repetition=args.canaries,
        canary_candidates=args.canary_candidates,
        bound_samples=args.bound_samples,
    )
    plugin = load_plugin(_mixture_component(Path(args.target), args.component))
    recipe_meta, _dir, _index = resolve_recipe(plugin, args.recipe)  # a merged target without --recipe fails here
    data = load_data(args.data or _default_data(plugin, "data", args.kind, recipe_meta.get("site")), label_column=args.label_column)
    prior = load_data(args.prior or _default_data(plugin, "prior"), label_column=args.label_column)
    result = run(plugin, data, prior, settings, plot=args.plot, categorical=args.categorical, recipe=args.recipe, parents=args.parents)
    from attacks.reconstruction.run import target_record

    result["target"] = target_record(plugin)
    if args.component is not None:
        result["target"]["mixture"] = {"path": str(args.target), "component": args.component}
    result["data"] = {"name": data.name, "rows": len(data), "kind": data.kind, "prior": prior.name, "prior_rows": len(prior)}
    if args.plot:
        result["plot"] = str(args.plot)
    atomic_write_json(out, _common._jsonable(result))
    if args.json:
        _common.emit_json(result)
        return 0
    h = result["headline"]
    bound = h.get("bound")
    if bound is None:
        b = result["bound"]
        bound = b.get("feature_accuracy", b.get("nn_identification", b)).get("bound")
    _common.console.print(
        f"[bold]{_common.escape(args.kind)}[/bold] on {_common.escape(args.target)}: {h['metric']} {h['rate']:.3f} "
        f"(95% CI {h['ci'][0]:.3f}-{h['ci'][1]:.3f}), baseline {h['baseline']:.3f}, ReRo bound {bound:.3f}",
        highlight=False,
        markup=True,
    )
    if "exposure_bits" in h:
        rows = result["success"]["by_repetition"]
        _common.console.print(
            "exposure (bits) by repetitions: "
            + ", ".join(f"r={r['repetitions']}: {r['mean_exposure_bits']:.2f}" for r in rows)
            + f" (max {result['success']['max_exposure_bits']:.2f})",
            highlight=False,
        )
    if "psnr_db" in h:
        _common.console.print(f"PSNR {h['psnr_db']:.1f} dB (baseline {h['baseline_psnr_db']:.1f} dB)", highlight=False)
    _common.console.print(f"results: {out}" + (f", picture: {args.plot}" if args.plot else ""), highlight=False)
    return 0
