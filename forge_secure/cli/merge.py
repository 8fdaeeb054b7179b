"""`forge merge`, `forge lineage`, `forge he`, `forge synth`.

Thin: each handler parses, calls :mod:`forge_secure.merge` (or
:mod:`forge_secure.privacy.synthetic`), prints. A ``ForgeError`` becomes one line on
stderr and exit 2; outputs are written atomically, so a failure leaves nothing behind.
"""

from __future__ import annotations

import argparse

from ..errors import ForgeValueError
from . import _common


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ForgeValueError(
            f"--weights {text!r} is not a comma-separated list of numbers", fix="e.g. --weights 84,62,31", code="merge.bad_weights"
        ) from None
    if not values:
        raise ForgeValueError("--weights is empty", fix="e.g. --weights 84,62,31", code="merge.bad_weights")
    return values


def _bundle_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", metavar="FILE", help="decryption.key of the recipient, to open sealed .forge bundles")
    p.add_argument("--roster", metavar="FILE", help="the trust roster, to verify sealed .forge bundles")
    _common.add_passphrase_flags(p, "--key")


def _bundle_key(args):
    if not getattr(args, "key", None):
        return None
    from ..crypto import load_decryption_key

    return load_decryption_key(args.key, _common.passphrase(args))


def _print(title: str, pairs: list[tuple[str, object]]) -> None:
    _common.console.print(title, style="bold")
    for k, v in pairs:
        _common.console.print(f"  {k:<14} {v}", highlight=False, soft_wrap=True)


def _fmt_w(ws) -> str:
    return ", ".join(f"{w:.4g}" for w in ws) if ws else "-"


# --------------------------------------------------------------------------- merge


def _merge_fusion(args) -> int:
    if args.encrypted:
        return _aggregate(args)
    from ..merge import fusion_merge
    from ..merge.fusion import FUSIONS

    FUSIONS.get(args.method)  # an unknown method fails here, before any input is opened
    from ..plugins.record import read_plugin

    out = fusion_merge(
        args.inputs,
        args.out,
        method=args.method,
        weights=_weights(args.weights),
        tune_on=args.tune_on,
        key=_bundle_key(args),
        roster=args.roster,
        seed=args.seed,
        density=args.density,
        budget=args.budget,
    )
    meta = read_plugin(out, weights=False).meta
    info = {
        "out": str(out),
        "method": meta["merge"]["method"],
        "weights": meta["merge"]["weights"],
        "weight_source": meta["merge"]["details"].get("weight_source"),
        "rank": meta["lora"]["rank"],
        "parents": [{"site": p["site"], "digest": p["digest"]} for p in meta["parents"]],
        "epsilon_per_site": {p["site"]: p["epsilon"] for p in meta["dp"]["per_parent"]},
    }
    if args.json:
        _common.emit_json(info)
    else:
        _print(
            f"merged plugin written to {out}",
            [
                ("method", info["method"]),
                ("weights", f"{_fmt_w(info['weights'])} ({info['weight_source']})"),
                ("rank", info["rank"]),
                ("parents", ", ".join(f"{p['site']} {p['digest'][:12]}" for p in info["parents"])),
                (
                    "epsilon",
                    ", ".join(f"{s}: {e}" for s, e in info["epsilon_per_site"].items()) + "  (each site's own; merging is post-processing)",
                ),
            ],
        )
    return 0


def _merge_mixture(args) -> int:
    from ..merge import mixture_merge
    from ..merge.mixture import ROUTERS, read_mixture_meta

    ROUTERS.get(args.router)  # an unknown router fails here, before any input is opened

    out = mixture_merge(
        args.inputs,
        args.out,
        router=args.router,
        weights=_weights(args.weights),
        tune_on=args.tune_on,
        key=_bundle_key(args),
        roster=args.roster,
        seed=args.seed,
        budget=args.budget,
    )
    meta = read_mixture_meta(out)
    info = {
        "out": str(out),
        "router": meta["router"],
        "weights": meta.get("weights"),
        "plugins": [{"site": p["site"], "digest": p["digest"]} for p in meta["plugins"]],
    }
    if args.json:
        _common.emit_json(info)
    else:
        _print(
            f"mixture written to {out}",
            [
                ("router", info["router"]),
                ("weights", _fmt_w(info["weights"]) if info["weights"] else "input-dependent"),
                ("plugins", ", ".join(f"{p['site']} {p['digest'][:12]}" for p in info["plugins"])),
            ],
        )
    return 0


def _lineage(args) -> int:
    from ..merge import lineage_lines, lineage_tree

    tree = lineage_tree(args.path)
    if args.json:
        _common.emit_json(tree)
    else:
        for line in lineage_lines(tree):
            _common.console.print(line, highlight=False, soft_wrap=True)
    return 0


