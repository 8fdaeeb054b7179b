"""The report object, its JSON schema, the HTML (in a real headless Chromium) and PDF
renderings, report signing, and the runner's guarantees (inputs unchanged, atomic output)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from audits import Report, Status, audit_directory, report_schema, snapshot, verify_report_dir
from audits.signing import ReportSignatureError, load_auditor_public_key
from forge_secure.errors import ForgeDataError, ForgeFileError

from .conftest import build_world, membership_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

def _policy(tmp: Path) -> Path:
    from audits import default_policy_text

    p = tmp / "policy.toml"
    p.write_text(default_policy_text().replace("[checks.reconstruction]", "[checks.reconstruction]\nenabled = false", 1))
    return p


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two signed reports: a compliant consortium (PASS) and one whose site-2 plugin was trained
    without noise but claims epsilon 1 (FAIL); plus their evidence snapshots."""
    old = os.environ.get("FORGE_HOME")
    root = tmp_path_factory.mktemp("reports")
    os.environ["FORGE_HOME"] = str(root / "home")
    try:
        out = {}
        for name, liar in (("pass", False), ("fail", True)):
            w = build_world(root / name)
            from forge_secure.fileio import sha256_file

            digests = []
            for i, site in enumerate(("site-1", "site-2", "site-3")):
                kw = {}
                if liar and site == "site-2":
                    kw["dp"] = {"enabled": True, "noise_multiplier": 1.1, "sample_rate": 0.08, "steps": 100,
                                "max_grad_norm": 1.0, "accountant": "prv", "epsilon": 1.0, "delta": 1e-4}
                p = w.add_plugin(f"{site}-plugin", site, seed=i, **kw)
                digests.append((sha256_file(p / "adapter_model.safetensors"), site))
                sep = 4.0 if (liar and site == "site-2") else 0.0
                w.add_attack(f"mia-{site}", membership_results(f"plugins/{site}-plugin", separation=sep, seed=i))
            w.add_merged("v1", digests)
            before = snapshot(w.evidence)
            report = audit_directory(w.evidence, _policy(root / name), out=root / name / "report", key=w.keys["auditor"] / "signing.key")
            out[name] = {"world": w, "report": report, "dir": root / name / "report", "before": before}
        yield out
    finally:
        if old is None:
            os.environ.pop("FORGE_HOME", None)
        else:
            os.environ["FORGE_HOME"] = old


def test_verdicts_and_inputs_unchanged(reports):
    assert reports["pass"]["report"].verdict is Status.PASS
    bad = reports["fail"]["report"]
    assert bad.verdict is Status.FAIL
    failed = {(f.check, f.subject) for f in bad.failures()}
    assert ("consistency", "attacks/mia-site-2.json") in failed
    assert ("dp-claims", "plugins/site-2-plugin") in failed
    for r in reports.values():
        assert snapshot(r["world"].evidence) == r["before"]  # byte-identical evidence
        assert sorted(p.name for p in r["dir"].iterdir()) == ["report.html", "report.json", "report.pdf", "report.sig.json"]
        assert not [p for p in r["dir"].parent.iterdir() if p.name.endswith(".part")]


def test_report_is_frozen_and_json_round_trips_and_validates(reports):
    report = reports["fail"]["report"]
    with pytest.raises(Exception):
        report.report_id = "x"  # type: ignore[misc]
    data = json.loads((reports["fail"]["dir"] / "report.json").read_text())
    jsonschema.Draft202012Validator(report_schema()).validate(data)
    assert data["verdict"] == "fail" and data["schema_version"].startswith("1.")
    again = Report.from_dict(data)
    assert again.to_json_bytes() == (reports["fail"]["dir"] / "report.json").read_bytes()
    assert data["evidence"]["inventory"] == reports["fail"]["before"]


@pytest.mark.parametrize(
    "edit, code",
    [
        (lambda d: d.update(verdict="maybe"), "report.schema"),
        (lambda d: d.pop("checks"), "report.schema"),
        (lambda d: d["checks"][0]["findings"][0].update(status="fine"), "report.schema"),
        (lambda d: d.update(verdict="pass"), "report.inconsistent"),
        (lambda d: d.update(extra=1), "report.schema"),
    ],
)
def test_schema_and_consistency_refuse_edited_reports(reports, edit, code):
    data = json.loads((reports["fail"]["dir"] / "report.json").read_text())
    edit(data)
    with pytest.raises(ForgeDataError) as e:
        Report.from_dict(data)
    assert e.value.code == code


