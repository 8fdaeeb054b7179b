"""The report object, its JSON schema, the HTML (in a real headless Chromium) and PDF
renderings, report signing, and the runner's guarantees (inputs unchanged, atomic output)."""

from __future__ import annotations

import dataclasses
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
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _policy(tmp: Path) -> Path:
    from audits import default_policy_text

    p = tmp / "policy.toml"
    text = default_policy_text()
    # the synthetic plugins have no randomness commitment, replay envelope or auditor canaries: the
    # on-site checks are tested where plugins are trained (tests/forge_secure/privacy/test_replay.py, the demo)
    for name in ("reconstruction", "dp-randomness", "replay", "auditor-canaries"):
        text = text.replace(f"[checks.{name}]", f"[checks.{name}]\nenabled = false", 1)
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two signed reports: a compliant consortium (PASS) and one whose site-2 plugin was trained
    without noise but claims epsilon 1 (FAIL); plus their evidence snapshots. The auditor ran the
    membership attacks itself (2000 coin-flip records each) and binds the weights with the
    consortium's decryption key, as the default policy requires."""
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
                    kw["dp"] = {
                        "enabled": True,
                        "noise_multiplier": 1.1,
                        "sample_rate": 0.08,
                        "steps": 65,
                        "max_grad_norm": 1.0,
                        "accountant": "prv",
                        "epsilon": 1.0,
                        "delta": 1e-5,
                    }
                p = w.add_plugin(f"{site}-plugin", site, seed=i, **kw)
                digests.append((sha256_file(p / "adapter_model.safetensors"), site))
                sep = 4.0 if (liar and site == "site-2") else 0.0
                w.add_auditor_attack(f"mia-{site}", membership_results(f"plugins/{site}-plugin", separation=sep, seed=i, n=2000))
            w.add_merged("v1", digests)
            before = snapshot(w.evidence)
            report = audit_directory(
                w.evidence,
                _policy(root / name),
                out=root / name / "report",
                key=w.keys["auditor"] / "signing.key",
                decryption_key=w.decryption_key,
                attack_results=w.auditor_attacks,
            )
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
    assert ("consistency", f"auditor:{reports['fail']['world'].auditor_attacks[1]}") in failed
    assert ("dp-claims", "plugins/site-2-plugin") in failed
    for r in reports.values():
        assert snapshot(r["world"].evidence) == r["before"]  # byte-identical evidence
        assert sorted(p.name for p in r["dir"].iterdir()) == ["report.html", "report.json", "report.pdf", "report.sig.json"]
        assert not [p for p in r["dir"].parent.iterdir() if p.name.endswith(".part")]


