"""`forge keys / roster / seal / verify / open` through the real command.

The story and a few bad inputs run through the ``forge_cli`` fixture (a real subprocess);
the wider matrix of bad inputs calls the same parser in-process (``forge_secure.cli.main``),
which is the same code without the process start-up cost. Every error: one line, exit 2,
no traceback, no output left behind.
"""

from __future__ import annotations

import json

import pytest

from forge_secure.cli import main as forge_main
from forge_secure.crypto import new_keys
from tests.conftest import assert_clean_error
from tests.forge_secure.crypto._cli_world import build_cli_world


def test_cli_subprocess_seal_verify_open(forge_cli, tmp_path, setup):
    """The real command in three subprocesses (each start-up imports every area's CLI)."""
    keys, roster, plugin, _ = setup
    env = {"SITE_PASS": "correct horse battery"}
    bundle = tmp_path / "b.forge"
    r = forge_cli(
        "seal",
        plugin,
        "--signer",
        keys["site-1"].signing,
        "--recipient",
        keys["consortium"].public,
        "--out",
        bundle,
        "--sequence",
        "5",
        "--roster",
        roster,
    )
    assert_clean_error(r, "roster.unpinned", "no pinned root")  # the subprocess's FORGE_HOME has no root of trust yet
    r = forge_cli(
        "seal",
        plugin,
        "--signer",
        keys["site-1"].signing,
        "--recipient",
        keys["consortium"].public,
        "--out",
        bundle,
        "--sequence",
        "5",
        "--roster",
        roster,
        "--root",
        roster,
    )
    assert r.code == 0 and bundle.exists(), r
    r = forge_cli("verify", bundle, "--roster", roster, "--json")
    assert r.code == 0 and json.loads(r.out)["sequence"] == 5, r
    r = forge_cli("open", bundle, "--key", keys["other"].decryption, "--roster", roster, "--out", tmp_path / "inbox", env=env)
    assert_clean_error(r, "bundle.wrong_recipient", "is sealed for key")
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "inbox").exists()


def test_cli_story_in_process(tmp_path, kit, capsys, monkeypatch):
    """keys new -> roster init/add/sign -> seal -> verify -> open -> replay, flipped byte, wrong passphrase."""
    monkeypatch.setenv("SITE_PASS", "correct horse battery")
    code, text = run(capsys, "keys", "new", "--site", "site-1", "--out", tmp_path / "site", "--passphrase-env", "SITE_PASS")
    assert code == 0 and "site-1" in text
    for who in ("consortium", "admin-1"):
        assert run(capsys, "keys", "new", "--site", who, "--out", tmp_path / who, "--json")[0] == 0
    roster = tmp_path / "roster.json"
    code, text = run(
        capsys,
        "roster",
        "init",
        "--out",
        roster,
        "--consortium",
        "medforge",
        "--admin",
        tmp_path / "admin-1",
        "--recipient",
        tmp_path / "consortium" / "public.json",
    )
    assert code == 0 and "version 1" in text
    code, text = run(capsys, "roster", "add", roster, "--site-key", tmp_path / "site" / "public.json", "--not-after", "30d")
    assert code == 0 and "version 2" in text
    code, text = run(capsys, "roster", "sign", roster, "--key", tmp_path / "admin-1" / "signing.key", "--json")
    assert code == 0 and json.loads(text)["trusted"] is True
    code, text = run(capsys, "roster", "sign", roster, "--key", tmp_path / "admin-1", "--expires", "400d", "--json")
    assert code == 0 and json.loads(text)["version"] == 3 and json.loads(text)["trusted"] is True
    plugin = kit.make_plugin(tmp_path / "plugin")
    bundle = tmp_path / "site-1.forge"
    seal_args = (
        "seal",
        plugin,
        "--signer",
        tmp_path / "site" / "signing.key",
        "--passphrase-env",
        "SITE_PASS",
        "--recipient",
        tmp_path / "consortium" / "public.json",
    )
    assert run(capsys, *seal_args, "--out", bundle)[0] == 0
    code, text = run(capsys, "verify", bundle, "--roster", roster)
    assert code == 0 and "site-1 (sequence 1)" in text
    code, text = run(capsys, "open", bundle, "--key", tmp_path / "consortium", "--roster", roster, "--out", tmp_path / "inbox")
    assert code == 0
    assert (tmp_path / "inbox" / "adapter_model.safetensors").read_bytes() == (plugin / "adapter_model.safetensors").read_bytes()
    code, text = run(
        capsys, "open", bundle, "--key", tmp_path / "consortium" / "decryption.key", "--roster", roster, "--out", tmp_path / "again"
    )
    clean_error(code, text, "already opened")
    assert not (tmp_path / "again").exists()
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "bad.forge").write_bytes(bytes(data))
    clean_error(*run(capsys, "verify", tmp_path / "bad.forge", "--roster", roster), "does not match its signed digest")
    monkeypatch.setenv("SITE_PASS", "wrong pass!")
    clean_error(*run(capsys, *seal_args, "--out", tmp_path / "x.forge"), "wrong passphrase")
    assert not (tmp_path / "x.forge").exists()