def test_a_fail_finding_without_a_remedy_is_refused():
    from audits import Finding

    with pytest.raises(ValueError):
        Finding("x", Status.FAIL, "s", "bad")


def test_pdf_states_the_same_verdict(reports):
    pypdf = pytest.importorskip("pypdf", reason="pypdf reads the PDF back (test dependency)")
    for name, word in (("pass", "AUDIT PASSED"), ("fail", "AUDIT FAILED")):
        reader = pypdf.PdfReader(str(reports[name]["dir"] / "report.pdf"))
        first = reader.pages[0].extract_text()
        assert word in first
        assert f"Verdict: {name.upper()}" in first
        assert reader.metadata.subject.startswith(f"verdict={name}")
        text = "\n".join(p.extract_text() for p in reader.pages)
        assert "What to do" in text if name == "fail" else True
    fail_text = "\n".join(p.extract_text() for p in pypdf.PdfReader(str(reports["fail"]["dir"] / "report.pdf")).pages)
    assert "the DP claim is false" in fail_text


def test_html_is_self_contained(reports):
    html = (reports["fail"]["dir"] / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace("http-equiv", "")
    assert "https://" not in html
    assert html.count("data:image/png;base64,") >= 3  # ROC curves and epsilon bars inline
    assert html.index('id="verdict"') < html.index('id="summary"')  # pass/fail at the top
    assert "What to do" in html


def _chromium(args: list[str], tmp: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_html_renders_in_headless_chromium_with_the_verdict_visible(reports, tmp_path):
    from PIL import Image

    for name, word, rgb in (("fail", "AUDIT FAILED", (198, 40, 40)), ("pass", "AUDIT PASSED", (27, 127, 58))):
        page = (reports[name]["dir"] / "report.html").resolve().as_uri()
        dom = _chromium(["--dump-dom", page], tmp_path / name)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert f'data-verdict="{name}"' in dom.stdout and word in dom.stdout
        shot = tmp_path / f"{name}.png"
        res = _chromium([f"--screenshot={shot}", "--window-size=1200,700", "--hide-scrollbars", page], tmp_path / name)
        assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
        img = Image.open(shot).convert("RGB")
        w, h = img.size
        band = [img.getpixel((x, y)) for x in range(0, w, 7) for y in range(0, min(90, h), 5)]
        close = sum(1 for p in band if all(abs(a - b) <= 12 for a, b in zip(p, rgb)))
        assert close > 0.3 * len(band), (name, close, len(band))  # the banner's colour fills the top


def test_signed_report_verifies_and_any_changed_byte_fails(reports, tmp_path):
    w = reports["pass"]["world"]
    public = load_auditor_public_key(w.keys["auditor"] / "public.json")
    statement = verify_report_dir(reports["pass"]["dir"], public)
    assert statement["verdict"] == "pass"
    for name in ("report.json", "report.html", "report.pdf", "report.sig.json"):
        copy = tmp_path / name.replace(".", "-")
        shutil.copytree(reports["pass"]["dir"], copy)
        data = bytearray((copy / name).read_bytes())
        i = len(data) // 3
        data[i] = (data[i] + 1) % 256
        (copy / name).write_bytes(bytes(data))
        with pytest.raises(ReportSignatureError) as e:
            verify_report_dir(copy, public)
        assert e.value.code in ("report.tampered", "report.bad_signature", "report.signature_corrupt"), name
    # signed by the auditor, checked against another key: refused
    other = load_auditor_public_key(w.keys["site-1"] / "public.json")
    with pytest.raises(ReportSignatureError) as e:
        verify_report_dir(reports["pass"]["dir"], other)
    assert e.value.code == "report.bad_signature"
    # an unsigned report, a truncated signature
    unsigned = tmp_path / "unsigned"
    shutil.copytree(reports["pass"]["dir"], unsigned)
    sig = (unsigned / "report.sig.json").read_bytes()
    (unsigned / "report.sig.json").write_bytes(sig[: len(sig) // 2])
    with pytest.raises(ReportSignatureError) as e:
        verify_report_dir(unsigned, public)
    assert e.value.code == "report.signature_corrupt"
    (unsigned / "report.sig.json").unlink()
    with pytest.raises(ReportSignatureError) as e:
        verify_report_dir(unsigned, public)
    assert e.value.code == "report.unsigned"


def test_existing_out_directory_is_refused_before_any_work(reports):
    w = reports["pass"]["world"]
    with pytest.raises(ForgeFileError) as e:
        audit_directory(w.evidence, out=reports["pass"]["dir"])
    assert e.value.code == "file.exists"