def test_report_is_frozen_and_json_round_trips_and_validates(reports):
    report = reports["fail"]["report"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.report_id = "x"  # type: ignore[misc]
    data = json.loads((reports["fail"]["dir"] / "report.json").read_text())
    jsonschema.Draft202012Validator(report_schema()).validate(data)
    assert data["verdict"] == "fail" and data["schema_version"].startswith("2.") and data["format"] == "forge-audit-report/2"
    assert data["counts"]["inconclusive"] == 0 and data["verdict_detail"]["inconclusive_checks"] == []
    assert {r["claim"] for r in data["claims"]} >= {"dp-parameters", "epsilon", "weights-binding", "membership-leakage"}
    again = Report.from_dict(data)
    assert again.to_json_bytes() == (reports["fail"]["dir"] / "report.json").read_bytes()
    auditor = {f"auditor:{p}" for p in reports["fail"]["world"].auditor_attacks}
    assert data["evidence"]["inventory"] == {**reports["fail"]["before"], **{k: data["evidence"]["inventory"][k] for k in auditor}}


@pytest.mark.parametrize(
    "edit, code",
    [
        (lambda d: d.update(verdict="maybe"), "report.schema"),
        (lambda d: d.pop("checks"), "report.schema"),
        (lambda d: d["checks"][0]["findings"][0].update(status="fine"), "report.schema"),
        (lambda d: d.update(verdict="pass"), "report.inconsistent"),
        (lambda d: d.update(extra=1), "report.schema"),
        (lambda d: d["claims"][0].update(basis="verified"), "report.inconsistent"),
        (lambda d: d["claims"][0].update(basis="trusted"), "report.schema"),
        (lambda d: d["checks"][0]["findings"][0].update(basis="sworn"), "report.schema"),
        (lambda d: d["verdict_detail"].update(inconclusive_fails=True), "report.inconsistent"),
        (lambda d: d.update(format="forge-audit-report/9"), "report.schema"),
        (lambda d: d.update(schema_version="1.0.0"), "report.schema"),
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
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args], capture_output=True, text=True, timeout=timeout
    )


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
        close = sum(1 for p in band if all(abs(a - b) <= 12 for a, b in zip(p, rgb, strict=True)))
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


# ----------------------------------------------------------------------------- format /1, INCONCLUSIVE, claims


def test_a_version_1_report_is_still_read():
    """A report.json written by the previous format (forge-audit-report/1, schema 1.0.0) validates
    against its own schema and reads back; re-rendering it writes the current format."""
    from audits.report import REPORT_FORMAT, validate_report_dict

    data = json.loads((Path(__file__).parent / "data" / "report-v1.json").read_text())
    assert data["format"] == "forge-audit-report/1" and data["schema_version"] == "1.0.0"
    report = Report.from_dict(data)
    assert report.verdict.value == data["verdict"] == "fail"
    assert report.counts()["inconclusive"] == 0 and report.inconclusive_fails is False
    again = json.loads(report.to_json_bytes())
    validate_report_dict(again)
    assert again["format"] == REPORT_FORMAT and again["checks"][0]["findings"][0]["basis"] == ""
    data["verdict"] = "pass"
    with pytest.raises(ForgeDataError) as e:
        Report.from_dict(data)
    assert e.value.code == "report.inconsistent"
    data["verdict"] = "fail"
    data["counts"]["inconclusive"] = 0  # a /2 field in a /1 report
    with pytest.raises(ForgeDataError) as e:
        Report.from_dict(data)
    assert e.value.code == "report.schema"


@pytest.fixture(scope="module")
def inconclusive_reports(tmp_path_factory):
    """One plugin claiming epsilon 4, attacked by the auditor on only 400 records (the most a
    perfect attack could show there is ~3.1): the consistency check is INCONCLUSIVE. Rendered
    under a policy that lets INCONCLUSIVE pass, and one that counts it as a failure."""
    old = os.environ.get("FORGE_HOME")
    root = tmp_path_factory.mktemp("inconclusive")
    os.environ["FORGE_HOME"] = str(root / "home")
    try:
        w = build_world(root / "world")
        w.add_plugin("p", "site-1")
        w.add_auditor_attack("mia-p", membership_results("plugins/p", separation=0.0, n=400))
        out = {"world": w}
        for fails in (False, True):
            policy = root / f"policy-{fails}.toml"
            policy.write_text(
                f'format = "forge-audit-policy/1"\nname = "inc"\n[verdict]\ninconclusive_fails = {str(fails).lower()}\n'
                "[checks.delta]\n[checks.consistency]\n"
            )
            d = root / f"report-{fails}"
            out[fails] = (audit_directory(w.evidence, policy, out=d, attack_results=w.auditor_attacks), d)
        yield out
    finally:
        if old is None:
            os.environ.pop("FORGE_HOME", None)
        else:
            os.environ["FORGE_HOME"] = old


def test_inconclusive_passes_or_fails_as_the_policy_says_and_every_rendering_says_so(inconclusive_reports):
    passed, d = inconclusive_reports[False]
    assert passed.verdict is Status.PASS and passed.inconclusive_checks() == ["consistency"]
    data = json.loads((d / "report.json").read_text())
    assert data["verdict"] == "pass" and data["counts"]["inconclusive"] == 1
    assert data["verdict_detail"]["inconclusive_checks"] == ["consistency"] and "INCONCLUSIVE" in data["verdict_detail"]["headline"]
    html = (d / "report.html").read_text()
    assert 'class="pass-inconclusive"' in html and "1 CHECK(S) INCONCLUSIVE" in html
    assert 'class="badge inconclusive"' in html
    pypdf = pytest.importorskip("pypdf", reason="pypdf reads the PDF back (test dependency)")
    first = pypdf.PdfReader(str(d / "report.pdf")).pages[0].extract_text()
    assert "AUDIT PASSED" in first and "INCONCLUSIVE" in first
    failed, d2 = inconclusive_reports[True]
    assert failed.verdict is Status.FAIL and not failed.failures()  # no FAIL finding: the policy counts INCONCLUSIVE
    data2 = json.loads((d2 / "report.json").read_text())
    assert data2["verdict"] == "fail" and data2["verdict_detail"]["inconclusive_fails"] is True
    assert Report.from_dict(data2).verdict is Status.FAIL
    assert "AUDIT FAILED" in pypdf.PdfReader(str(d2 / "report.pdf")).pages[0].extract_text()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_inconclusive_pass_banner_is_visibly_distinct_in_chromium(inconclusive_reports, tmp_path):
    from PIL import Image

    _, d = inconclusive_reports[False]
    page = (d / "report.html").resolve().as_uri()
    shot = tmp_path / "inc.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1200,700", "--hide-scrollbars", page], tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    band = [img.getpixel((x, y)) for x in range(0, img.size[0], 7) for y in range(0, 90, 5)]
    purple = sum(1 for p in band if p[2] > 140 and p[0] < 120 and p[1] < 80)  # the stripes of #5e35b1 / #4527a0
    green = sum(1 for p in band if all(abs(a - b) <= 12 for a, b in zip(p, (27, 127, 58), strict=True)))
    assert purple > 0.3 * len(band) and green == 0


