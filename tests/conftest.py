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
