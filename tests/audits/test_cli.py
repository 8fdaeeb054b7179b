"""`forge audit` and `forge verify-report` as a user runs them.

Every `forge` subprocess pays the whole CLI's start-up (torch is imported by other areas'
parsers), so the fast tests run the real command twice and check the error matrix through
the same entry point in-process (``forge_secure.cli.main``); the slow test runs it all as
subprocesses."""

from __future__ import annotations

import json

import pytest

from forge_secure.cli import main as forge_main
from tests.conftest import CliResult, assert_clean_error

from .conftest import build_world, membership_results


class _Proc:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def forge_inproc(capsys):
    """Run ``forge`` through its entry point in this process: same parser, handlers, errors."""

    def run(*args) -> CliResult:
        capsys.readouterr()
        code = forge_main([str(a) for a in args])
        cap = capsys.readouterr()
        return CliResult(_Proc(code, cap.out, cap.err))

    return run


@pytest.fixture
def cli_world(tmp_path, forge_cli, monkeypatch):
    monkeypatch.setenv("FORGE_HOME", str(forge_cli.home))
    w = build_world(tmp_path)
    w.add_plugin("p1", "site-1", seed=1)
    w.add_attack("mia-p1", membership_results("plugins/p1", separation=0.0, seed=1))  # the site's own: not counted
    policy = tmp_path / "policy.toml"
    # these tests are about the command (exit codes, errors, signing): weights binding and the
    # auditor's own attack are exercised in the tests that need them
    policy.write_text(
        'format = "forge-audit-policy/1"\nname = "cli"\n[checks.provenance]\nrequire_weight_binding = false\n'
        '[checks.dp-claims]\n[checks.delta]\n[checks.consistency]\nmethod = "clopper-pearson"\nrequired = false\n'
    )
    return w, policy