@pytest.mark.slow
def test_cli_story_seal_verify_open(forge_cli, tmp_path, kit):
    env = {"SITE_PASS": "correct horse battery"}
    r = forge_cli("keys", "new", "--site", "site-1", "--out", tmp_path / "site", "--passphrase-env", "SITE_PASS", env=env)
    assert r.code == 0, r
    new_keys("consortium", tmp_path / "cons", random=kit.Drbg("cli cons"))
    new_keys("admin-1", tmp_path / "admin", random=kit.Drbg("cli admin"))
    roster = tmp_path / "roster.json"
    r = forge_cli(
        "roster",
        "init",
        "--out",
        roster,
        "--consortium",
        "medforge",
        "--admin",
        tmp_path / "admin" / "public.json",
        "--recipient",
        tmp_path / "cons" / "public.json",
    )
    assert r.code == 0 and "version 1" in r.out, r
    r = forge_cli("roster", "add", roster, "--site-key", tmp_path / "site" / "public.json", "--not-after", "30d")
    assert r.code == 0 and "version 2" in r.out, r
    r = forge_cli("roster", "sign", roster, "--key", tmp_path / "admin" / "signing.key", "--json")
    assert r.code == 0 and json.loads(r.out)["trusted"] is True, r
    plugin = kit.make_plugin(tmp_path / "plugin")
    bundle = tmp_path / "site-1.forge"
    r = forge_cli(
        "seal",
        plugin,
        "--signer",
        tmp_path / "site" / "signing.key",
        "--passphrase-env",
        "SITE_PASS",
        "--recipient",
        tmp_path / "cons" / "public.json",
        "--out",
        bundle,
        env=env,
    )
    assert r.code == 0 and bundle.exists(), r
    r = forge_cli("verify", bundle, "--roster", roster, "--json")
    assert r.code == 0, r
    info = json.loads(r.out)
    assert info["verified"] and info["site"] == "site-1" and info["sequence"] == 1
    assert info["dp"]["epsilon"] == "3.2" and info["base_digest"] == "ab" * 32
    r = forge_cli("open", bundle, "--key", tmp_path / "cons" / "decryption.key", "--roster", roster, "--out", tmp_path / "inbox")
    assert r.code == 0 and "site-1" in r.out, r
    assert (tmp_path / "inbox" / "adapter_model.safetensors").read_bytes() == (plugin / "adapter_model.safetensors").read_bytes()
    r = forge_cli("open", bundle, "--key", tmp_path / "cons" / "decryption.key", "--roster", roster, "--out", tmp_path / "again")
    assert_clean_error(r, "already opened")
    assert not (tmp_path / "again").exists()
    # a flipped byte, through the real command
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.forge"
    bad.write_bytes(bytes(data))
    r = forge_cli("verify", bad, "--roster", roster)
    assert_clean_error(r, "does not match its signed digest")
    assert len(r.err.strip().splitlines()) == 1
    r = forge_cli(
        "seal",
        plugin,
        "--signer",
        tmp_path / "site" / "signing.key",
        "--passphrase-env",
        "SITE_PASS",
        "--recipient",
        tmp_path / "cons" / "public.json",
        "--out",
        tmp_path / "x.forge",
        env={"SITE_PASS": "wrong pass!"},
    )
    assert_clean_error(r, "wrong passphrase")
    assert not (tmp_path / "x.forge").exists()


