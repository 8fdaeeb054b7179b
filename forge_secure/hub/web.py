"""What the hub shows: submission metadata, each site's consortium ledger, releases with their
lineage, the latest checkpoint; and the read-only web page (Jinja2, autoescaped, with one
matplotlib SVG budget plot per site)."""

from __future__ import annotations

import io
import json
import math

import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape

from . import db, ledger
from . import log as logmod

_ENV = Environment(loader=PackageLoader("forge_secure.hub", "templates"), autoescape=select_autoescape(["html", "j2"]))


def submissions(hub, site: str | None = None) -> list[dict]:
    q = sa.select(db.submissions).order_by(db.submissions.c.log_index)
    if site:
        q = q.where(db.submissions.c.site == site)
    with db.read(hub.engine) as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        dp = json.loads(r["dp"])
        out.append(
            {
                "submission_id": r["submission_id"],
                "site": r["site"],
                "sequence": r["sequence"],
                "bundle_sha256": r["bundle_sha256"],
                "size": r["size"],
                "signer": r["signer"],
                "created": r["created"],
                "accepted": r["accepted"],
                "log_index": r["log_index"],
                "epsilon": _short(dp.get("epsilon")),
                "accountant": dp.get("accountant"),
                "delta": dp.get("delta"),
            }
        )
    return out


def _short(value) -> str | None:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return value


def ledgers(hub) -> list[dict]:
    """Per site: its budget and, after each accepted submission, the consortium spend."""
    with db.read(hub.engine) as conn:
        rows = conn.execute(
            sa.select(
                db.submissions.c.site,
                db.submissions.c.sequence,
                db.submissions.c.submission_id,
                db.submissions.c.dp,
                db.submissions.c.log_index,
            ).order_by(db.submissions.c.site, db.submissions.c.sequence)
        ).all()
        sites = sorted({r[0] for r in rows})
        budgets = {s: hub.budget(conn, s) for s in sites}
    out = []
    for site in sites:
        histories, points, runs = [], [], set()
        for s, seq, sub, dp, index in rows:
            if s != site:
                continue
            rec = json.loads(dp)
            if rec.get("run") is None or rec["run"] not in runs:  # a training run counts once (its CKKS contribution adds nothing)
                histories.append(ledger.history_of(rec))
                if rec.get("run") is not None:
                    runs.add(rec["run"])
            eps, acc = ledger.spent(histories, hub.config.ledger_delta)
            points.append(
                {"sequence": seq, "submission_id": sub, "log_index": index, "spent": None if math.isinf(eps) else eps, "accountant": acc}
            )
        out.append(
            {
                "site": site,
                "budget": budgets[site],
                "delta": hub.config.ledger_delta,
                "entries": points,
                "spent": points[-1]["spent"] if points else 0.0,
            }
        )
    return out


def releases(hub) -> list[dict]:
    with db.read(hub.engine) as conn:
        rows = conn.execute(sa.select(db.releases.c.statement, db.releases.c.log_index).order_by(db.releases.c.version)).all()
    return [{**json.loads(s), "log_index": index} for s, index in rows]


def audit_blob(hub, version: int) -> dict | None:
    for r in releases(hub):
        if r["version"] == version:
            return r.get("audit")
    return None


def budget_plot(entry: dict) -> str:
    """An SVG plot of a site's spend after each submission against its budget."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.2))
    ax = fig.add_subplot(1, 1, 1)
    xs = [p["sequence"] for p in entry["entries"]]
    ys = [p["spent"] if p["spent"] is not None else float("nan") for p in entry["entries"]]
    from matplotlib.ticker import MaxNLocator

    ax.plot(xs, ys, marker="o", label="spent")
    if entry["budget"] is not None:
        ax.axhline(entry["budget"], color="tab:red", linestyle="--", label=f"budget {entry['budget']:g}")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(set(xs)) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)
    ax.set_xlabel("submission sequence")
    ax.set_ylabel(f"epsilon (delta {entry['delta']:g})")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def render_page(hub) -> str:
    with db.read(hub.engine) as conn:
        cp = hub.log.checkpoint(conn)
        size = logmod.size(conn)
    subs = submissions(hub)
    by_site: dict[str, list] = {}
    for s in subs:
        by_site.setdefault(s["site"], []).append(s)
    ledger_rows = ledgers(hub)
    plots = {entry["site"]: budget_plot(entry) for entry in ledger_rows}
    roster = hub.roster()
    return _ENV.get_template("page.html.j2").render(
        origin=hub.origin,
        hub_key=hub.keys.verifier,
        checkpoint=cp.note,
        log_size=size,
        roster=roster,
        releases=releases(hub),
        by_site=by_site,
        ledgers=ledger_rows,
        plots=plots,
    )