def test_audit_and_verify_report_as_subprocesses(cli_world, forge_cli, tmp_path):
    """The real commands and exit codes. Checks that need a privacy accountant import Opacus and
    torch (half a minute per process on a loaded machine); they run in-process in the test
    below and as subprocesses in the slow one, so this policy leaves them out."""
    w, _ = cli_world
    policy = tmp_path / "no-accountant.toml"
    policy.write_text(
        'format = "forge-audit-policy/1"\nname = "cli-fast"\n[checks.provenance]\n[checks.delta]\n[checks.roster-freshness]\n'
    )
    binding = ("--decryption-key", w.keys["consortium"] / "decryption.key")
    out = tmp_path / "report"
    r = forge_cli("audit", "--policy", policy, "--evidence", w.evidence, "--out", out, "--key", w.keys["auditor"] / "signing.key", *binding)
    assert r.code == 0 and "AUDIT PASSED" in r.out and "Traceback" not in r.err, r
    data = bytearray((out / "report.pdf").read_bytes())
    data[len(data) // 2] ^= 0x20  # one changed byte
    (out / "report.pdf").write_bytes(bytes(data))
    bad = forge_cli("verify-report", out, "--key", w.keys["auditor"] / "public.json")
    assert bad.code == 1 and "report.tampered" in bad.err and "Traceback" not in bad.err, bad


@pytest.mark.slow
def test_audit_pass_then_fail_exit_codes_and_signed_report_subprocess(cli_world, forge_cli, tmp_path):
    _pass_then_fail(cli_world, forge_cli, tmp_path)


def test_audit_pass_then_fail_exit_codes_and_signed_report(cli_world, forge_inproc, tmp_path):
    _pass_then_fail(cli_world, forge_inproc, tmp_path)


def _pass_then_fail(cli_world, forge_cli, tmp_path):
    w, policy = cli_world
    out = tmp_path / "report"
    r = forge_cli("audit", "--policy", policy, "--evidence", w.evidence, "--out", out, "--key", w.keys["auditor"] / "signing.key", "--json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert doc["verdict"] == "pass" and doc["signed"] is True
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.pdf", "report.sig.json"]

    v = forge_cli("verify-report", out, "--key", w.keys["auditor"] / "public.json")
    assert v.code == 0 and "valid" in v.out, v

    data = bytearray((out / "report.json").read_bytes())
    data[data.index(b'"pass"')] = ord(" ")  # one changed byte
    (out / "report.json").write_bytes(bytes(data))
    bad = forge_cli("verify-report", out, "--key", w.keys["auditor"] / "public.json")
    assert bad.code == 1 and "report.tampered" in bad.err and "Traceback" not in bad.err, bad

    # the site edits its claim after the fact and re-seals nothing: the audit now fails
    meta_path = w.evidence / "plugins" / "p1" / "forge.json"
    meta = json.loads(meta_path.read_text())
    meta["dp"]["epsilon"] = 0.1
    meta_path.write_text(json.dumps(meta))
    r2 = forge_cli("audit", "--policy", policy, "--evidence", w.evidence, "--out", tmp_path / "report2")
    assert r2.code == 1, r2
    assert "AUDIT FAILED" in r2.out and "what to do" in r2.out
    assert (tmp_path / "report2" / "report.html").is_file() and not (tmp_path / "report2" / "report.sig.json").exists()


def test_audit_could_not_run_exits_2_cleanly_and_writes_nothing(cli_world, forge_inproc, tmp_path):
    forge_cli = forge_inproc
    w, policy = cli_world
    bad_policy = tmp_path / "bad.toml"
    bad_policy.write_text('format = "forge-audit-policy/1"\nname = "x"\n[checks.dp-claim]\n')
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"\x00\x01 not a key")
    cases = [
        (("--policy", bad_policy, "--evidence", w.evidence), ["dp-claim", "dp-claims"]),
        (("--policy", tmp_path / "missing.toml", "--evidence", w.evidence), ["does not exist"]),
        (("--policy", policy, "--evidence", tmp_path / "nowhere"), ["evidence", "does not exist"]),
        (("--policy", policy, "--evidence", w.evidence, "--key", w.keys["auditor"] / "public.json"), ["private key"]),
        (("--policy", policy, "--evidence", w.evidence, "--key", policy), ["not a forge key file"]),
        (("--policy", policy), ["--evidence"]),
        (("--policy", policy, "--evidence", policy), ["not a directory"]),
        (("--policy", w.keys["auditor"] / "signing.key", "--evidence", w.evidence), ["not valid TOML"]),
        (("--policy", policy, "--evidence", w.evidence, "--decryption-key", junk), ["not a forge key file"]),
        (
            ("--policy", policy, "--evidence", w.evidence, "--decryption-key", w.keys["site-1"] / "signing.key"),
            ["decryption key is needed"],
        ),
        (
            (
                "--policy",
                policy,
                "--evidence",
                w.evidence,
                "--key",
                w.keys["auditor"] / "signing.key",
                "--passphrase-file",
                tmp_path / "no-passphrase",
            ),
            ["passphrase file", "does not exist"],
        ),
        (
            ("--policy", policy, "--evidence", w.evidence, "--attack-results", tmp_path / "no-results.json"),
            ["attack results", "do not exist"],
        ),
        (
            ("--policy", policy, "--evidence", w.evidence, "--attack-results", w.evidence / "attacks" / "mia-p1.json"),
            ["inside the evidence directory", "--attack-results"],
        ),
        (("--policy", policy, "--evidence", w.evidence, "--attack-results", junk), ["not"]),
    ]
    for i, (args, words) in enumerate(cases):
        out = tmp_path / f"out{i}"
        r = forge_cli("audit", *args, "--out", out)
        assert_clean_error(r, *words)
        assert not out.exists()
    r = forge_cli("audit", "--policy", policy, "--evidence", w.evidence, "--out", w.evidence / "report")
    assert_clean_error(r, "inside the evidence")
    assert not (w.evidence / "report").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    r = forge_cli("audit", "--policy", policy, "--evidence", w.evidence, "--out", tmp_path / "busy")
    assert_clean_error(r, "not empty")
    assert (tmp_path / "busy" / "x").read_text() == "keep"


def test_verify_report_bad_inputs(cli_world, forge_inproc, tmp_path):
    forge_cli = forge_inproc
    w, policy = cli_world
    r = forge_cli("verify-report", tmp_path / "none", "--key", w.keys["auditor"] / "public.json")
    assert_clean_error(r, "does not exist")
    junk = tmp_path / "junk.json"
    junk.write_text("{")
    r = forge_cli("verify-report", tmp_path, "--key", junk)
    assert_clean_error(r, "not a forge key file")
    r = forge_cli("verify-report", junk, "--key", w.keys["auditor"] / "public.json")
    assert_clean_error(r, "not a directory")
    # a real signed report, checked with the wrong kind of key and after damage to its signature
    out = tmp_path / "report"
    assert (
        forge_cli("audit", "--policy", policy, "--evidence", w.evidence, "--out", out, "--key", w.keys["auditor"] / "signing.key").code == 0
    )
    r = forge_cli("verify-report", out, "--key", w.keys["auditor"] / "signing.key")
    assert_clean_error(r, "not a forge public key file")
    sig = out / "report.sig.json"
    sig.write_bytes(sig.read_bytes()[:50])  # truncated
    r = forge_cli("verify-report", out, "--key", w.keys["auditor"] / "public.json")
    assert r.code == 1 and "report.signature_corrupt" in r.err and "Traceback" not in r.err, r
    sig.write_text("[1, 2]")  # wrong type
    r = forge_cli("verify-report", out, "--key", w.keys["auditor"] / "public.json")
    assert r.code == 1 and "not a forge report signature" in r.err, r


def test_print_default_policy_is_a_valid_policy(forge_inproc, tmp_path):
    forge_cli = forge_inproc
    r = forge_cli("audit", "--print-default-policy")
    assert r.code == 0 and "[checks.provenance]" in r.out
    from audits import parse_policy

    assert parse_policy(r.out).name == "forge-default"


def test_audit_opens_bundles_with_a_passphrase_protected_decryption_key(cli_world, forge_inproc, tmp_path, monkeypatch):
    """--decryption-key under a passphrase: the passphrase comes from a file or the
    environment; a wrong or missing one is a clean error and nothing is written."""
    from forge_secure.crypto.keys import _private_doc, load_decryption_key

    forge_cli = forge_inproc
    w, policy = cli_world
    plain = load_decryption_key(w.keys["consortium"] / "decryption.key")
    locked = tmp_path / "locked.key"
    locked.write_bytes(_private_doc(plain.role, plain.site, plain.algorithms, plain.keys, b"correct horse", plain.key_id))
    locked.chmod(0o600)
    (tmp_path / "pass.txt").write_text("correct horse\n")
    ok = forge_cli(
        "audit",
        "--policy",
        policy,
        "--evidence",
        w.evidence,
        "--out",
        tmp_path / "r1",
        "--decryption-key",
        locked,
        "--decryption-passphrase-file",
        tmp_path / "pass.txt",
        "--json",
    )
    assert ok.code == 0, ok
    monkeypatch.setenv("FORGE_TEST_PW", "correct horse")
    ok2 = forge_cli(
        "audit",
        "--policy",
        policy,
        "--evidence",
        w.evidence,
        "--out",
        tmp_path / "r2",
        "--decryption-key",
        locked,
        "--decryption-passphrase-env",
        "FORGE_TEST_PW",
    )
    assert ok2.code == 0, ok2
    monkeypatch.setenv("FORGE_TEST_PW", "wrong")
    for i, (extra, words) in enumerate(
        [
            (("--decryption-key", locked, "--decryption-passphrase-env", "FORGE_TEST_PW"), ["passphrase"]),
            (("--decryption-key", locked), ["passphrase"]),
            (("--decryption-passphrase-env", "FORGE_TEST_PW"), ["--decryption-key"]),
        ]
    ):
        out = tmp_path / f"bad{i}"
        r = forge_cli("audit", "--policy", policy, "--evidence", w.evidence, "--out", out, *extra)
        assert_clean_error(r, *words)
        assert not out.exists()


def test_attack_results_and_inconclusive_exit_codes(cli_world, forge_inproc, tmp_path):
    """The auditor's own attack on 400 records cannot show the claimed epsilon 4: INCONCLUSIVE.
    Exit 0 with the verdict banner saying so, or 1 when the policy counts INCONCLUSIVE as failure."""
    w, _ = cli_world
    mine = tmp_path / "auditor" / "mia-p1.json"
    mine.parent.mkdir()
    mine.write_text(json.dumps(membership_results("plugins/p1", separation=0.0, seed=3, n=400)))
    for fails, code in ((False, 0), (True, 1)):
        policy = tmp_path / f"inc-{fails}.toml"
        policy.write_text(
            f'format = "forge-audit-policy/1"\nname = "inc"\n[verdict]\ninconclusive_fails = {str(fails).lower()}\n'
            "[checks.provenance]\n[checks.consistency]\n"
        )
        args = (
            "audit",
            "--policy",
            policy,
            "--evidence",
            w.evidence,
            "--decryption-key",
            w.keys["consortium"] / "decryption.key",
            "--attack-results",
            mine,
        )
        r = forge_inproc(*args, "--out", tmp_path / f"r-{fails}")
        assert r.code == code, r
        assert "INCONCLUSIVE" in r.out and "cannot tell" in r.out and "claimed only" in r.out
        assert ("AUDIT PASSED" in r.out) is (not fails)
        j = forge_inproc(*args, "--out", tmp_path / f"j-{fails}", "--json")
        doc = json.loads(j.out)
        assert j.code == code and doc["verdict"] == ("fail" if fails else "pass")
        assert doc["verdict_detail"]["inconclusive_checks"] == ["consistency"] and doc["counts"]["inconclusive"] == 1
        assert doc["inconclusive"][0]["subject"] == f"auditor:{mine}"
        rows = {r["claim"]: r for r in doc["claims"] if r["plugin"] == "plugins/p1"}
        assert rows["weights-binding"]["basis"] == "verified" and rows["dp-parameters"]["basis"] == "claimed"


def test_outside_text_is_never_read_as_rich_markup(cli_world, forge_inproc, tmp_path):
    """A site controls its plugin's name and manifest: markup in them is printed as text."""
    import shutil

    w, policy = cli_world
    shutil.move(w.evidence / "plugins" / "p1", w.evidence / "plugins" / "[bold red]p1")
    r = forge_inproc("audit", "--policy", policy, "--evidence", w.evidence, "--out", tmp_path / "r")
    assert r.code == 0 and "claimed only (not verified by replay): plugins/[bold red]p1" in r.out, r
    meta_path = w.evidence / "plugins" / "[bold red]p1" / "forge.json"
    meta = json.loads(meta_path.read_text())
    meta["dp"]["epsilon"] = 0.1
    meta_path.write_text(json.dumps(meta))
    r = forge_inproc("audit", "--policy", policy, "--evidence", w.evidence, "--out", tmp_path / "r2")
    assert r.code == 1 and "dp-claims plugins/[bold red]p1: claims epsilon 0.1" in r.out, r