@pytest.fixture
def setup(tmp_path, kit, capsys):
    world = build_cli_world(tmp_path, kit, "cli", seal_with_roster=False)
    capsys.readouterr()
    return world


def run(capsys, *args) -> tuple[int, str]:
    code = forge_main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def clean_error(code: int, text: str, *words: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    for w in words:
        assert w.lower() in text.lower(), (w, text)


def test_cli_bad_inputs_in_process(tmp_path, setup, capsys):
    keys, roster, plugin, bundle = setup
    data = bundle.read_bytes()
    empty = tmp_path / "empty.forge"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.forge"
    cut.write_bytes(data[: len(data) - 100])
    cases = [
        (("verify", empty, "--roster", roster), ["bundle.empty"]),
        (("verify", tmp_path, "--roster", roster), ["directory"]),
        (("verify", cut, "--roster", roster), ["truncated"]),
        (("verify", roster, "--roster", roster), ["not a valid forge bundle"]),
        (("verify", bundle, "--roster", bundle), ["roster"]),
        (("verify", bundle, "--roster", keys["admin-1"].public), ["roster.wrong_type"]),
        (("open", bundle, "--key", keys["other"].decryption, "--roster", roster, "--out", tmp_path / "o1"), ["bundle.wrong_recipient"]),
        (("open", bundle, "--key", keys["consortium"].public, "--roster", roster, "--out", tmp_path / "o2"), ["key.wrong_type"]),
        (("open", bundle, "--key", keys["consortium"].signing, "--roster", roster, "--out", tmp_path / "o3"), ["signing key"]),
        (
            ("seal", plugin, "--signer", keys["site-1"].signing, "--recipient", keys["consortium"].public, "--out", bundle),
            ["already exists"],
        ),
        (
            (
                "seal",
                plugin / "forge.json",
                "--signer",
                keys["site-1"].signing,
                "--recipient",
                keys["consortium"].public,
                "--out",
                tmp_path / "s.forge",
            ),
            ["not a plugin directory"],
        ),
        (
            (
                "seal",
                plugin,
                "--signer",
                keys["site-1"].decryption,
                "--recipient",
                keys["consortium"].public,
                "--out",
                tmp_path / "s.forge",
            ),
            ["signing key"],
        ),
        (
            ("seal", plugin, "--signer", keys["site-1"].signing, "--recipient", keys["consortium"].signing, "--out", tmp_path / "s.forge"),
            ["public key file"],
        ),
        (
            (
                "seal",
                plugin,
                "--signer",
                keys["site-1"].signing,
                "--recipient",
                keys["consortium"].public,
                "--out",
                tmp_path / "s.forge",
                "--passphrase-file",
                tmp_path / "nope.txt",
            ),
            ["does not exist"],
        ),
        (("keys", "new", "--site", "site-1", "--out", tmp_path / "site-1"), ["never overwritten"]),
        (("roster", "sign", roster, "--key", keys["site-1"].signing), ["not an admin"]),
        (("roster", "show", empty), ["empty"]),
        (("roster", "revoke", roster, "--key-id", "abc", "--reason", "x"), ["no site key"]),
        (("roster", "add", roster, "--site-key", keys["other"].public, "--not-after", "yesterday"), ["time"]),
    ]
    for args, words in cases:
        code, text = run(capsys, *args)
        clean_error(code, text, *words)
    assert not (tmp_path / "s.forge").exists()
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_cli_verify_and_open_text_output(tmp_path, setup, capsys):
    keys, roster, plugin, bundle = setup
    code, text = run(capsys, "verify", bundle, "--roster", roster)
    assert code == 0 and "OK" in text and "site-1" in text and "epsilon 3.2" in text and "ab" * 32 in text
    code, text = run(capsys, "roster", "show", roster)
    assert code == 0 and "1 valid of 1 needed" in text
    code, text = run(
        capsys, "open", bundle, "--key", keys["consortium"].decryption, "--roster", roster, "--out", tmp_path / "inbox", "--json"
    )
    assert code == 0 and json.loads(text)["verified"]["sequence"] == 1