# --------------------------------------------------------------------------- he


def _he_keygen(args) -> int:
    from ..merge.he import HEParams, keygen

    params = HEParams(
        poly_modulus_degree=args.poly_modulus_degree,
        coeff_mod_bit_sizes=tuple(args.coeff_mod_bit_sizes),
        scale_bits=args.scale_bits,
        max_abs=args.max_abs,
    )
    info = keygen(args.out, params)
    data = {
        "out": str(info.path),
        "fingerprint": info.fingerprint,
        "params": params.to_dict(),
        "secret": str(info.path / "secret.ctx"),
        "public": str(info.path / "public.ctx"),
    }
    if args.json:
        _common.emit_json(data)
    else:
        _print(
            f"CKKS keys written to {info.path}",
            [
                ("fingerprint", info.fingerprint),
                (
                    "parameters",
                    f"N={params.poly_modulus_degree}, moduli {list(params.coeff_mod_bit_sizes)}, "
                    f"scale 2^{params.scale_bits} (128-bit security)",
                ),
                ("secret", f"{data['secret']} (mode 0600; the key holder keeps it)"),
                ("public", f"{data['public']} (give it to the sites and the aggregator)"),
            ],
        )
    return 0


def _he_encrypt(args) -> int:
    from ..merge.he import encrypt_plugin
    from ..merge.io import open_inputs

    with open_inputs([args.plugin], key=_bundle_key(args), roster=args.roster) as dirs:
        c = encrypt_plugin(dirs[0], args.context, args.out, weight=args.weight, hide_digest=args.hide_digest)
    data = {
        "out": str(c.path),
        "site": c.meta["site"],
        "weight": c.meta["weight"],
        "ciphertexts": c.meta["n_ciphertexts"],
        "values": c.meta["n_values"],
        "fingerprint": c.meta["context_fingerprint"],
        "commitment": c.meta["parent"]["commitment"],
        "salt": c.salt,
    }
    if args.json:
        _common.emit_json(data)
    else:
        _print(
            f"encrypted contribution written to {c.path}",
            [
                ("site", data["site"]),
                ("weight", data["weight"]),
                ("values", f"{data['values']} in {data['ciphertexts']} ciphertext(s)"),
                ("commitment", data["commitment"]),
                ("salt", f"{data['salt']} (keep it: it opens the commitment)"),
                ("next", "seal it with `forge seal` and send it to the aggregator"),
            ],
        )
    return 0


def _aggregate(args) -> int:
    from ..merge.he import aggregate
    from ..merge.io import open_inputs

    if not args.context:
        raise ForgeValueError(
            "the encrypted merge needs the consortium's public context", fix="give --context DIR/public.ctx", code="he.missing_context"
        )
    with open_inputs(args.inputs, key=_bundle_key(args), roster=args.roster) as dirs:
        meta = aggregate(dirs, args.context, args.out)
    data = {
        "out": str(args.out),
        "contributions": [{"site": c["site"], "weight": c["weight"]} for c in meta["contributions"]],
        "sum_weights": meta["sum_weights"],
        "fingerprint": meta["context_fingerprint"],
    }
    if args.json:
        _common.emit_json(data)
    else:
        _print(
            f"encrypted aggregate written to {args.out}",
            [
                ("contributions", ", ".join(f"{c['site']} (w={c['weight']:g})" for c in data["contributions"])),
                ("sum of weights", f"{data['sum_weights']:g}"),
                ("next", "send it to the key holder: `forge he decrypt`"),
            ],
        )
    return 0


def _he_decrypt(args) -> int:
    from ..merge.he import decrypt_to_plugin
    from ..plugins.record import read_plugin

    out = decrypt_to_plugin(args.aggregate, args.key, args.out, k=args.k, contributions=args.contributions)
    meta = read_plugin(out, weights=False).meta
    data = {
        "out": str(out),
        "method": meta["merge"]["method"],
        "weights": meta["merge"]["weights"],
        "parents": [p["site"] for p in meta["parents"]],
    }
    if args.json:
        _common.emit_json(data)
    else:
        checked = (
            "summed here from the given contributions"
            if args.contributions
            else "as listed by the aggregator (give --contributions to check the list and sum them here)"
        )
        _print(
            f"merged plugin written to {out}",
            [
                ("method", data["method"]),
                ("weights", _fmt_w(data["weights"])),
                ("sites", ", ".join(data["parents"])),
                ("aggregate", checked),
            ],
        )
    return 0


# --------------------------------------------------------------------------- synth


