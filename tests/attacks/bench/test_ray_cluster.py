"""``forge bench --ray ADDRESS`` on a real two-node Ray cluster on loopback.

The head is started with ``ray start --head`` and a second node with ``ray start --address``
(both bound to 127.0.0.1, with a token made for this test: Ray's token authentication), as
separate process groups. The worker node is killed (SIGKILL to its process group) while the
grid runs; the run may finish on the head alone or stop with a clean error, and either way
the cells that finished are kept: the rerun computes only the ones that did not.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).with_name("ray"))

CONFIG = """
[bench]
seeds = [0, 1, 2, 3]
[data]
n_sites = 2
[training]
epochs = 6
batch_size = 16
[grid]
epsilon = ["inf"]
rank = [2]
lora = ["ffa"]
merge = ["none"]
attack = ["lira"]
[attack.lira]
references = 4
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a process group this test started (by its id), hard after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FORGE_HOME": str(tmp_path / "home"),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
    }
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", "--block"]
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []

    def start(name, args):
        log = open(logs / f"{name}.log", "w")
        proc = subprocess.Popen([RAY, "start", *args, *common], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        _wait_for(lambda: "Ray runtime started" in (logs / f"{name}.log").read_text() or proc.poll() is not None, 180, f"ray {name}")
        assert proc.poll() is None, (logs / f"{name}.log").read_text()[-3000:]
        return proc

    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    try:
        start("head", ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={ray_tmp}"])
        node = start("node", [f"--address=127.0.0.1:{port}"])
        yield {"address": f"127.0.0.1:{port}", "env": env, "node": node}
    finally:
        for proc in reversed(procs):
            _kill_group(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _bench(cluster, tmp_path, out: str) -> subprocess.Popen:
    (tmp_path / "bench.toml").write_text(CONFIG)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forge_secure.cli",
            "bench",
            "--config",
            str(tmp_path / "bench.toml"),
            "--out",
            str(tmp_path / out),
            "--cache",
            str(tmp_path / "cache"),
            "--ray",
            cluster["address"],
            "--workers",
            "2",
            "--json",
        ],
        env=cluster["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cells(tmp_path) -> int:
    return len(list((tmp_path / "cache" / "cells").glob("*/*.json"))) if (tmp_path / "cache" / "cells").is_dir() else 0


@pytest.mark.slow
def test_two_node_cluster_survives_losing_a_node_and_resumes(cluster, tmp_path):
    run = _bench(cluster, tmp_path, "out1")
    _wait_for(lambda: _cells(tmp_path) >= 1 or run.poll() is not None, 600, "the first finished cell")
    assert run.poll() is None, run.communicate()  # the grid is still running: kill the worker node mid-grid
    _kill_group(cluster["node"])
    out, err = run.communicate(timeout=900)
    done_before = _cells(tmp_path)
    assert run.returncode in (0, 2), err[-3000:]
    assert "Traceback" not in err
    if run.returncode == 0:  # finished on the head alone: the lost node's cells were redone there
        assert done_before == 4 and json.loads(out)["computed"] == 4
    # the rerun (head only) computes exactly the cells that had not finished
    again = _bench(cluster, tmp_path, "out2")
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["cached"] == done_before and summary["computed"] == 4 - done_before
    assert summary["rows"] == 4
