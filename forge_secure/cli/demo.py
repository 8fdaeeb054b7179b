"""`forge demo`: the whole forge-secure path on the bundled data, in stages.

1. ``sites``: three simulated hospitals (the bundled breast-cancer shards, non-IID) each
   train a DP FFA-LoRA plugin on their coin-flip training set at epsilon 8, with their own
   budget ledger, and are evaluated on their test split;
2. ``keys``: every party makes its keys (consortium admin, the three sites, the maintainer
   who receives submissions, the auditor), the CKKS key holder makes the consortium's
   homomorphic context, and the admin signs a trust roster listing the site keys;
3. ``seal``: each site seals its plugin, and its CKKS-encrypted contribution (``w_i * B_i``
   under the public context), into ``.forge`` bundles for the maintainer;
4. ``open``: the maintainer verifies every bundle against the roster and opens it (replay
   store and roster state of the maintainer's own);
5. ``merge``: homomorphic Fusion (the maintainer, as aggregator, adds the ciphertexts with the
   public context only; the key holder decrypts the one aggregate, k-of-n) checked against
   the plaintext FFA merge, and a static Mixture; all evaluated on the pooled test splits;
6. ``attacks``: membership inference (RMIA with a few reference models) and reconstruction
   (the informed adversary) on a site plugin and on the merged model;
7. ``audit``: the evidence directory (``audits/README.md`` layout) is judged by the default
   policy and the signed report (JSON, HTML, PDF) is written.

Each stage is a function ``stage(ctx) -> None`` that reads and extends the context dict; its
printer (if any) shows a short summary as soon as it ends. A library piece that fails with a
:class:`ForgeError` in the attack stages is reported as *skipped*, with the reason; nothing
is made up in its place.

The demo writes only inside ``--out`` (default ``./forge-demo``): it is built in a temporary
sibling and renamed into place at the end, so a failed run leaves nothing. A rerun replaces
its own previous output, recognised by the marker file ``.forge-demo.json``; any other
non-empty directory is refused. Keys, the roster and its remembered state, replay stores,
sequence counters, ledgers and the CKKS release log live inside the demo directory; for the
duration of the run ``FORGE_HOME`` points at ``<out>/home`` (restored afterwards), so
nothing lands in the user's own forge home (caches too, unless ``FORGE_CACHE`` is set).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import ForgeError, ForgeFileError
from ..fileio import atomic_directory, atomic_write_json
from . import _common

MARKER = ".forge-demo.json"
DEMO_SITES = ("site-1", "site-2", "site-3")
DEMO_EPSILON = 8.0
DEMO_BUDGET = 10.0
DEMO_REFERENCES = 4
DEMO_RECON_TRIALS = 20
ATTACKED_SITE = "site-1"
CONSORTIUM = "forge-demo"
ROSTER_DAYS = 90
DAY = 86400


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this area's sub-commands to the `forge` parser."""
    p = sub.add_parser("demo", help="run the whole forge-secure path on the bundled data (three simulated hospitals)",
                       description="Three simulated hospitals train DP plugins on the bundled breast-cancer data, seal them, "
                                   "the maintainer verifies, opens and merges them (homomorphic Fusion and Mixture), both "
                                   "attack suites stress-test a site plugin and the merged model, and an audit writes a "
                                   "signed report. Prints what each stage did and where the report is.")
    p.add_argument("--out", type=Path, default=Path("forge-demo"), help="output directory (default ./forge-demo); a previous demo there is replaced")
    p.add_argument("--epsilon", type=float, default=DEMO_EPSILON, help=f"each site's target epsilon (default {DEMO_EPSILON:g})")
    p.add_argument("--references", type=int, default=DEMO_REFERENCES, help=f"reference models of the membership attack (default {DEMO_REFERENCES})")
    p.add_argument("--recon-trials", type=int, default=DEMO_RECON_TRIALS, help=f"games of the informed-adversary reconstruction attack (default {DEMO_RECON_TRIALS})")
    p.add_argument("--stop-after", choices=[n for n, _ in STAGES], default=None,
                   help="run the stages up to and including this one (default: all)")
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