def _synth(args) -> int:
    from ..plugins.bases import load_base
    from ..plugins.sources import prepare_training_data
    from ..privacy.synthetic import SynthConfig, make_synthetic, save_synthetic

    config = SynthConfig(
        noise_multiplier=args.sigma,
        target_epsilon=args.epsilon,
        delta=args.delta,
        clip=args.clip,
        per_class=args.per_class,
        space=args.space,
        spread=args.spread,
        accountant=args.accountant,
        seed=args.seed,
    )
    if args.out.exists():
        raise ForgeValueError(f"{args.out} already exists", fix="choose another --out", code="file.exists")
    td = prepare_training_data(args.data)  # the same data and ledger name as `forge train`
    base = load_base(args.base)
    ledger = None
    if not args.no_ledger:
        from ..privacy.ledger import Ledger

        ledger = Ledger.open(args.site, args.dataset or td.ledger_dataset, args.budget)
    synth = make_synthetic(base, td.data, config, site=args.site, ledger=ledger)
    save_synthetic(synth, args.out)
    rel = synth.meta["release"]
    data_out = {
        "out": str(args.out),
        "rows": synth.meta["rows"],
        "epsilon": rel["epsilon"],
        "delta": rel["delta"],
        "noise_multiplier": rel["noise_multiplier"],
        "accountant": rel["accountant"],
        "space": synth.meta["space"],
        "ledger": not args.no_ledger,
    }
    if args.json:
        _common.emit_json(data_out)
    else:
        _print(
            f"DP synthetic data written to {args.out}",
            [
                ("rows", data_out["rows"]),
                ("release", f"noisy class means, sigma {rel['noise_multiplier']:.4g}, clip {rel['clip']:g}"),
                (
                    "privacy",
                    f"epsilon {rel['epsilon']:.4g} at delta {rel['delta']:g} ({rel['accountant']})"
                    + ("; charged to the ledger" if ledger else "; NOT charged (--no-ledger)"),
                ),
            ],
        )
    return 0


