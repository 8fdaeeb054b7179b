"""The passphrase flags, defined once (``cli._common.add_passphrase_flags``) and read once
(``cli._common.passphrase``): every command that takes a key keeps its flags, each pair is
mutually exclusive, and each prefix reads its own pair."""

from __future__ import annotations

import pytest

from forge_secure.cli import _common, build_parser
from forge_secure.errors import ForgeError

# (command, the prefixes of its passphrase pairs)
COMMANDS = [
    (["keys", "new", "--site", "site-1", "--out", "k"], [""]),
    (["keys", "protect", "k/signing.key"], ["", "new-"]),
    (["roster", "sign", "roster.json", "--key", "k"], [""]),
    (["seal", "plugin", "--signer", "k", "--recipient", "p.json", "--out", "b.forge"], [""]),
    (["open", "b.forge", "--key", "k", "--roster", "r.json", "--out", "o"], [""]),
    (["train", "--site", "site-1", "--data", "bundled:site-1", "--no-dp", "--out", "o"], [""]),
    (["merge", "fusion", "a", "b", "--out", "o"], [""]),
    (["audit", "--evidence", "e", "--out", "o"], ["", "decryption-", "replay-"]),
    (["audit", "replay", "env.forge", "--plugin", "p", "--key", "k", "--roster", "r.json"], [""]),
    (["roster", "timestamp", "roster.json", "--key", "k", "--out", "t.json"], [""]),
]


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("argv, prefixes", COMMANDS, ids=[" ".join(c[0][:2]) for c in COMMANDS])
def test_each_prefix_reads_its_own_pair(parser, argv, prefixes, tmp_path, monkeypatch):
    for i in range(len(prefixes)):
        (tmp_path / f"p{i}").write_text(f"file secret {i}\nsecond line ignored\n")
        monkeypatch.setenv(f"FORGE_TEST_PP{i}", f"env secret {i}")
    by_file = parser.parse_args(argv + [a for i, p in enumerate(prefixes) for a in (f"--{p}passphrase-file", str(tmp_path / f"p{i}"))])
    by_env = parser.parse_args(argv + [a for i, p in enumerate(prefixes) for a in (f"--{p}passphrase-env", f"FORGE_TEST_PP{i}")])
    none = parser.parse_args(argv)
    for i, prefix in enumerate(prefixes):
        assert _common.passphrase(by_file, prefix=prefix) == f"file secret {i}".encode()
        assert _common.passphrase(by_env, prefix=prefix) == f"env secret {i}".encode()
        assert _common.passphrase(none, prefix=prefix) is None


@pytest.mark.parametrize("argv, prefixes", COMMANDS, ids=[" ".join(c[0][:2]) for c in COMMANDS])
def test_file_and_env_of_one_pair_exclude_each_other(parser, argv, prefixes, capsys):
    for prefix in prefixes:
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv + [f"--{prefix}passphrase-file", "f", f"--{prefix}passphrase-env", "V"])
        assert e.value.code == 2
        assert "not allowed with argument" in capsys.readouterr().err


def test_an_empty_or_unset_source_is_a_clean_error(parser, tmp_path, monkeypatch):
    (tmp_path / "empty").write_text("\n")
    monkeypatch.delenv("FORGE_TEST_UNSET", raising=False)
    argv = ["keys", "protect", "k/signing.key"]
    for flags in (["--new-passphrase-file", str(tmp_path / "empty")], ["--new-passphrase-env", "FORGE_TEST_UNSET"]):
        with pytest.raises(ForgeError) as e:
            _common.passphrase(parser.parse_args(argv + flags), prefix="new-")
        assert e.value.code == "key.passphrase_empty"
