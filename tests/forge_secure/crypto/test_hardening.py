"""Issue 16: every crash class found by the attack run, hostile names through every command,
partial outputs (the pinned root of trust, distinct signers and the recipient listed in the
roster are in test_hardening_trust.py).

Each test plays the adversary at full strength: it controls every byte it sends (bundles,
rosters, key files, plugin directories, names), signs with keys it made itself, and the
victim machine has only what the victim was given out of band.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import struct

import pytest

from forge_secure.cli import build_parser
from forge_secure.cli import main as forge_main
from forge_secure.crypto import (
    BundleError,
    load_signing_key,
    new_keys,
)
from forge_secure.crypto import keys as keys_mod
from forge_secure.crypto.roster import roster_from_bytes
from forge_secure.errors import ForgeError
from forge_secure.fileio import PARTIAL_PREFIX, atomic_directory, read_json_file, sweep_partials
from tests.forge_secure.crypto._world import code_of

DEEP = b"[" * 60_000
BIG_INT = b"1" * 5_000


def bundle_with_header(header: bytes) -> bytes:
    return b"FORGEBDL" + struct.pack(">I", len(header)) + header + b"\x00" * 200


# --------------------------------------------------------------------------- crash classes


def test_header_of_60000_brackets_big_integers_and_a_list_for_an_algorithm(world, kit):
    """The three crash classes of the attack run, each refused as bundle.format before any signature work."""
    good = world.seal("good.forge").read_bytes()
    parts = kit.split(good)
    header = json.loads(parts.header_bytes)
    listed = dict(header, algorithms={**header["algorithms"], "kem": ["x25519"]})
    listed_sig = dict(header, algorithms={**header["algorithms"], "signature": [["ed25519"]]})
    huge = parts.header_bytes.replace(b'"chunks":', b'"chunks":' + BIG_INT + b',"x":')
    cases = {
        "deep": bundle_with_header(DEEP),
        "deep-object": bundle_with_header(b'{"a":' * 20_000),
        "big-int": bundle_with_header(b'{"chunk_size":' + BIG_INT + b"}"),
        "big-int-in-place": kit.join(huge, parts.wrapped, parts.chunks, parts.envelope),
        "list-for-kem": kit.join(
            json.dumps(listed, sort_keys=True, separators=(",", ":")).encode(), parts.wrapped, parts.chunks, parts.envelope
        ),
        "list-in-signature": kit.join(
            json.dumps(listed_sig, sort_keys=True, separators=(",", ":")).encode(), parts.wrapped, parts.chunks, parts.envelope
        ),
        "float": bundle_with_header(b'{"chunk_size":1e400}'),
        "nan": bundle_with_header(b'{"chunk_size":NaN}'),
        "duplicate-key": bundle_with_header(b'{"format":"forge-bundle/1","format":"x"}'),
    }
    for name, data in cases.items():
        with pytest.raises(BundleError) as e:
            world.verify_bytes(data)
        assert e.value.code == "bundle.format", (name, e.value.code)
    # the same in the envelope and the statement: a deep or huge envelope is refused as malformed
    for envelope in (DEEP[:60_000], b'{"payload":' + BIG_INT + b"}", b'{"payloadType":["x"],"payload":"","signatures":[]}'):
        with pytest.raises(BundleError) as e:
            world.verify_bytes(kit.join(parts.header_bytes, parts.wrapped, parts.chunks, envelope))
        assert e.value.code in ("bundle.envelope", "bundle.format"), e.value.code


def test_crash_classes_in_rosters_key_files_and_json_files(tmp_path):
    keys = new_keys("site-1", tmp_path / "k")
    pub = json.loads(keys.public.read_text())
    priv = json.loads(keys.signing.read_text())
    for raw in (
        DEEP,
        b'{"signed":' + BIG_INT + b"}",
        b'{"signed":{"format":["forge-roster/2"]},"signatures":[]}',
        b'{"signed":{"format":"forge-roster/2","admins":"x","sites":[],"revocations":[]},"signatures":[]}',
    ):
        assert code_of(roster_from_bytes, raw).startswith("roster.")
    bad_pub = [
        DEEP,
        BIG_INT,
        json.dumps(dict(pub, encryption={**pub["encryption"], "kem": ["x25519"]})).encode(),
        json.dumps(dict(pub, signing={**pub["signing"], "algorithms": [["ed25519"]]})).encode(),
    ]
    for raw in bad_pub:
        assert code_of(keys_mod.public_key_from_bytes, raw).startswith("key.")
    bad_priv = [
        DEEP,
        BIG_INT,
        json.dumps(dict(priv, algorithms=[["ed25519"]])).encode(),
        json.dumps(dict(priv, role="decryption", algorithms=[["x25519"]])).encode(),
        json.dumps(dict(priv, encrypted="yes")).encode(),
    ]
    for raw in bad_priv:
        assert code_of(keys_mod.private_key_from_bytes, raw).startswith("key.")
    # policy, evidence and results files go through read_json_file: one ForgeError, never RecursionError
    f = tmp_path / "policy.json"
    for raw in (DEEP, b'{"min_days":' + BIG_INT + b"}", b'{"a":1,"a":2}'):
        f.write_bytes(raw)
        with pytest.raises(ForgeError) as e:
            read_json_file(f, "policy")
        assert e.value.code == "file.not_json"
    f.write_bytes(b'{"auc": NaN, "eps": Infinity}')  # the toolkit's own results files hold these
    assert read_json_file(f)["eps"] == float("inf")


def test_crash_classes_through_the_cli_exit_2(tmp_path, world, capsys):
    deep_bundle, deep_roster, deep_key = tmp_path / "deep.forge", tmp_path / "deep.json", tmp_path / "deep-key.json"
    deep_bundle.write_bytes(bundle_with_header(DEEP))
    deep_roster.write_bytes(DEEP)
    deep_key.write_bytes(b'{"format":"forge-public-key/1","site":' + BIG_INT + b"}")
    for argv in (
        ["verify", deep_bundle, "--roster", world.roster],
        ["verify", world.seal("x.forge"), "--roster", deep_roster],
        ["roster", "show", deep_roster],
        ["roster", "pin", deep_roster],
        ["seal", world.plugin, "--signer", world.keys["site-1"].signing, "--recipient", deep_key, "--out", tmp_path / "o.forge"],
    ):
        assert forge_main([str(a) for a in argv]) == 2, argv
        err = capsys.readouterr().err
        assert "internal error" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- hostile names through every command


HOSTILE = "[/x][bold red]x[link=file:///etc/passwd]y"


def _fill(parser: argparse.ArgumentParser, value: str) -> list[str] | None:
    argv: list[str] = []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction) or not (a.required or not a.option_strings):
            continue
        v = a.choices[0] if a.choices else value
        if a.option_strings:
            argv += [a.option_strings[0], str(v)]
        else:
            argv.append(str(v))
    return argv or None


def _leaves(parser, prefix=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sp in subs[0].choices.items():
        yield from _leaves(sp, (*prefix, name))


def test_hostile_names_through_every_command(tmp_path, capsys, monkeypatch):
    """Every command of `forge` with every required input a hostile path: it prints the text as
    itself, exits 0 or 2 (never 1 or 3), and never shows a traceback."""
    monkeypatch.chdir(tmp_path)
    base = tmp_path / HOSTILE
    seen = []
    for prefix, parser in _leaves(build_parser()):
        argv = _fill(parser, str(base / "-".join(prefix)))
        if argv is None:  # no input to carry a hostile name (audit, bench, demo, ledger show: defaults only)
            continue
        try:
            code = forge_main([*prefix, *argv])
        except SystemExit as e:  # argparse refusing a value
            code = e.code
        cap = capsys.readouterr()
        text = cap.out + cap.err
        assert code in (0, 2), (prefix, code, text)
        assert "Traceback" not in text and "internal error" not in text, (prefix, text)
        if code == 2 and "[/x]" not in text:
            assert "error" in text, (prefix, text)
        seen.append((prefix, code, "[/x]" in text))
    assert len(seen) >= 20
    assert sum(1 for _, _, shown in seen if shown) >= 15  # most name the hostile path, verbatim


def test_hostile_names_in_keys_rosters_and_plugins(tmp_path, world, kit, capsys, monkeypatch):
    from forge_secure.crypto import _time

    monkeypatch.setattr(_time, "now", lambda: kit.NOW)  # the world's fixed clock, for the commands too
    hostile_dir = tmp_path / "[/x]" / "[bold]k"
    assert forge_main(["keys", "new", "--site", "ok-site", "--out", str(hostile_dir)]) == 0
    assert str(hostile_dir) in capsys.readouterr().out
    # a key file whose site name is markup: refused by name, printed as itself
    doc = json.loads(world.keys["stranger"].public.read_text())
    doc["site"] = "[/x]"
    bad = tmp_path / "bad-site.json"
    bad.write_text(json.dumps(doc))
    assert forge_main(["roster", "add", str(world.roster), "--site-key", str(bad)]) == 2
    assert "'[/x]'" in capsys.readouterr().err
    assert (
        forge_main(
            ["roster", "init", "--out", str(tmp_path / "r.json"), "--consortium", "[/x]", "--admin", str(world.keys["admin-1"].public)]
        )
        == 2
    )
    assert "'[/x]'" in capsys.readouterr().err
    # plugin forge.json fields are signed into the manifest and printed by verify and open
    plugin = kit.make_plugin(tmp_path / "[/x]plugin")
    meta = json.loads((plugin / "forge.json").read_text())
    meta.update(format="[/x]", kind="[bold red]evil[/bold red]", dp={**meta["dp"], "accountant": "[link=x]y[/link]"})
    (plugin / "forge.json").write_text(json.dumps(meta))
    b = world.seal("h.forge", plugin=plugin)
    assert forge_main(["verify", str(b), "--roster", str(world.roster)]) == 0
    out = capsys.readouterr().out
    assert "[/x] ([bold red]evil[/bold red]" in out and "[link=x]y[/link]" in out
    code = forge_main(
        [
            "open",
            str(b),
            "--key",
            str(world.keys["consortium"].decryption),
            "--roster",
            str(world.roster),
            "--out",
            str(tmp_path / "[/x]out"),
        ]
    )
    assert code == 0 and "[/x]out" in capsys.readouterr().out


# --------------------------------------------------------------------------- partial outputs


def test_partial_outputs_are_private_recognisable_and_swept(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as tmp:
            assert tmp.name.startswith(PARTIAL_PREFIX + "out.") and stat.S_IMODE(tmp.stat().st_mode) == 0o700
            raise RuntimeError
    # what a killed process leaves: a partial directory whose lock died with it
    left = tmp_path / f"{PARTIAL_PREFIX}out.abc.part"
    left.mkdir()
    (left / "weights.bin").write_bytes(b"decrypted")
    with atomic_directory(tmp_path / "other") as tmp:
        assert not left.exists()  # swept by the next write there
        assert tmp.exists()
        assert sweep_partials(tmp_path) == []  # a live partial (locked by us) is never swept
    assert (tmp_path / "other").is_dir()


def test_opened_plugin_is_private(world):
    opened = world.open(world.seal())
    for p in opened.out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    assert stat.S_IMODE(opened.out.stat().st_mode) == 0o700


def test_a_crash_between_rename_and_store_write_never_accepts_twice(world, monkeypatch):
    """Simulate the crash: the plugin is renamed into place, then the process dies before the
    store records the acceptance. The next open of the same bundle is refused as a replay."""
    from forge_secure.crypto import replay as replay_mod

    path = world.seal()
    real = replay_mod.ReplayStore._record

    def die(self, *a, **kw):
        raise SystemExit("killed")  # nothing after the rename runs, as with kill -9

    monkeypatch.setattr(replay_mod.ReplayStore, "_record", die)
    with pytest.raises(SystemExit):
        world.open(path, out="first")
    monkeypatch.setattr(replay_mod.ReplayStore, "_record", real)
    # what kill -9 leaves: the plugin delivered, the submission still pending in the store
    store = replay_mod.ReplayStore()
    assert (world.root / "first").is_dir() and any((world.root / "first").iterdir())
    assert list(store._load()["pending"]) == [world.verify(path).submission_id]
    with pytest.raises(BundleError) as e:
        world.open(path, out="second")
    assert e.value.code == "bundle.replay"
    assert not (world.root / "second").exists()
    # and a crash before the rename: the partial directory is removed, the submission may be opened
    other = world.seal("b.forge")
    v = world.verify(other)
    tmp = world.root / f"{PARTIAL_PREFIX}third.x.part"
    tmp.mkdir()
    (tmp / "adapter_model.safetensors").write_bytes(b"plaintext")
    state = store._load()
    state["pending"][v.submission_id] = {"site": v.site, "sequence": v.sequence, "out": str(world.root / "third"), "tmp": str(tmp)}
    store._write(state)
    store.settle()
    assert not tmp.exists() and not store._load()["pending"]
    assert world.open(other, out="third").verified.sequence == v.sequence


def test_replay_store_is_bounded_and_reads_format_1(world, tmp_path):
    from forge_secure.crypto.replay import ReplayStore

    store = ReplayStore(tmp_path / "r", window=4)
    for seq in range(1, 50):
        with store.accept(f"{seq:032x}", "site-1", seq):
            pass
    state = json.loads(store.path.read_text())
    assert state["sites"]["site-1"]["highest"] == 49 and len(state["sites"]["site-1"]["seen"]) == 4
    with pytest.raises(BundleError):
        with store.accept("f" * 32, "site-1", 45):  # at the floor: too old
            pass
    with pytest.raises(BundleError):
        with store.accept("e" * 32, "site-1", 48):  # inside the window, seen
            pass
    old = tmp_path / "v1"
    old.mkdir()
    (old / "accepted.json").write_text(
        json.dumps({"submissions": {"a" * 32: {"site": "s", "sequence": 3, "opened": "x"}}, "sites": {"s": 3}})
    )
    v1 = ReplayStore(old)
    assert v1.last_sequence("s") == 3
    with pytest.raises(BundleError):
        with v1.accept("b" * 32, "s", 3):
            pass
    (old / "accepted.json").write_bytes(DEEP)
    assert code_of(v1.last_sequence, "s") == "replay.state"


def test_signed_documents_are_rfc8785_canonical():
    from forge_secure.fileio import canonical_json

    # RFC 8785 sorts keys by UTF-16 code units: U+10000 (a surrogate pair, D800 DC00) sorts before U+FB33
    assert canonical_json({"\ufb33": 1, "\U00010000": 2}) == '{"\U00010000":2,"\ufb33":1}'.encode("utf-8")
    assert canonical_json({"b": [True, None, "\u00e9\n"], "a": -0}) == b'{"a":0,"b":[true,null,"\xc3\xa9\\n"]}'
    for bad in ({"x": 1.5}, {"x": 2**53}):
        with pytest.raises(ForgeError):
            canonical_json(bad)


def test_key_files_are_checked_for_mode_before_use(world):
    path = world.keys["site-1"].signing
    os.chmod(path, 0o644)
    assert code_of(load_signing_key, path) == "key.permissions"
    os.chmod(path, 0o600)
