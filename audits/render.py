"""Renderers of a :class:`~audits.report.Report`: JSON (machines), one self-contained HTML
file (people; jinja2 template shipped as package data, plots inline as base64 PNG) and PDF
(archive; fpdf2, pure Python, no browser or system library)."""

from __future__ import annotations

import json

import jinja2

from .findings import Plot, Status
from .plots import plot_data_uri, plot_png
from .report import Report


def render_json(report: Report) -> bytes:
    return report.to_json_bytes()


def _evidence_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        text = json.dumps(v, sort_keys=True)
        return text if len(text) <= 400 else text[:400] + " ..."
    return str(v)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("audits", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["evidence_value"] = _evidence_value
    return env


def render_html(report: Report) -> bytes:
    """One HTML file with everything inline: verdict banner first, a summary, what to do about
    each failure, every check with its findings, evidence and plots, and the evidence inventory."""
    data = report.to_dict()
    for check, result in zip(data["checks"], report.checks, strict=True):
        for fd, finding in zip(check["findings"], result.findings, strict=True):
            fd["images"] = [{"title": p.title, "uri": plot_data_uri(p)} for p in finding.plots]
    failures = [f.to_dict() for f in report.actions()]
    html = _environment().get_template("report.html.j2").render(r=data, failures=failures, banner=banner(report))
    return html.encode("utf-8")


def banner(report: Report) -> dict:
    """The verdict banner every rendering shows first: ``{"cls", "title", "detail"}``. A PASS
    with inconclusive checks gets its own class (colour) and says so in the title."""
    detail = report.verdict_detail()
    c = report.counts()
    counts = f"{c['fail']} failed, {c['inconclusive']} inconclusive, {c['warn']} warnings, {c['pass']} passed, {c['skip']} skipped findings"
    if report.verdict is Status.FAIL:
        return {"cls": "fail", "title": "AUDIT FAILED", "detail": f"{detail['headline']}. {counts}"}
    if detail["inconclusive_checks"]:
        return {
            "cls": "pass-inconclusive",
            "title": f"AUDIT PASSED - {len(detail['inconclusive_checks'])} CHECK(S) INCONCLUSIVE",
            "detail": f"{detail['headline']}. {counts}",
        }
    return {"cls": "pass", "title": "AUDIT PASSED", "detail": counts}


# --------------------------------------------------------------------------- PDF

_COLORS = {
    "pass": (27, 127, 58),
    "fail": (198, 40, 40),
    "warn": (178, 106, 0),
    "skip": (117, 117, 117),
    "inconclusive": (94, 53, 177),
    "pass-inconclusive": (94, 53, 177),
}
_BASIS_COLORS = {"verified": (27, 127, 58), "re-derived": (21, 101, 192), "claimed": (178, 106, 0)}


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1; replace what they cannot draw."""
    table = {
        "\u2264": "<=",
        "\u2265": ">=",
        "\u2014": "-",
        "\u2013": "-",
        "\u00b7": "-",
        "\u03b5": "eps",
        "\u03b4": "delta",
        "\u2019": "'",
        "\u2026": "...",
    }
    return "".join(table.get(ch, ch) for ch in text).encode("latin-1", "replace").decode("latin-1")


def render_pdf(report: Report) -> bytes:
    """PDF for the archive (fpdf2): the verdict first, then each check's findings with their
    evidence, remedies and plots (as PNG). Deterministic for the same report."""
    from fpdf import FPDF

    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_creation_date(_parse_created(report.created_at))
    pdf.set_title(f"forge-secure audit: {report.verdict.value.upper()}")
    pdf.set_subject(f"verdict={report.verdict.value}; policy={report.policy.get('name', '')}; report={report.report_id}")
    pdf.set_author(report.auditor or "forge-secure")
    pdf.set_creator(f"forge-secure {report.toolkit_version}")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    verdict = report.verdict.value
    b = banner(report)
    pdf.set_fill_color(*_COLORS[b["cls"]])
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("Helvetica", "B", 22 if b["cls"] != "pass-inconclusive" else 15)
    pdf.cell(width, 16, _latin1(b["title"]), border=0, fill=True, new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("Helvetica", "", 10)
    pdf.multi_cell(width, 6, _latin1(f"Verdict: {verdict.upper()} - {b['detail']}"), fill=True, new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_text_color(0, 0, 0)
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 9)
    for line in (
        f"Policy: {report.policy.get('name', '')} (sha256 {report.policy.get('sha256', '')[:16]}...)",
        f"Created: {report.created_at}   Toolkit: forge-secure {report.toolkit_version}",
        f"Report id: {report.report_id}",
        f"Evidence: {report.evidence_root} ({len(report.inventory)} files)",
    ):
        pdf.multi_cell(width, 5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(width, 8, "Summary", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for check in report.checks:
        _badge(pdf, check.status.value)
        pdf.cell(width - 18, 6, _latin1(f"{check.title} ({check.name}), {len(check.findings)} findings"), new_x="LMARGIN", new_y="NEXT")

    _claims_pdf(pdf, report, width)

    actions = report.actions()
    if actions:
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(width, 8, "What to do", new_x="LMARGIN", new_y="NEXT")
        for f in actions:
            pdf.set_font("Helvetica", "B", 9)
            pdf.multi_cell(
                width, 5, _latin1(f"[{f.status.value.upper()}] {f.check} - {f.subject}: {f.summary}"), new_x="LMARGIN", new_y="NEXT"
            )
            pdf.set_font("Helvetica", "", 9)
            pdf.multi_cell(width, 5, _latin1(f"    {f.remedy}"), new_x="LMARGIN", new_y="NEXT")

    for check in report.checks:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 13)
        _badge(pdf, check.status.value)
        pdf.multi_cell(width - 18, 7, _latin1(check.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 9)
        pdf.multi_cell(width, 5, _latin1(check.description), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Courier", "", 7)
        pdf.multi_cell(width, 4, _latin1("settings: " + json.dumps(dict(check.settings), sort_keys=True)), new_x="LMARGIN", new_y="NEXT")
        for f in check.findings:
            pdf.ln(2)
            pdf.set_font("Helvetica", "B", 9)
            _badge(pdf, f.status.value)
            pdf.multi_cell(width - 18, 5, _latin1(f"{f.subject}: {f.summary}"), new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Courier", "", 7)
            for k, v in f.evidence.items():
                pdf.multi_cell(width, 3.6, _latin1(f"  {k}: {_evidence_value(v)}"), new_x="LMARGIN", new_y="NEXT")
            if f.plugin or f.claim or f.basis:
                pdf.set_font("Helvetica", "I", 8)
                pdf.multi_cell(
                    width,
                    4,
                    _latin1(f"  plugin {f.plugin or '-'} | claim {f.claim or '-'} | basis {f.basis or '-'}"),
                    new_x="LMARGIN",
                    new_y="NEXT",
                )
                pdf.set_font("Courier", "", 7)
            if f.remedy and f.status.needs_remedy:
                pdf.set_font("Helvetica", "I", 9)
                pdf.multi_cell(width, 5, _latin1(f"What to do: {f.remedy}"), new_x="LMARGIN", new_y="NEXT")
            for p in f.plots:
                _image(pdf, p, width)
    out = pdf.output()
    return bytes(out)


def _claims_pdf(pdf, report: Report, width: float) -> None:
    """The per-plugin table: each claim, its status, its basis and the checks that judged it."""
    rows = report.claims()
    if not rows:
        return
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(width, 8, "Per plugin: verified or claimed", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(
        width,
        4,
        _latin1(
            "verified: from signed or auditor-produced data, or by replay; re-derived: recomputed from the "
            "site's own records; claimed: the site's word."
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    plugin = None
    for row in rows:
        if row["plugin"] != plugin:
            plugin = row["plugin"]
            pdf.set_font("Helvetica", "B", 9)
            pdf.cell(width, 6, _latin1(plugin), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(62, 5, _latin1(row["title"]))
        _badge(pdf, row["status"] or "skip", label=(row["status"] or "n/a"))
        _badge(pdf, row["basis"], label=row["basis"], colors=_BASIS_COLORS, w=20)
        pdf.set_font("Helvetica", "", 8)
        text = " - ".join(t for t in (", ".join(row["checks"]), row["note"]) if t)
        pdf.multi_cell(pdf.w - pdf.r_margin - pdf.get_x(), 5, _latin1(text or "-"), new_x="LMARGIN", new_y="NEXT")


def _badge(pdf, status: str, *, label: str | None = None, colors: dict | None = None, w: float = 16) -> None:
    pdf.set_fill_color(*(colors or _COLORS)[status])
    pdf.set_text_color(255, 255, 255)
    style = pdf.font_style
    size = pdf.font_size_pt
    pdf.set_font("Helvetica", "B", 8 if len(label or status) <= 8 else 6)
    w = max(w, pdf.get_string_width((label or status).upper()) + 2)
    pdf.cell(w, 5, (label or status).upper(), fill=True, align="C")
    pdf.cell(2, 5, "")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", style, size)


def _image(pdf, plot: Plot, width: float) -> None:
    import io

    png = plot_png(plot)
    w = min(width, 130.0)
    h = w * 3.4 / 5.0
    if pdf.get_y() + h > pdf.h - pdf.b_margin:
        pdf.add_page()
    pdf.image(io.BytesIO(png), w=w, h=h)


def _parse_created(text: str):
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


__all__ = ["banner", "render_html", "render_json", "render_pdf"]
