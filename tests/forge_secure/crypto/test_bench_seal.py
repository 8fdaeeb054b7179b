"""benchmarks/bench_seal.py runs to the end for any choice of sizes: the peak-memory payload may
be one of the timed sizes and the size of the first-call children (``--rss-size 16`` once
crashed with FileExistsError), and the plugin it seals records its adapter digest, so the
timed seal does the adapter check every real plugin gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_benchmark_runs_when_the_memory_size_is_a_timed_size_and_the_first_call_size():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--sizes", "1", "--rss-size", "1", "--cold-size", "1", "--repeats", "1", "--small-repeats", "1", "--no-write"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_seal.py"), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    timed, memory = rows
    assert timed["size_mb"] == 1 and timed["repeats"] == 1 and timed["seal_ratio"] > 0 and timed["open_ratio"] > 0
    assert timed["bare_seal_ratio"] > 0  # the same bytes sealed with no adapter digest to check
    # the two-core bound: measured passes, two SHA-256 passes with the adapter check, so a lower bound
    assert set(timed["floors_ms"]) == {"sha", "aes", "read", "write"} and all(v > 0 for v in timed["floors_ms"].values())
    assert timed["fixed_ms"] > 0 and 0 < timed["bound_ratio"] < timed["bare_bound_ratio"]
    assert memory["size_mb"] == 1 and memory["cold_mb"] == 1 and memory["seal_mb"] > 0
    assert "| 1 MiB |" in proc.stdout


def test_the_benchmark_plugin_records_its_adapter_digest(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_seal import make_plugin
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from forge_secure.plugins.record import read_plugin

    plugin = make_plugin(tmp_path, 3 << 20, seed=1)
    other = make_plugin(tmp_path, 3 << 20, seed=1, name="again")  # a second plugin of the same size: no clash
    record = read_plugin(plugin, schema=False, weights=False, adapter_digest=True)
    assert record.recorded_adapter_sha256 == record.adapter_sha256 is not None
    assert (other / "adapter_model.safetensors").read_bytes() == (plugin / "adapter_model.safetensors").read_bytes()
