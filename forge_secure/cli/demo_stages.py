"""The stages of `forge demo` (see :mod:`forge_secure.cli.demo` for the story): each
``stage_*(ctx)`` reads and extends the context dict, and its printer shows a short summary."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from ..errors import ForgeError
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

    from ..plugins.bases import load_base
    from ..plugins.data import bundled_splits
    from ..crypto.keys import load_signing_key
    from ..privacy.canaries import issue_record, write_grant
    from ..privacy.site import train_site
    from .train import evaluate

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
        grant = write_grant(record, signer=load_signing_key(keys["auditor"].signing), site_key=keys[site].public,
                            out=work / "sites" / site / "canaries.forge")
        # the site trains on its data and the canaries, and seals the replay envelope to the auditor
        run = train_site(site=site, data_spec=f"bundled:{site}", base_name="tabular-mlp", out=work / "plugins" / site,
                         budget=DEMO_BUDGET, ledger_root=work / "ledgers", target_epsilon=ctx["epsilon"], ffa=True, seed=0,
                         canary_grant=grant, grant_key=keys[site].decryption, roster=ctx["_roster"],
                         auditor=keys["auditor"].public, signer=keys[site].signing)
        plugin, td = run.plugin, run.training
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
            "canaries_inserted": run.canaries["count"], "canaries_issued": record["count"],
            "replay_envelope": _shown(ctx, run.envelope),
        })
    ctx["sites"] = results
    ctx["base"] = {"name": base.name, "digest": base.digest}


# --------------------------------------------------------------------------- 2. keys and roster


def stage_keys(ctx: dict) -> None:
    """Every party makes its keys; the admin signs a roster of the site keys; the key holder
    makes the CKKS context (public part for the sites and the aggregator, secret part kept)."""
    from ..crypto import add_site_key, init_roster, load_public_key, load_signing_key, new_keys, sign_roster
    from ..crypto.roster import Recipient
    from ..crypto._time import now as crypto_now
    from ..merge import he

    work: Path = ctx["work"]
    parties = ("consortium-admin", *DEMO_SITES, "maintainer", "auditor")
    keys = {who: new_keys(who, work / "keys" / who) for who in parties}
    now = crypto_now()
    roster = work / "roster.json"
    # recipients: the maintainer (submissions), the auditor (replay envelopes), each site (the auditor's canary grants)
    recipients = [Recipient.from_public(load_public_key(keys["maintainer"].public), "consortium"),
                  Recipient.from_public(load_public_key(keys["auditor"].public), "auditor"),
                  *(Recipient.from_public(load_public_key(keys[s].public), "site") for s in DEMO_SITES)]
    init_roster(roster, CONSORTIUM, [load_public_key(keys["consortium-admin"].public)], expires=now + ROSTER_DAYS * DAY,
                recipients=recipients)
    for site in (*DEMO_SITES, "auditor"):  # the auditor signs canary grants, so sites must find its key in the roster
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
    c.print("Stage 1: keys and the trust roster", style="bold")
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
            v = verify(bundle, roster, state_dir=state, root=roster)  # the maintainer was handed the roster out of band
            o = open_bundle(bundle, key, roster, target, replay=replay, state_dir=state, root=roster)
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
    from ..plugins.record import read_plugin
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
    a, b = read_plugin(merged).adapter.state, read_plugin(plain).adapter.state
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
    informed adversary) on a site plugin and on the merged model, run by the auditor: results into
    auditor/attacks/ (outside the evidence, which is the sites' to fill; the audit counts them
    because the auditor hands them over itself)."""
    work: Path = ctx["work"]
    evidence = work / "evidence"
    site_plugin = evidence / "plugins" / ATTACKED_SITE
    targets = {ATTACKED_SITE: (site_plugin, None), "fusion-ckks": (ctx["_merged"], site_plugin)}
    out_dir = work / "auditor" / "attacks"
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
    c.print(f"Stage 6: attacks on the {ATTACKED_SITE} plugin and on the merged model (candidates: {ATTACKED_SITE}'s records)", style="bold", soft_wrap=True)
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
    for env in sorted((work / "plugins").glob("*.replay.forge")):  # the envelopes travel with the plugins
        shutil.copy2(env, evidence / "plugins" / env.name)
    # on site: the auditor replays every training on the site's data and scores its own canaries
    report = audit_directory(evidence, None, out=report_dir, key=keys["auditor"].signing, decryption_key=keys["maintainer"].decryption,
                             replay_key=keys["auditor"].decryption, canary_records=ctx.get("_canary_records", ()),
                             attack_results=sorted((work / "auditor" / "attacks").glob("*.json")))
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
    c.print(f"Stage 7: the compliance audit (default policy) of the evidence in {a.get('evidence', 'evidence/')}", style="bold", soft_wrap=True, highlight=False)
    if a.get("skipped"):
        c.print(f"  SKIPPED ({a['reason']})", highlight=False, soft_wrap=True)
        return
    c.print("  checks: " + ", ".join(f"{name} {st.upper()}" for name, st in a["checks"].items()), highlight=False, soft_wrap=True)
    for label, items in (("FAIL", a["failures"]), ("WARN", a["warnings"])):
        for f in items:
            c.print(f"  {label} {f['check']}: {f['subject']}: {f['summary']}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- 8. hub


def stage_hub(ctx: dict) -> None:
    """The asynchronous cycle through the consortium hub, embedded on loopback: every site pushes
    its sealed bundles (verified before storing, logged, receipts), the maintainer pulls them and
    publishes the merged version with the audit report, and every site fetches it through TUF and
    checks its receipts' inclusion and the log's consistency."""
    from ..hub.demo import run_hub_cycle

    work: Path = ctx["work"]
    # per site in sequence order: the plugin bundle, then the CKKS contribution
    bundles = {s: [work / "evidence" / "bundles" / f"{s}.forge", work / "maintainer" / "inbox" / f"{s}-ckks.forge"] for s in DEMO_SITES}
    report = work / "report" / "report.html"
    summary = run_hub_cycle(work / "hub", ctx["_roster"], bundles, ctx["_keys"]["consortium-admin"].signing, ctx["_merged"],
                            audit=report if report.exists() else None)
    ctx["hub"] = {"pushed": len(summary["pushed"]), "pulled": summary["pulled"], "version": summary["version"],
                  "log_size": summary["log_size"], "fetched": [f["site"] for f in summary["fetched"]],
                  "receipts_checked": sum(len(f["receipts_in_log"]) for f in summary["fetched"]), "dir": _shown(ctx, work / "hub")}


def _print_hub(ctx: dict) -> None:
    h = ctx["hub"]
    c = _common.console
    c.print("Stage 8: the consortium hub (embedded on loopback)", style="bold")
    c.print(f"  the sites pushed {h['pushed']} sealed bundles (each verified against the roster before it was stored, then logged); "
            f"the maintainer pulled {h['pulled']} and published version {h['version']} with the audit report", highlight=False, soft_wrap=True)
    c.print(f"  {', '.join(h['fetched'])} fetched version {h['version']} through TUF and checked {h['receipts_checked']} receipts "
            f"against the transparency log ({h['log_size']} entries, consistent): {h['dir']}", highlight=False, soft_wrap=True)


STAGES: list[tuple[str, Callable[[dict], None]]] = [
    ("keys", stage_keys), ("sites", stage_sites), ("seal", stage_seal), ("open", stage_open), ("merge", stage_merge),
    ("attacks", stage_attacks), ("audit", stage_audit), ("hub", stage_hub),
]


def _print_sites(ctx: dict) -> None:
    from rich.table import Table

    t = Table(title=f"Stage 2: three hospitals train DP plugins (FFA-LoRA, target epsilon {ctx['epsilon']:g}) on their data "
                    "and the auditor's canaries; each seals its run's secret and recipe to the auditor")
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
    "attacks": _print_attacks, "audit": _print_audit, "hub": _print_hub,
}