# --------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction) -> None:
    """Add `merge`, `lineage`, `he` and `synth` to the `forge` parser."""
    from pathlib import Path

    # The method and router names are checked against their registries when the command
    # runs (an unknown name lists the allowed ones), so building the parser imports no torch.
    merge = sub.add_parser("merge", help="merge plugins: fusion (one plugin) or mixture (kept apart)")
    msub = merge.add_subparsers(dest="merge_kind", metavar="KIND", required=True)

    fu = msub.add_parser(
        "fusion",
        help="fuse plugins into one merged plugin",
        description="Fuse plugin directories or sealed .forge bundles into one plugin. "
        "Weights: --weights, else tuned on --tune-on synthetic data, else the "
        "training-set sizes. With --encrypted, sum encrypted contributions (aggregator).",
    )
    fu.add_argument("inputs", nargs="+", metavar="PLUGIN_DIR_OR_BUNDLE")
    fu.add_argument("--out", required=True, type=Path, metavar="DIR")
    fu.add_argument("--method", default="exact", help="fusion method (default exact); an unknown name lists the registered methods")
    fu.add_argument("--weights", metavar="W1,W2,...", help="one weight per plugin (normalised to sum 1)")
    fu.add_argument("--tune-on", metavar="SYNTH", help="DP synthetic data (forge synth) to tune weights on")
    fu.add_argument("--density", type=float, default=0.5, help="fraction kept by ties / dare (default 0.5)")
    fu.add_argument("--budget", type=int, default=40, help="nevergrad evaluations when tuning (default 40)")
    fu.add_argument("--seed", type=int, default=0)
    fu.add_argument("--encrypted", action="store_true", help="inputs are encrypted contributions: sum them under --context (aggregator)")
    fu.add_argument("--context", metavar="PUBLIC_CTX", help="public CKKS context for --encrypted")
    _bundle_flags(fu)
    _common.add_json_flag(fu)
    fu.set_defaults(func=_merge_fusion)

    mx = msub.add_parser(
        "mixture",
        help="keep plugins apart and mix their predictions",
        description="Build a Mixture of plugins (directories or sealed bundles).",
    )
    mx.add_argument("inputs", nargs="+", metavar="PLUGIN_DIR_OR_BUNDLE")
    mx.add_argument("--out", required=True, type=Path, metavar="DIR")
    mx.add_argument(
        "--router",
        default="static",
        help="router (default static): static weights, a gate fitted on --tune-on, or similarity (training-free)",
    )
    mx.add_argument("--weights", metavar="W1,W2,...", help="static weights (default: training-set sizes, or tuned with --tune-on)")
    mx.add_argument("--tune-on", metavar="SYNTH", help="DP synthetic data to tune static weights or fit the gate")
    mx.add_argument("--budget", type=int, default=40)
    mx.add_argument("--seed", type=int, default=0)
    _bundle_flags(mx)
    _common.add_json_flag(mx)
    mx.set_defaults(func=_merge_mixture)

    li = sub.add_parser("lineage", help="print which contributions a merged plugin, mixture or aggregate contains")
    li.add_argument("path", metavar="DIR")
    _common.add_json_flag(li)
    li.set_defaults(func=_lineage)

    he = sub.add_parser("he", help="homomorphic Fusion with CKKS: keygen, encrypt, aggregate, decrypt")
    hsub = he.add_subparsers(dest="he_command", metavar="STEP", required=True)
    kg = hsub.add_parser("keygen", help="make the consortium's secret and public CKKS contexts (key holder)")
    kg.add_argument("--out", required=True, type=Path, metavar="DIR")
    kg.add_argument("--poly-modulus-degree", type=int, default=8192)
    kg.add_argument("--coeff-mod-bit-sizes", type=int, nargs="+", default=[60, 40])
    kg.add_argument("--scale-bits", type=int, default=40)
    kg.add_argument("--max-abs", type=float, default=1e4, help="largest |w*B| a site may encrypt")
    _common.add_json_flag(kg)
    kg.set_defaults(func=_he_keygen)
    en = hsub.add_parser("encrypt", help="encrypt w*B of an FFA plugin under the public context (site)")
    en.add_argument("plugin", metavar="PLUGIN_DIR")
    en.add_argument("--context", required=True, metavar="PUBLIC_CTX")
    en.add_argument("--weight", type=float, help="merge weight (default: the training-set size)")
    en.add_argument("--out", required=True, type=Path, metavar="DIR")
    en.add_argument(
        "--hide-digest", action="store_true", help="record only a salted commitment to the plugin, not its digest (keep the printed salt)"
    )
    _bundle_flags(en)
    _common.add_json_flag(en)
    en.set_defaults(func=_he_encrypt)
    ag = hsub.add_parser("aggregate", help="sum encrypted contributions with the public context only (aggregator)")
    ag.add_argument("inputs", nargs="+", metavar="CONTRIBUTION_DIR_OR_BUNDLE")
    ag.add_argument("--context", required=True, metavar="PUBLIC_CTX")
    ag.add_argument("--out", required=True, type=Path, metavar="DIR")
    _bundle_flags(ag)
    _common.add_json_flag(ag)
    ag.set_defaults(func=_aggregate)
    de = hsub.add_parser("decrypt", help="decrypt the one aggregate into the merged plugin (key holder)")
    de.add_argument("aggregate", metavar="AGGREGATE_DIR")
    de.add_argument("--key", required=True, metavar="SECRET_CTX_DIR", help="the key directory (or secret.ctx)")
    de.add_argument("--out", required=True, type=Path, metavar="DIR")
    de.add_argument("--k", type=int, default=2, help="minimum number of distinct sites (default 2)")
    de.add_argument(
        "--contributions",
        nargs="+",
        metavar="CONTRIBUTION_DIR",
        help="the contributions themselves (opened from the sites' signed bundles): checked against the aggregate's list, "
        "and their sum is computed here, so a cheating aggregator cannot make a single plugin pass for an aggregate",
    )
    _common.add_json_flag(de)
    de.set_defaults(func=_he_decrypt)

    sy = sub.add_parser("synth", help="release DP synthetic data (noisy class means) for tuning merges")
    sy.add_argument("--base", default="tabular-mlp")
    sy.add_argument("--data", required=True, metavar="SPEC", help="the site's data: bundled:site-1, a CSV or .npz")
    sy.add_argument("--site", required=True)
    g = sy.add_mutually_exclusive_group(required=True)
    g.add_argument("--epsilon", type=float, help="target epsilon of the release")
    g.add_argument("--sigma", type=float, help="noise multiplier of the release")
    sy.add_argument("--delta", type=float, default=1e-5)
    sy.add_argument("--clip", type=float, default=8.0, help="L2 bound C of each record's contribution")
    sy.add_argument("--per-class", type=int, default=100)
    sy.add_argument("--space", default="auto", choices=["auto", "input", "head"])
    sy.add_argument("--spread", type=float, default=0.5)
    sy.add_argument("--accountant", default="prv")
    sy.add_argument("--budget", type=float, default=None, help="the site's total epsilon budget for the ledger")
    sy.add_argument("--dataset", default=None, help="ledger data-set name (default: the one `forge train` uses for --data)")
    sy.add_argument("--no-ledger", action="store_true", help="do not charge the site's ledger (testing only)")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--out", required=True, type=Path, metavar="FILE.npz")
    _common.add_json_flag(sy)
    sy.set_defaults(func=_synth)