def _shown(ctx: dict, path: Path) -> str:
    """Where ``path`` (inside the build directory) will be once the demo has finished."""
    return str(ctx["out"] / Path(path).relative_to(ctx["work"]))


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (reference-model workers)."""
    try:
        import resource
    except ImportError:  # not on POSIX: this process only
        return time.process_time()
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


# --------------------------------------------------------------------------- 1. sites


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


# --------------------------------------------------------------------------- 2. keys and roster


def stage_keys(ctx: dict) -> None:
    """Every party makes its keys; the admin signs a roster of the site keys; the key holder
    makes the CKKS context (public part for the sites and the aggregator, secret part kept)."""
    from ..crypto import add_site_key, init_roster, load_public_key, load_signing_key, new_keys, sign_roster
    from ..crypto._time import now as crypto_now
    from ..merge import he

    work: Path = ctx["work"]
    parties = ("consortium-admin", *DEMO_SITES, "maintainer", "auditor")
    keys = {who: new_keys(who, work / "keys" / who) for who in parties}
    now = crypto_now()
    roster = work / "roster.json"
    init_roster(roster, CONSORTIUM, [load_public_key(keys["consortium-admin"].public)], expires=now + ROSTER_DAYS * DAY)
    for site in DEMO_SITES:
        add_site_key(roster, load_public_key(keys[site].public), not_before=now - 3600, not_after=now + ROSTER_DAYS * DAY)
    signed = sign_roster(roster, load_signing_key(keys["consortium-admin"].signing))
    ckks = he.keygen(work / "key-holder" / "ckks")
    ctx["_keys"] = {who: k for who, k in keys.items()}
    ctx["_roster"] = roster
    ctx["_ckks"] = ckks.path
    ctx["keys"] = {
        "parties": {who: {"dir": _shown(ctx, work / "keys" / who), "key_id": load_public_key(k.public).key_id} for who, k in keys.items()},
        "roster": {"path": _shown(ctx, roster), "consortium": CONSORTIUM, "version": signed.version, "sites": list(DEMO_SITES),
                   "expires_days": ROSTER_DAYS},
        "ckks": {"dir": _shown(ctx, ckks.path), "fingerprint": ckks.fingerprint, "params": ckks.params.to_dict()},
    }


def _print_keys(ctx: dict) -> None:
    k = ctx["keys"]
    c = _common.console
    c.print("Stage 2: keys and the trust roster", style="bold")
    c.print(f"  {len(k['parties'])} parties made Ed25519 signing + X25519 (HPKE) keys: {', '.join(k['parties'])}", highlight=False, soft_wrap=True)
    c.print(f"  the consortium admin signed roster version {k['roster']['version']} listing the keys of "
            f"{', '.join(k['roster']['sites'])}, valid {k['roster']['expires_days']} days: {k['roster']['path']}", highlight=False, soft_wrap=True)
    c.print(f"  the CKKS key holder made the consortium context (fingerprint {k['ckks']['fingerprint'][:12]}...); "
            f"sites and the aggregator get only public.ctx", highlight=False, soft_wrap=True)


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
        plugin_bundle = seal(work / "plugins" / site, keys[site].signing, recipient, evidence / "bundles" / f"{site}.forge", counter=counter)
        contribution = he.encrypt_plugin(work / "plugins" / site, ctx["_ckks"] / "public.ctx", site_dir / "ckks-contribution")
        atomic_write_json(site_dir / "ckks-contribution.salt.json", {"salt": contribution.salt,
                                                                   "note": "kept by the site: opens the commitment to its plugin"})
        ckks_bundle = seal(contribution.path, keys[site].signing, recipient, work / "maintainer" / "inbox" / f"{site}-ckks.forge", counter=counter)
        sealed.append({"site": site, "plugin_bundle": _shown(ctx, plugin_bundle), "plugin_bundle_bytes": plugin_bundle.stat().st_size,
                       "ckks_bundle": _shown(ctx, ckks_bundle), "ckks_bundle_bytes": ckks_bundle.stat().st_size,
                       "ckks_weight": contribution.meta["weight"]})
    ctx["seal"] = sealed


def _print_seal(ctx: dict) -> None:
    c = _common.console
    c.print("Stage 3: each site signs and encrypts its submissions for the maintainer", style="bold")
    for s in ctx["seal"]:
        c.print(f"  {s['site']}: plugin {s['plugin_bundle']} ({s['plugin_bundle_bytes'] / 1024:.0f} KiB); "
                f"CKKS contribution (weight {s['ckks_weight']:g} x B) {s['ckks_bundle']} ({s['ckks_bundle_bytes'] / 1024:.0f} KiB)",
                highlight=False, soft_wrap=True)


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
        for bundle, target, what in ((work / "evidence" / "bundles" / f"{site}.forge", work / "evidence" / "plugins" / site, "plugin"),
                                     (maint / "inbox" / f"{site}-ckks.forge", maint / "contributions" / site, "CKKS contribution")):
            v = verify(bundle, roster, state_dir=state)
            o = open_bundle(bundle, key, roster, target, replay=replay, state_dir=state)
            opened.append({"site": v.site, "what": what, "sequence": v.sequence, "signer": v.signer, "dp_epsilon": (v.dp or {}).get("epsilon"),
                           "out": _shown(ctx, o.out), "files": len(o.files)})
    ctx["open"] = opened


def _print_open(ctx: dict) -> None:
    c = _common.console
    c.print("Stage 4: the maintainer verifies every bundle against the roster, then opens it", style="bold")
    for o in ctx["open"]:
        c.print(f"  {o['site']} {o['what']} (sequence {o['sequence']}, signer {o['signer'][:12]}...): verified, opened to {o['out']}",
                highlight=False, soft_wrap=True)
    c.print("  (each submission is accepted once: the maintainer's replay store refuses it a second time)", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- 5. merge


def stage_merge(ctx: dict) -> None:
    """Homomorphic Fusion (aggregate with the public context, one k-of-n decryption), checked
    against the plaintext FFA merge, and a static Mixture; evaluated on the pooled test splits."""
    import torch

    from ..merge import fusion_merge, load_mixture, mixture_merge
    from ..merge import he
    from ..merge.io import read_plugin_files
    from ..plugins.bases import load_base
    from ..plugins.data import bundled_splits
    from ..plugins.plugin import load_plugin
    from .train import evaluate

    work: Path = ctx["work"]
    maint, evidence = work / "maintainer", work / "evidence"
    plugins = [evidence / "plugins" / s for s in DEMO_SITES]
    base = load_base("tabular-mlp")
    contributions = [maint / "contributions" / s for s in DEMO_SITES]
    agg = he.aggregate(contributions, ctx["_ckks"] / "public.ctx", maint / "ckks-aggregate")  # aggregator: public context only
    k = 2
    merged = he.decrypt_to_plugin(maint / "ckks-aggregate", ctx["_ckks"], evidence / "merged" / "fusion-ckks", k=k, base=base)
    plain = fusion_merge(plugins, maint / "fusion-ffa-plaintext", method="ffa", base=base)
    a, b = read_plugin_files(merged).adapter.state, read_plugin_files(plain).adapter.state
    max_diff = max(float((a[n].double() - b[n].double()).abs().max()) for n in a)
    mixture = mixture_merge(plugins, maint / "mixture-static", router="static")

    splits = bundled_splits()
    pooled = splits.site(DEMO_SITES[0]).test
    for s in DEMO_SITES[1:]:
        pooled = pooled.concat(splits.site(s).test, name="pooled test splits")
    models = {f"{ATTACKED_SITE} plugin": load_plugin(evidence / "plugins" / ATTACKED_SITE, base),
              "Fusion (CKKS)": load_plugin(merged, base), "Mixture (static)": load_mixture(mixture, base)}
    evals = {}
    for name, model in models.items():
        ev = evaluate(model, pooled)
        evals[name] = {"accuracy": ev["accuracy"], "accuracy_ci95": ev["accuracy_ci95"], "roc_auc": ev["roc_auc"]}
    with torch.no_grad():
        base_acc = float((base.model(torch.tensor(pooled.X)).argmax(1).numpy() == pooled.y).mean())
    evals["base model"] = {"accuracy": base_acc, "accuracy_ci95": None, "roc_auc": None}
    ctx["merge"] = {
        "fusion_ckks": {"path": _shown(ctx, merged), "contributions": len(agg["contributions"]), "k": k,
                        "sum_weights": agg["sum_weights"], "max_abs_diff_vs_plaintext_ffa": max_diff},
        "mixture": {"path": _shown(ctx, mixture), "router": "static"},
        "evaluation": {"data": f"pooled test splits of {', '.join(DEMO_SITES)}", "rows": len(pooled), "models": evals},
    }
    ctx["_merged"] = merged


def _print_merge(ctx: dict) -> None:
    from rich.table import Table

    m, c = ctx["merge"], _common.console
    f = m["fusion_ckks"]
    c.print("Stage 5: the maintainer merges", style="bold")
    c.print(f"  homomorphic Fusion: the aggregator added {f['contributions']} encrypted contributions holding only the public "
            f"CKKS context; the key holder decrypted the one aggregate (k = {f['k']} of n = {f['contributions']}) into "
            f"{f['path']}; largest difference from the plaintext FFA merge {f['max_abs_diff_vs_plaintext_ffa']:.1e}",
            highlight=False, soft_wrap=True)
    c.print(f"  Mixture: the three plugins kept apart, outputs mixed with static weights: {m['mixture']['path']}", highlight=False, soft_wrap=True)
    t = Table(title=f"Utility on the {m['evaluation']['data']} ({m['evaluation']['rows']} rows)")
    for col in ("model", "accuracy (95% CI)", "AUC"):
        t.add_column(col)
    for name, e in m["evaluation"]["models"].items():
        ci = e["accuracy_ci95"]
        t.add_row(name, f"{e['accuracy']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else ""), "-" if e["roc_auc"] is None else f"{e['roc_auc']:.2f}")
    c.print(t)


# --------------------------------------------------------------------------- 6. attacks


def _skip(ctx: dict, what: str, error: Exception) -> dict:
    reason = f"{error.__class__.__name__}: {error}"
    ctx.setdefault("skipped", []).append({"what": what, "reason": reason})
    return {"skipped": True, "reason": reason}


def stage_attacks(ctx: dict) -> None:
    """Membership inference (RMIA, offline, a few reference models) and reconstruction (the
    informed adversary) on a site plugin and on the merged model; results into evidence/attacks/."""
    work: Path = ctx["work"]
    evidence = work / "evidence"
    site_plugin = evidence / "plugins" / ATTACKED_SITE
    targets = {ATTACKED_SITE: (site_plugin, None), "fusion-ckks": (ctx["_merged"], site_plugin)}
    out_dir = evidence / "attacks"
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"membership": {}, "reconstruction": {}}
    try:
        from attacks.membership.run import MiaSettings, run_mia, write_results
    except ImportError as e:  # the suite is missing: say so, do not make results up
        for name in targets:
            report["membership"][name] = _skip(ctx, f"membership attack on {name}", e)
    else:
        settings = None
        try:
            settings = MiaSettings(attack="rmia", references=ctx["references"], online=False, seed=0, n_boot=500)
        except ForgeError as e:
            for name in targets:
                report["membership"][name] = _skip(ctx, f"membership attack on {name}", e)
        for name, (target, recipe) in targets.items():
            if settings is None:
                break
            t0 = time.perf_counter()
            try:
                res = run_mia(target, f"bundled:{ATTACKED_SITE}", settings=settings, recipe=recipe, workers=1)
                path = write_results(res, out_dir / f"membership-rmia-{name}.json")
            except ForgeError as e:
                report["membership"][name] = _skip(ctx, f"membership attack on {name}", e)
                continue
            m, e_ = res["metrics"], res["empirical_epsilon"]
            report["membership"][name] = {
                "results": _shown(ctx, path), "attack": res["attack"], "references": res["references"].get("count"),
                "members": m["members"], "non_members": m["non_members"], "auc": m["auc"]["value"], "auc_ci": m["auc"]["ci"],
                "tpr_at_fpr": [{"fpr": r["target_fpr"], "tpr": r["tpr"]} for r in m["tpr_at_fpr"]],
                "epsilon_lb": e_["epsilon_lb"], "claimed_epsilon": e_["claimed"], "seconds": round(time.perf_counter() - t0, 1),
            }
    try:
        from attacks.reconstruction.run import ATTACKS as RECON, ReconSettings, target_record
    except ImportError as e:
        for name in targets:
            report["reconstruction"][name] = _skip(ctx, f"reconstruction attack on {name}", e)
    else:
        from ..plugins import load_data, load_plugin

        data, prior = load_data(f"bundled:{ATTACKED_SITE}/train"), load_data("bundled:public")
        for name, (target, recipe) in targets.items():
            t0 = time.perf_counter()
            try:
                # on the merged model the game runs site-1's recipe and releases the merge (mode model, site-1's bound)
                settings = ReconSettings(trials=ctx["recon_trials"], seed=0, candidates=10, mode="gradients")
                plugin = load_plugin(target)
                res = RECON.get("informed")(plugin, data, prior, settings, recipe=recipe)
                res["target"] = target_record(plugin)
                res["data"] = {"name": data.name, "rows": len(data), "kind": data.kind, "prior": prior.name, "prior_rows": len(prior)}
                path = out_dir / f"reconstruction-informed-{name}.json"
                atomic_write_json(path, _common._jsonable(res))
            except ForgeError as e:
                report["reconstruction"][name] = _skip(ctx, f"reconstruction attack on {name}", e)
                continue
            h = res["headline"]
            report["reconstruction"][name] = {
                "results": _shown(ctx, path), "attack": "informed adversary", "trials": ctx["recon_trials"], "rate": h["rate"],
                "ci": h["ci"], "baseline": h["baseline"], "rero_bound": h["bound"], "mode": res.get("mode"),
                "recipe_site": (res.get("recipe") or {}).get("site"), "seconds": round(time.perf_counter() - t0, 1),
            }
    ctx["attacks"] = report


def _print_attacks(ctx: dict) -> None:
    c = _common.console
    a = ctx["attacks"]
    c.print(f"Stage 6: attacks on the {ATTACKED_SITE} plugin and on the merged model (candidates: {ATTACKED_SITE}'s records)", soft_wrap=True, style="bold")
    for name, r in a["membership"].items():
        if r.get("skipped"):
            c.print(f"  membership on {name}: SKIPPED ({r['reason']})", highlight=False, soft_wrap=True)
            continue
        tpr = ", ".join(f"TPR {100 * t['tpr']:.1f}% at {100 * t['fpr']:g}% FPR" for t in r["tpr_at_fpr"])
        c.print(f"  membership (RMIA, {r['references']} reference models) on {name}: AUC {r['auc']:.3f} "
                f"(95% CI {r['auc_ci'][0]:.3f}-{r['auc_ci'][1]:.3f}; 0.5 = guessing), {tpr}; empirical epsilon >= "
                f"{r['epsilon_lb']:.2f} vs claimed {float(r['claimed_epsilon']):.2f}", highlight=False, soft_wrap=True)
    for name, r in a["reconstruction"].items():
        if r.get("skipped"):
            c.print(f"  reconstruction on {name}: SKIPPED ({r['reason']})", highlight=False, soft_wrap=True)
            continue
        how = {"gradients": "sees every noisy gradient", "model": "sees the released weights"}.get(r.get("mode"), r.get("mode") or "")
        if r.get("recipe_site"):
            how += f", replays {r['recipe_site']}'s training inside the merge"
        c.print(f"  reconstruction (informed adversary{', ' + how if how else ''}; {r['trials']} games) on {name}: picked the right record "
                f"{100 * r['rate']:.0f}% of the time (95% CI {100 * r['ci'][0]:.0f}-{100 * r['ci'][1]:.0f}%), guessing "
                f"{100 * r['baseline']:.0f}%, DP bound {100 * r['rero_bound']:.0f}%", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- 7. audit


def stage_audit(ctx: dict) -> None:
    """Lay out the evidence (audits/README.md) and run the audit with the default policy."""
    work: Path = ctx["work"]
    evidence = work / "evidence"
    shutil.copy2(ctx["_roster"], evidence / "roster.json")
    if (work / "ledgers").is_dir():
        shutil.copytree(work / "ledgers", evidence / "ledgers", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.lock"))
    try:
        from audits import audit_directory
    except ImportError as e:
        ctx["audit"] = _skip(ctx, "audit", e)
        return
    keys = ctx["_keys"]
    report_dir = work / "report"
    report = audit_directory(evidence, None, out=report_dir, key=keys["auditor"].signing, decryption_key=keys["maintainer"].decryption)
    checks = {c.name: c.status.value for c in report.checks}
    warnings = [{"check": f.check, "subject": f.subject, "summary": f.summary} for c in report.checks for f in c.findings
                if f.status.value == "warn"]
    failures = [{"check": f.check, "subject": f.subject, "summary": f.summary} for f in report.failures()]
    ctx["audit"] = {
        "verdict": report.verdict.value,
        "report_dir": _shown(ctx, report_dir),
        "files": sorted(p.name for p in report_dir.iterdir()),
        "checks": checks,
        "failures": failures,
        "warnings": warnings,
        "evidence": _shown(ctx, evidence),
        "auditor_public_key": _shown(ctx, keys["auditor"].public),
    }


def _print_audit(ctx: dict) -> None:
    c = _common.console
    a = ctx["audit"]
    c.print(f"Stage 7: the compliance audit (default policy) of the evidence in {a.get('evidence', 'evidence/')}", soft_wrap=True, highlight=False, style="bold")
    if a.get("skipped"):
        c.print(f"  SKIPPED ({a['reason']})", highlight=False, soft_wrap=True)
        return
    c.print("  checks: " + ", ".join(f"{name} {st.upper()}" for name, st in a["checks"].items()), highlight=False, soft_wrap=True)
    for label, items in (("FAIL", a["failures"]), ("WARN", a["warnings"])):
        for f in items:
            c.print(f"  {label} {f['check']}: {f['subject']}: {f['summary']}", highlight=False, soft_wrap=True)


STAGES: list[tuple[str, Callable[[dict], None]]] = [
    ("sites", stage_sites), ("keys", stage_keys), ("seal", stage_seal), ("open", stage_open), ("merge", stage_merge),
    ("attacks", stage_attacks), ("audit", stage_audit),
]


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
        "accuracy and AUC are on each site's held-out test split; 'benign' is the label share (non-IID skew).",
        highlight=False, soft_wrap=True,
    )
    for r in ctx["sites"]:
        _common.console.print(f"  {r['site']}: {r['plugin']}", soft_wrap=True, highlight=False)


PRINTERS: dict[str, Callable[[dict], None]] = {
    "sites": _print_sites, "keys": _print_keys, "seal": _print_seal, "open": _print_open, "merge": _print_merge,
    "attacks": _print_attacks, "audit": _print_audit,
}


@contextlib.contextmanager
def _demo_environment(home: Path):
    """FORGE_HOME inside the demo and one torch thread (tiny models: threads only add
    overhead), both restored afterwards."""
    import torch

    old_home, old_threads = os.environ.get("FORGE_HOME"), torch.get_num_threads()
    os.environ["FORGE_HOME"] = str(home)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if old_home is None:
            os.environ.pop("FORGE_HOME", None)
        else:
            os.environ["FORGE_HOME"] = old_home
        torch.set_num_threads(old_threads)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..errors import ForgeValueError

    out = Path(args.out)
    _check_target(out)
    if args.references < 1 or args.recon_trials < 1:
        raise ForgeValueError("--references and --recon-trials must be at least 1", fix="e.g. --references 4 --recon-trials 20",
                              code="demo.settings")
    stages = STAGES
    if args.stop_after:
        names = [n for n, _ in STAGES]
        stages = STAGES[: names.index(args.stop_after) + 1]
    ctx: dict = {"out": out.resolve(), "epsilon": float(args.epsilon), "references": int(args.references),
                 "recon_trials": int(args.recon_trials), "skipped": []}
    show = not args.json
    t0, c0 = time.perf_counter(), _cpu_seconds()
    if show:
        _common.console.print(f"forge demo: three simulated hospitals, from DP training to a signed audit report, in {out}/ "
                              f"({len(stages)} stages; a few minutes)", highlight=False, soft_wrap=True)
    timings = {}
    with atomic_directory(out, overwrite=True) as work, _demo_environment(work / "home"):
        ctx["work"] = work
        for name, stage in stages:
            s0, sc0 = time.perf_counter(), _cpu_seconds()
            stage(ctx)
            timings[name] = {"wall_seconds": round(time.perf_counter() - s0, 1), "cpu_seconds": round(_cpu_seconds() - sc0, 1)}
            if show and name in PRINTERS:
                PRINTERS[name](ctx)
                _common.console.print(f"  ({timings[name]['wall_seconds']:.0f} s)", style="dim")
        ctx["stages"] = [n for n, _ in stages]
        ctx["stage_seconds"] = timings
        ctx["seconds"] = round(time.perf_counter() - t0, 2)
        ctx["cpu_seconds"] = round(_cpu_seconds() - c0, 1)
        summary = {k: v for k, v in ctx.items() if k not in ("work", "out") and not k.startswith("_")}
        summary["out"] = str(ctx["out"])
        atomic_write_json(work / "summary.json", _common._jsonable(summary))
        atomic_write_json(work / MARKER, {"forge_demo": __version__, "stages": [n for n, _ in stages]})
    if args.json:
        _common.emit_json(summary)
        return 0
    c = _common.console
    c.print(f"Done in {ctx['seconds']:.0f} s ({ctx['cpu_seconds']:.0f} s of CPU). Everything is in {out}/ "
            f"(summary: {out}/summary.json).", highlight=False, soft_wrap=True)
    for s in ctx["skipped"]:
        c.print(f"skipped {s['what']}: {s['reason']}", highlight=False, soft_wrap=True)
    audit = ctx.get("audit")
    if audit and not audit.get("skipped"):
        colour = "green" if audit["verdict"].upper() == "PASS" else "red"
        c.print(f"Audit verdict: {audit['verdict'].upper()}. Report: {audit['report_dir']}/report.html "
                f"(also report.json, report.pdf; signed: report.sig.json). Check the signature with: "
                f"forge verify-report {audit['report_dir']} --key {audit['auditor_public_key']}", highlight=False, soft_wrap=True)
    elif "sites" in ctx:
        c.print(f"Inspect a plugin with: forge plugin show {out}/plugins/site-1", highlight=False, soft_wrap=True)
    return 0
