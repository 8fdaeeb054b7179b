"""Shared test fixtures. Area-specific fixtures live in each area's own conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:  # two xdist workers on two cores: one thread each
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def randomise_lora_B(model, seed: int, scale: float):
    """Set every LoRA B weight of ``model`` to seeded N(0, scale^2) values (B = 0 at
    initialisation would make grad_A and every merge trivial); returns the model."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.fixture(scope="session")
def _shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("forge-cache")


@pytest.fixture(scope="session", autouse=True)
def _session_forge_home(tmp_path_factory, _shared_cache):
    """Session- and module-scoped fixtures are built before any test's own home exists:
    they get a private home of the session (never the user's), and the shared cache."""
    old = {k: os.environ.get(k) for k in ("FORGE_HOME", "FORGE_CACHE")}
    os.environ["FORGE_HOME"] = str(tmp_path_factory.mktemp("session-home"))
    os.environ["FORGE_CACHE"] = str(_shared_cache)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _isolated_forge_home(tmp_path_factory, _shared_cache, monkeypatch):
    """Every test gets its own FORGE_HOME (ledgers, roster state, replay store, sequence
    counters), so tests never share state with each other or with the user's home; the
    content-keyed caches are shared within a worker through FORGE_CACHE."""
    monkeypatch.setenv("FORGE_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("FORGE_CACHE", str(_shared_cache))


class InprocResult:
    """What ``forge_inproc`` returns: exit code, stdout and stderr."""

    def __init__(self, code, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"InprocResult(code={self.code}, out={self.out[-1500:]!r}, err={self.err[-1500:]!r})"


@pytest.fixture
def forge_inproc(capsys):
    """Run ``forge`` through its entry point in this process (same parser, handlers and error
    printing as the installed command, without a subprocess's import time):
    ``forge_inproc("attack", "recon", ...)``. Usage errors give argparse's exit code."""
    from forge_secure.cli import main

    def run(*args) -> InprocResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        cap = capsys.readouterr()
        return InprocResult(code, cap.out, cap.err)

    return run


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def forge_cli(tmp_path_factory):
    """Run the real ``forge`` command in a subprocess: ``forge_cli("train", "--site", ...)``.

    Returns a CliResult with ``code``, ``out`` and ``err``. FORGE_HOME points at a fresh
    temporary directory so ledgers, replay stores and caches never touch the user's.
    """
    home = tmp_path_factory.mktemp("forge-home")

    def run(*args: str, cwd: str | Path | None = None, env: dict | None = None, timeout: int = 600) -> CliResult:
        full_env = dict(os.environ, FORGE_HOME=str(home), COLUMNS="200")
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "forge_secure.cli", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=full_env,
            timeout=timeout,
        )
        return CliResult(proc)

    run.home = home
    return run


def assert_clean_error(result: CliResult, *words: str) -> None:
    """A user error: exit 2, one short message on stderr naming the problem, no traceback."""
    assert result.code == 2, result
    assert "Traceback" not in result.err and "Traceback" not in result.out, result
    text = (result.err + result.out).lower()
    for w in words:
        assert w.lower() in text, (w, result)


# --------------------------------------------------------------------------- issue 12: replay worlds and liars

REPLAY_SITE = "site-1"


def build_replay_consortium(root, name: str, *, maintainer: bool = False, canaries: int = 64) -> dict:
    """A consortium with real keys: an admin-signed roster (recipients: the auditor, the site, and
    the maintainer when asked) listing the site and the auditor, and an auditor canary grant to the
    site. Returns ``{"root", "keys", "roster", "record", "record_path", "grant"}``."""
    import json
    import time

    from forge_secure.crypto.keys import load_public_key, load_signing_key, new_keys
    from forge_secure.crypto.roster import Recipient, add_site_key, init_roster, sign_roster
    from forge_secure.plugins.data import load_data
    from forge_secure.privacy.canaries import issue_record, write_grant

    site, day = REPLAY_SITE, 86400
    parties = ("admin", site, "auditor", "maintainer" if maintainer else "stranger")
    keys = {who: new_keys(who, root / "keys" / who) for who in parties}
    now = int(time.time())
    roster = root / "roster.json"
    recipients = [
        Recipient.from_public(load_public_key(keys["auditor"].public), "auditor"),
        Recipient.from_public(load_public_key(keys[site].public), "site"),
    ]
    if maintainer:
        recipients.append(Recipient.from_public(load_public_key(keys["maintainer"].public), "consortium"))
    init_roster(roster, name, [load_public_key(keys["admin"].public)], expires=now + 90 * day, recipients=recipients)
    for who in (site, "auditor"):
        add_site_key(roster, load_public_key(keys[who].public), not_before=now - day, not_after=now + 365 * day)
    sign_roster(roster, load_signing_key(keys["admin"].signing))
    record = issue_record(site, canaries, load_data(f"bundled:{site}"))
    rec_path = root / "auditor-record.json"
    rec_path.write_text(json.dumps(record))
    grant = write_grant(
        record, signer=load_signing_key(keys["auditor"].signing), site_key=keys[site].public, out=root / "grant.forge", roster=roster
    )
    return {"root": root, "keys": keys, "roster": roster, "record": record, "record_path": rec_path, "grant": grant}


def make_liar(
    world: dict, name: str, *, claimed_cfg: dict, train_cfg: dict, lie_data=None, envelope_recipe: str = "claimed", ledger: bool = False
):
    """A self-consistent lying plugin of ``world``'s site, at full strength: forge.json (and, with
    ``ledger``, the ledger entry) come from a real honest run of ``claimed_cfg`` on the honest data
    with the same secret, and say ``randomness.source = "os"``; the weights come from the run the
    liar really did (``train_cfg`` on ``lie_data(site_data, canaries)``); the envelope carries the
    claimed recipe (or, with ``envelope_recipe="true"``, the true one) and the real secret.
    Returns ``(released plugin dir, envelope, ledger root)``."""
    import json
    import shutil

    from forge_secure.fileio import sha256_file
    from forge_secure.plugins.data import load_data
    from forge_secure.privacy import Ledger, TrainConfig, train_plugin
    from forge_secure.privacy.canaries import included_canaries
    from forge_secure.privacy.randomness import fresh_secret
    from forge_secure.privacy.replay import build_recipe, envelope_path, write_replay_envelope

    site = REPLAY_SITE
    root = world["root"] / "liars" / name
    root.mkdir(parents=True)
    site_data = load_data(f"bundled:{site}")
    cset = included_canaries(world["record"])
    claimed_data = site_data.concat(cset, name=site_data.name)
    real_data = lie_data(site_data, cset) if lie_data else claimed_data
    secret = fresh_secret()
    canaries = {"grant_id": world["record"]["grant_id"], "count": len(cset), "digest": cset.digest()}
    commitment = {"canaries": {"count": len(cset), "issuer": "auditor", "grant_id": canaries["grant_id"]}}
    led = Ledger.open(site, f"breast-cancer/{site}", None, root=root / "ledgers") if ledger else None
    shown = train_plugin(
        TrainConfig(**claimed_cfg), claimed_data, site=site, secret=secret, commitment=commitment, out=root / "released", ledger=led
    )
    real = train_plugin(TrainConfig(**train_cfg), real_data, site=site, secret=secret, commitment=commitment, out=root / "real")
    shutil.copy(root / "real" / "adapter_model.safetensors", root / "released" / "adapter_model.safetensors")
    meta = json.loads((root / "released" / "forge.json").read_text())
    meta["dp"]["randomness"]["source"] = "os"  # the liar says what an honest run says
    meta["adapter"]["sha256"] = sha256_file(root / "released" / "adapter_model.safetensors")
    (root / "released" / "forge.json").write_text(json.dumps(meta))
    if envelope_recipe == "claimed":
        shown.secret = secret
        recipe = build_recipe(shown, TrainConfig(**claimed_cfg), source={"spec": f"bundled:{site}"}, data=claimed_data, canaries=canaries)
    else:  # the truth in the envelope, the lie in forge.json
        real.secret = secret
        recipe = build_recipe(real, TrainConfig(**train_cfg), source={"spec": f"bundled:{site}"}, data=real_data, canaries=canaries)
        recipe["plugin"]["adapter_sha256"] = meta["adapter"]["sha256"]
    env = write_replay_envelope(
        recipe,
        signer=world["keys"][site].signing,
        auditor=world["keys"]["auditor"].public,
        out=envelope_path(root / "released"),
        roster=world["roster"],
    )
    return root / "released", env, root / "ledgers"


@pytest.fixture(scope="session")
def replay_tools():
    """``build_replay_consortium`` and ``make_liar`` for the tests of issue 12 (test files do not import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(build=build_replay_consortium, liar=make_liar, site=REPLAY_SITE)
