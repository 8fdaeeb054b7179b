"""The stages of `forge demo` (see :mod:`forge_secure.cli.demo` for the story), 1 to 5: the sites
train, everyone makes keys and a roster, the sites seal, the maintainer opens and merges (6 to 8 are
in :mod:`.demo_release`); and the demo's settings. Each ``stage_*(ctx)`` reads and extends the
context dict, and its printer shows a short summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..fileio import atomic_write_json
from . import _common

DEMO_SITES = ("site-1", "site-2", "site-3")
DEMO_EPSILON = 8.0
DEMO_BUDGET = 10.0
DEMO_REFERENCES = 4
DEMO_RECON_TRIALS = 20
ATTACKED_SITE = "site-1"
CONSORTIUM = "forge-demo"
ROSTER_DAYS = 90
DAY = 86400


def _shown(ctx: dict, path: Path) -> str:
    """Where ``path`` (inside the build directory) will be once the demo has finished."""
    return str(ctx["out"] / Path(path).relative_to(ctx["work"]))


# --------------------------------------------------------------------------- 1. sites


def stage_sites(ctx: dict) -> None:
    """Each hospital trains a DP FFA-LoRA plugin on its coin-flip training set."""
    import numpy as np
    import torch

    from ..crypto.keys import load_signing_key
    from ..plugins.bases import load_base
    from ..plugins.data import bundled_splits
    from ..plugins.evaluate import evaluate
    from ..privacy.canaries import issue_record, write_grant
    from ..privacy.site import train_site

    work: Path = ctx["work"]
    keys = ctx["_keys"]
    base = load_base("tabular-mlp")
    splits = bundled_splits()
    results = []
    records = ctx["_canary_records"] = []
    auditor_dir = work / "auditor"
    auditor_dir.mkdir(parents=True, exist_ok=True)
    for site in DEMO_SITES:
        t0 = time.perf_counter()
        # the auditor draws canaries for the site, keeps its record and seals only those to insert
        record = issue_record(site, 256, splits.site(site).pool)
        rec_path = auditor_dir / f"canaries-{site}.json"
        rec_path.write_text(json.dumps(record))
        rec_path.chmod(0o600)
        records.append(rec_path)
        grant = write_grant(
            record,
            signer=load_signing_key(keys["auditor"].signing),
            site_key=keys[site].public,
            out=work / "sites" / site / "canaries.forge",
        )
        # the site trains on its data and the canaries, and seals the replay envelope to the auditor
        run = train_site(
            site=site,
            data_spec=f"bundled:{site}",
            base_name="tabular-mlp",
            out=work / "plugins" / site,
            budget=DEMO_BUDGET,
            ledger_root=work / "ledgers",
            target_epsilon=ctx["epsilon"],
            ffa=True,
            seed=0,
            canary_grant=grant,
            grant_key=keys[site].decryption,
            roster=ctx["_roster"],
            auditor=keys["auditor"].public,
            signer=keys[site].signing,
        )
        plugin, td = run.plugin, run.training
        test = splits.site(site).test
        ev = evaluate(plugin, test)
        with torch.no_grad():
            base_acc = float((base.model(torch.tensor(test.X)).argmax(1).numpy() == test.y).mean())
        dp = plugin.meta["dp"]
        results.append(
            {
                "site": site,
                "train_rows": len(td.data),
                "pool_rows": td.commitment["membership"]["pool_rows"],
                "test_rows": len(test),
                "epsilon": dp["epsilon"],
                "delta": dp["delta"],
                "noise_multiplier": dp.get("noise_multiplier"),
                "steps": dp.get("steps"),
                "accuracy": ev["accuracy"],
                "accuracy_ci95": ev["accuracy_ci95"],
                "roc_auc": ev["roc_auc"],
                "base_accuracy": base_acc,
                "plugin": str(ctx["out"] / "plugins" / site),
                "seconds": round(time.perf_counter() - t0, 2),
                "label_share_benign": float(np.mean(td.data.y)),
                "canaries_inserted": run.canaries["count"] if run.canaries else 0,
                "canaries_issued": record["count"],
                "replay_envelope": _shown(ctx, run.envelope) if run.envelope else None,
            }
        )
    ctx["sites"] = results
    ctx["base"] = {"name": base.name, "digest": base.digest}


# --------------------------------------------------------------------------- 2. keys and roster


def stage_keys(ctx: dict) -> None:
    """Every party makes its keys; the admin signs a roster of the site keys; the key holder
    makes the CKKS context (public part for the sites and the aggregator, secret part kept)."""
    from ..crypto import add_site_key, init_roster, load_public_key, load_signing_key, new_keys, sign_roster
    from ..crypto._time import now as crypto_now
    from ..crypto.roster import Recipient
    from ..merge import he

    work: Path = ctx["work"]
    parties = ("consortium-admin", *DEMO_SITES, "maintainer", "auditor")
    keys = {who: new_keys(who, work / "keys" / who) for who in parties}
    now = crypto_now()
    roster = work / "roster.json"
    # recipients: the maintainer (submissions), the auditor (replay envelopes), each site (the auditor's canary grants)
    recipients = [
        Recipient.from_public(load_public_key(keys["maintainer"].public), "consortium"),
        Recipient.from_public(load_public_key(keys["auditor"].public), "auditor"),
        *(Recipient.from_public(load_public_key(keys[s].public), "site") for s in DEMO_SITES),
    ]
    init_roster(
        roster, CONSORTIUM, [load_public_key(keys["consortium-admin"].public)], expires=now + ROSTER_DAYS * DAY, recipients=recipients
    )
    for site in (*DEMO_SITES, "auditor"):  # the auditor signs canary grants, so sites must find its key in the roster
        add_site_key(roster, load_public_key(keys[site].public), not_before=now - 3600, not_after=now + ROSTER_DAYS * DAY)
    signed = sign_roster(roster, load_signing_key(keys["consortium-admin"].signing))
    ckks = he.keygen(work / "key-holder" / "ckks")
    ctx["_keys"] = {who: k for who, k in keys.items()}
    ctx["_roster"] = roster
    ctx["_ckks"] = ckks.path
    ctx["keys"] = {
        "parties": {who: {"dir": _shown(ctx, work / "keys" / who), "key_id": load_public_key(k.public).key_id} for who, k in keys.items()},
        "roster": {
            "path": _shown(ctx, roster),
            "consortium": CONSORTIUM,
            "version": signed.version,
            "sites": list(DEMO_SITES),
            "expires_days": ROSTER_DAYS,
        },
        "ckks": {"dir": _shown(ctx, ckks.path), "fingerprint": ckks.fingerprint, "params": ckks.params.to_dict()},
    }


def _print_keys(ctx: dict) -> None:
    k = ctx["keys"]
    c = _common.console
    c.print("Stage 1: keys and the trust roster", style="bold")
    c.print(
        f"  {len(k['parties'])} parties made Ed25519 signing + X25519 (HPKE) keys: {', '.join(k['parties'])}",
        highlight=False,
        soft_wrap=True,
    )
    c.print(
        f"  the consortium admin signed roster version {k['roster']['version']} listing the keys of "
        f"{', '.join(k['roster']['sites'])}, valid {k['roster']['expires_days']} days: {k['roster']['path']}",
        highlight=False,
        soft_wrap=True,
    )
    c.print(
        f"  the CKKS key holder made the consortium context (fingerprint {k['ckks']['fingerprint'][:12]}...); "
        f"sites and the aggregator get only public.ctx",
        highlight=False,
        soft_wrap=True,
    )


# --------------------------------------------------------------------------- 3. seal


def stage_seal(ctx: dict) -> None:
    """Each site seals its plugin, and its CKKS contribution, for the maintainer."""
    from ..crypto import SequenceCounter, seal
    from ..merge import he

    work: Path = ctx["work"]
    keys = ctx["_keys"]
    recipient = keys["maintainer"].public
    evidence = work / "evidence"
    sealed = []
    for site in DEMO_SITES:
        site_dir = work / "sites" / site
        counter = SequenceCounter(site_dir / "sequence")
        plugin_bundle = seal(
            work / "plugins" / site, keys[site].signing, recipient, evidence / "bundles" / f"{site}.forge", counter=counter
        )
        contribution = he.encrypt_plugin(work / "plugins" / site, ctx["_ckks"] / "public.ctx", site_dir / "ckks-contribution")
        atomic_write_json(
            site_dir / "ckks-contribution.salt.json",
            {"salt": contribution.salt, "note": "kept by the site: opens the commitment to its plugin"},
        )
        ckks_bundle = seal(
            contribution.path, keys[site].signing, recipient, work / "maintainer" / "inbox" / f"{site}-ckks.forge", counter=counter
        )
        sealed.append(
            {
                "site": site,
                "plugin_bundle": _shown(ctx, plugin_bundle),
                "plugin_bundle_bytes": plugin_bundle.stat().st_size,
                "ckks_bundle": _shown(ctx, ckks_bundle),
                "ckks_bundle_bytes": ckks_bundle.stat().st_size,
                "ckks_weight": contribution.meta["weight"],
            }
        )
    ctx["seal"] = sealed


def _print_seal(ctx: dict) -> None:
    c = _common.console
    c.print("Stage 3: each site signs and encrypts its submissions for the maintainer", style="bold")
    for s in ctx["seal"]:
        c.print(
            f"  {s['site']}: plugin {s['plugin_bundle']} ({s['plugin_bundle_bytes'] / 1024:.0f} KiB); "
            f"CKKS contribution (weight {s['ckks_weight']:g} x B) {s['ckks_bundle']} ({s['ckks_bundle_bytes'] / 1024:.0f} KiB)",
            highlight=False,
            soft_wrap=True,
        )


# --------------------------------------------------------------------------- 4. verify and open


def stage_open(ctx: dict) -> None:
    """The maintainer verifies each bundle (signature, signer in the roster) and opens it."""
    from ..crypto import ReplayStore, open_bundle, verify

    work: Path = ctx["work"]
    maint = work / "maintainer"
    key = ctx["_keys"]["maintainer"].decryption
    roster = ctx["_roster"]
    state, replay = maint / "roster-state", ReplayStore(maint / "replay")
    opened = []
    for site in DEMO_SITES:
        for bundle, target, what in (
            (work / "evidence" / "bundles" / f"{site}.forge", work / "evidence" / "plugins" / site, "plugin"),
            (maint / "inbox" / f"{site}-ckks.forge", maint / "contributions" / site, "CKKS contribution"),
        ):
            v = verify(bundle, roster, state_dir=state, root=roster)  # the maintainer was handed the roster out of band
            o = open_bundle(bundle, key, roster, target, replay=replay, state_dir=state, root=roster)
            opened.append(
                {
                    "site": v.site,
                    "what": what,
                    "sequence": v.sequence,
                    "signer": v.signer,
                    "dp_epsilon": (v.dp or {}).get("epsilon"),
                    "out": _shown(ctx, o.out),
                    "files": len(o.files),
                }
            )
    ctx["open"] = opened


def _print_open(ctx: dict) -> None:
    c = _common.console
    c.print("Stage 4: the maintainer verifies every bundle against the roster, then opens it", style="bold")
    for o in ctx["open"]:
        c.print(
            f"  {o['site']} {o['what']} (sequence {o['sequence']}, signer {o['signer'][:12]}...): verified, opened to {o['out']}",
            highlight=False,
            soft_wrap=True,
        )
    c.print("  (each submission is accepted once: the maintainer's replay store refuses it a second time)", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- 5. merge


def stage_merge(ctx: dict) -> None:
    """Homomorphic Fusion (aggregate with the public context, one k-of-n decryption), checked
    against the plaintext FFA merge, and a static Mixture; evaluated on the pooled test splits."""
    import torch

    from ..merge import fusion_merge, he, load_mixture, mixture_merge
    from ..plugins.bases import load_base
    from ..plugins.data import bundled_splits
    from ..plugins.evaluate import evaluate
    from ..plugins.plugin import load_plugin
    from ..plugins.record import read_plugin

    work: Path = ctx["work"]
    maint, evidence = work / "maintainer", work / "evidence"
    plugins = [evidence / "plugins" / s for s in DEMO_SITES]
    base = load_base("tabular-mlp")
    contributions = [maint / "contributions" / s for s in DEMO_SITES]
    agg = he.aggregate(contributions, ctx["_ckks"] / "public.ctx", maint / "ckks-aggregate")  # aggregator: public context only
    k = 2
    merged = he.decrypt_to_plugin(maint / "ckks-aggregate", ctx["_ckks"], evidence / "merged" / "fusion-ckks", k=k, base=base)
    plain = fusion_merge(plugins, maint / "fusion-ffa-plaintext", method="ffa", base=base)
    a, b = read_plugin(merged).adapter.state, read_plugin(plain).adapter.state
    max_diff = max(float((a[n].double() - b[n].double()).abs().max()) for n in a)
    mixture = mixture_merge(plugins, maint / "mixture-static", router="static")

    splits = bundled_splits()
    pooled = splits.site(DEMO_SITES[0]).test
    for s in DEMO_SITES[1:]:
        pooled = pooled.concat(splits.site(s).test, name="pooled test splits")
    models = {
        f"{ATTACKED_SITE} plugin": load_plugin(evidence / "plugins" / ATTACKED_SITE, base),
        "Fusion (CKKS)": load_plugin(merged, base),
        "Mixture (static)": load_mixture(mixture, base),
    }
    evals = {}
    for name, model in models.items():
        ev = evaluate(model, pooled)
        evals[name] = {"accuracy": ev["accuracy"], "accuracy_ci95": ev["accuracy_ci95"], "roc_auc": ev["roc_auc"]}
    with torch.no_grad():
        base_acc = float((base.model(torch.tensor(pooled.X)).argmax(1).numpy() == pooled.y).mean())
    evals["base model"] = {"accuracy": base_acc, "accuracy_ci95": None, "roc_auc": None}
    ctx["merge"] = {
        "fusion_ckks": {
            "path": _shown(ctx, merged),
            "contributions": len(agg["contributions"]),
            "k": k,
            "sum_weights": agg["sum_weights"],
            "max_abs_diff_vs_plaintext_ffa": max_diff,
        },
        "mixture": {"path": _shown(ctx, mixture), "router": "static"},
        "evaluation": {"data": f"pooled test splits of {', '.join(DEMO_SITES)}", "rows": len(pooled), "models": evals},
    }
    ctx["_merged"] = merged


def _print_merge(ctx: dict) -> None:
    from rich.table import Table

    m, c = ctx["merge"], _common.console
    f = m["fusion_ckks"]
    c.print("Stage 5: the maintainer merges", style="bold")
    c.print(
        f"  homomorphic Fusion: the aggregator added {f['contributions']} encrypted contributions holding only the public "
        f"CKKS context; the key holder decrypted the one aggregate (k = {f['k']} of n = {f['contributions']}) into "
        f"{f['path']}; largest difference from the plaintext FFA merge {f['max_abs_diff_vs_plaintext_ffa']:.1e}",
        highlight=False,
        soft_wrap=True,
    )
    c.print(
        f"  Mixture: the three plugins kept apart, outputs mixed with static weights: {m['mixture']['path']}",
        highlight=False,
        soft_wrap=True,
    )
    t = Table(title=f"Utility on the {m['evaluation']['data']} ({m['evaluation']['rows']} rows)")
    for col in ("model", "accuracy (95% CI)", "AUC"):
        t.add_column(col)
    for name, e in m["evaluation"]["models"].items():
        ci = e["accuracy_ci95"]
        t.add_row(
            name,
            f"{e['accuracy']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""),
            "-" if e["roc_auc"] is None else f"{e['roc_auc']:.2f}",
        )
    c.print(t)


def _print_sites(ctx: dict) -> None:
    from rich.table import Table

    t = Table(
        title=f"Stage 2: three hospitals train DP plugins (FFA-LoRA, target epsilon {ctx['epsilon']:g}) on their data "
        "and the auditor's canaries; each seals its run's secret and recipe to the auditor"
    )
    for col in ("site", "rows (pool)", "benign", "eps (delta)", "sigma/steps", "accuracy (95% CI)", "AUC", "base acc"):
        t.add_column(col, overflow="fold")
    for r in ctx["sites"]:
        lo, hi = r["accuracy_ci95"]
        t.add_row(
            r["site"],
            f"{r['train_rows']} ({r['pool_rows']})",
            f"{r['label_share_benign']:.2f}",
            f"{float(r['epsilon']):.2f} ({r['delta']:.0e})",
            f"{r['noise_multiplier']:.2f}/{r['steps']}",
            f"{r['accuracy']:.2f} ({lo:.2f}-{hi:.2f})",
            f"{r['roc_auc']:.2f}",
            f"{r['base_accuracy']:.2f}",
        )
    _common.console.print(t)
    _common.console.print(
        f"Base {ctx['base']['name']} sha256 {ctx['base']['digest'][:16]}... ; each site's delta is below 1/n of its rows; "
        "accuracy and AUC are on each site's held-out test split; 'benign' is the label share (non-IID skew).",
        highlight=False,
        soft_wrap=True,
    )
    for r in ctx["sites"]:
        _common.console.print(f"  {r['site']}: {r['plugin']}", soft_wrap=True, highlight=False)
