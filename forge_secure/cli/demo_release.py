"""`forge demo`, stages 6 to 8: the auditor's attacks on a site plugin and on the merged model, the
audit and its signed report, and the release of the merged version through a consortium hub (the
stages 1 to 5 and the shared settings are in :mod:`.demo_stages`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..errors import ForgeError
from ..fileio import atomic_write_json
from . import _common
from .demo_stages import ATTACKED_SITE, DEMO_SITES, _shown

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
                "results": _shown(ctx, path),
                "attack": res["attack"],
                "references": res["references"].get("count"),
                "members": m["members"],
                "non_members": m["non_members"],
                "auc": m["auc"]["value"],
                "auc_ci": m["auc"]["ci"],
                "tpr_at_fpr": [{"fpr": r["target_fpr"], "tpr": r["tpr"]} for r in m["tpr_at_fpr"]],
                "epsilon_lb": e_["epsilon_lb"],
                "claimed_epsilon": e_["claimed"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
    try:
        from attacks.reconstruction.run import RECONSTRUCTION_ATTACKS as RECON
        from attacks.reconstruction.run import ReconSettings, target_record
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
                recon_settings = ReconSettings(trials=ctx["recon_trials"], seed=0, candidates=10, mode="gradients")
                plugin = load_plugin(target)
                res = RECON.get("informed")(plugin, data, prior, recon_settings, recipe=recipe)
                res["target"] = target_record(plugin)
                res["data"] = {"name": data.name, "rows": len(data), "kind": data.kind, "prior": prior.name, "prior_rows": len(prior)}
                path = out_dir / f"reconstruction-informed-{name}.json"
                atomic_write_json(path, _common._jsonable(res))
            except ForgeError as e:
                report["reconstruction"][name] = _skip(ctx, f"reconstruction attack on {name}", e)
                continue
            h = res["headline"]
            report["reconstruction"][name] = {
                "results": _shown(ctx, path),
                "attack": "informed adversary",
                "trials": ctx["recon_trials"],
                "rate": h["rate"],
                "ci": h["ci"],
                "baseline": h["baseline"],
                "rero_bound": h["bound"],
                "mode": res.get("mode"),
                "recipe_site": (res.get("recipe") or {}).get("site"),
                "seconds": round(time.perf_counter() - t0, 1),
            }
    ctx["attacks"] = report


def _print_attacks(ctx: dict) -> None:
    c = _common.console
    a = ctx["attacks"]
    c.print(
        f"Stage 6: attacks on the {ATTACKED_SITE} plugin and on the merged model (candidates: {ATTACKED_SITE}'s records)",
        style="bold",
        soft_wrap=True,
    )
    for name, r in a["membership"].items():
        if r.get("skipped"):
            c.print(f"  membership on {name}: SKIPPED ({r['reason']})", highlight=False, soft_wrap=True)
            continue
        tpr = ", ".join(f"TPR {100 * t['tpr']:.1f}% at {100 * t['fpr']:g}% FPR" for t in r["tpr_at_fpr"])
        c.print(
            f"  membership (RMIA, {r['references']} reference models) on {name}: AUC {r['auc']:.3f} "
            f"(95% CI {r['auc_ci'][0]:.3f}-{r['auc_ci'][1]:.3f}; 0.5 = guessing), {tpr}; empirical epsilon >= "
            f"{r['epsilon_lb']:.2f} vs claimed {float(r['claimed_epsilon']):.2f}",
            highlight=False,
            soft_wrap=True,
        )
    for name, r in a["reconstruction"].items():
        if r.get("skipped"):
            c.print(f"  reconstruction on {name}: SKIPPED ({r['reason']})", highlight=False, soft_wrap=True)
            continue
        how = {"gradients": "sees every noisy gradient", "model": "sees the released weights"}.get(r.get("mode"), r.get("mode") or "")
        if r.get("recipe_site"):
            how += f", replays {r['recipe_site']}'s training inside the merge"
        c.print(
            f"  reconstruction (informed adversary{', ' + how if how else ''}; {r['trials']} games) on {name}: picked the right record "
            f"{100 * r['rate']:.0f}% of the time (95% CI {100 * r['ci'][0]:.0f}-{100 * r['ci'][1]:.0f}%), guessing "
            f"{100 * r['baseline']:.0f}%, DP bound {100 * r['rero_bound']:.0f}%",
            highlight=False,
            soft_wrap=True,
        )


# --------------------------------------------------------------------------- 7. audit


def stage_audit(ctx: dict) -> None:
    """Lay out the evidence (audits/README.md) and run the audit with the default policy."""
    work: Path = ctx["work"]
    evidence = work / "evidence"
    shutil.copy2(ctx["_roster"], evidence / "roster.json")
    if (work / "ledgers").is_dir():
        shutil.copytree(work / "ledgers", evidence / "ledgers", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock"))
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
    report = audit_directory(
        evidence,
        None,
        out=report_dir,
        key=keys["auditor"].signing,
        decryption_key=keys["maintainer"].decryption,
        replay_key=keys["auditor"].decryption,
        canary_records=ctx.get("_canary_records", ()),
        attack_results=sorted((work / "auditor" / "attacks").glob("*.json")),
    )
    checks = {c.name: c.status.value for c in report.checks}
    warnings = [
        {"check": f.check, "subject": f.subject, "summary": f.summary}
        for c in report.checks
        for f in c.findings
        if f.status.value == "warn"
    ]
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
    c.print(
        f"Stage 7: the compliance audit (default policy) of the evidence in {a.get('evidence', 'evidence/')}",
        style="bold",
        soft_wrap=True,
        highlight=False,
    )
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
    bundles: dict[str, list[str | Path]] = {
        s: [work / "evidence" / "bundles" / f"{s}.forge", work / "maintainer" / "inbox" / f"{s}-ckks.forge"] for s in DEMO_SITES
    }
    report = work / "report" / "report.html"
    summary = run_hub_cycle(
        work / "hub",
        ctx["_roster"],
        bundles,
        ctx["_keys"]["consortium-admin"].signing,
        ctx["_merged"],
        audit=report if report.exists() else None,
    )
    ctx["hub"] = {
        "pushed": len(summary["pushed"]),
        "pulled": summary["pulled"],
        "version": summary["version"],
        "log_size": summary["log_size"],
        "fetched": [f["site"] for f in summary["fetched"]],
        "receipts_checked": sum(len(f["receipts_in_log"]) for f in summary["fetched"]),
        "dir": _shown(ctx, work / "hub"),
    }


def _print_hub(ctx: dict) -> None:
    h = ctx["hub"]
    c = _common.console
    c.print("Stage 8: the consortium hub (embedded on loopback)", style="bold")
    c.print(
        f"  the sites pushed {h['pushed']} sealed bundles (each verified against the roster before it was stored, then logged); "
        f"the maintainer pulled {h['pulled']} and published version {h['version']} with the audit report",
        highlight=False,
        soft_wrap=True,
    )
    c.print(
        f"  {', '.join(h['fetched'])} fetched version {h['version']} through TUF and checked {h['receipts_checked']} receipts "
        f"against the transparency log ({h['log_size']} entries, consistent): {h['dir']}",
        highlight=False,
        soft_wrap=True,
    )