def _f(check, status, subject, **kw):
    from audits import Finding

    remedy = "do something" if status in ("fail", "warn", "inconclusive") else ""
    return Finding(check, Status(status), subject, f"{check} on {subject}", kw.pop("evidence", {}), remedy, **kw)


def test_claims_table_says_verified_by_replay_or_claimed_only():
    from audits import CheckResult
    from audits.claims import claims_table

    checks = [
        CheckResult(
            "provenance",
            "t",
            "d",
            {},
            (
                _f("provenance", "pass", "bundles/a.forge"),
                _f("provenance", "pass", "plugins/a", plugin="plugins/a", claim="weights-binding", basis="verified"),
                _f("provenance", "warn", "plugins/b", plugin="plugins/b", claim="weights-binding", basis="claimed"),
            ),
        ),
        CheckResult(
            "dp-claims",
            "t",
            "d",
            {},
            tuple(
                _f("dp-claims", "pass", p, plugin=p, claim=c, basis="re-derived")
                for p in ("plugins/a", "plugins/b", "plugins/c")
                for c in ("dp-parameters", "epsilon")
            ),
        ),
        CheckResult(
            "replay",
            "t",
            "d",
            {},
            (  # the replay check's findings name no claim: it judges the whole recipe
                _f("replay", "pass", "plugins/a", evidence={"basis": "verified"}),
                _f("replay", "fail", "plugins/c", evidence={"basis": "claimed"}),
            ),
        ),
        CheckResult(
            "membership",
            "t",
            "d",
            {},
            (_f("membership", "skip", "attacks/site.json", plugin="plugins/b", claim="membership-leakage", basis="claimed"),),
        ),
        CheckResult(
            "auditor-canaries", "t", "d", {}, (_f("auditor-canaries", "inconclusive", "plugins/b", evidence={"basis": "verified"}),)
        ),
    ]
    rows = {(r["plugin"], r["claim"]): r for r in claims_table(checks)}
    assert {p for p, _ in rows} == {"plugins/a", "plugins/b", "plugins/c"}  # a bundle is not a plugin
    a = {c: rows[("plugins/a", c)] for c in ("dp-parameters", "epsilon", "data-commitment", "weights-binding", "membership-leakage")}
    assert a["dp-parameters"]["basis"] == "verified" and a["dp-parameters"]["note"] == "verified by replay"
    assert "replay" in a["dp-parameters"]["checks"] and a["data-commitment"]["basis"] == "verified"
    assert a["epsilon"]["basis"] == "verified" and a["weights-binding"]["basis"] == "verified"
    assert a["membership-leakage"]["status"] == "" and a["membership-leakage"]["basis"] == "claimed"
    b = {c: rows[("plugins/b", c)] for c in ("dp-parameters", "epsilon", "data-commitment", "membership-leakage")}
    assert b["dp-parameters"]["basis"] == "claimed" and b["dp-parameters"]["note"] == "claimed only (no replay)"
    assert b["epsilon"]["status"] == "inconclusive" and b["epsilon"]["basis"] == "verified"  # the auditor's canaries could not tell
    assert b["data-commitment"]["basis"] == "claimed" and b["membership-leakage"]["status"] == "skip"
    c = rows[("plugins/c", "dp-parameters")]
    assert c["status"] == "fail" and c["basis"] == "claimed" and c["note"].startswith("not verified by replay")
