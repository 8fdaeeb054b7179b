"""benchmarks/bench_hub.py runs to the end with small settings and reports the two-core bound
(its push floors: each pass timed alone), so the figures in docs/benchmarks.md can be rerun."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_hub_benchmark_runs_and_reports_its_bound():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--repeats", "1", "--big-mb", "1", "--big-clients", "2", "--latency-pushes", "2", "--no-write"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_hub.py"), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for label in ("64 KiB", "1 MiB", "16 MiB", "16 MiB, hub on disk"):
        assert f"| {label} |" in proc.stdout
    bound = re.search(r"two-core bound at 16 MiB: ([0-9.]+) \(push >= ([0-9.]+) ms, verify ([0-9.]+) ms\)", proc.stdout)
    assert bound, proc.stdout[-2000:]
    ratio, push_ms, verify_ms = map(float, bound.groups())
    assert push_ms > 0 and verify_ms > 0 and abs(ratio - verify_ms / push_ms) < 0.01
    assert "all accepted" in proc.stdout
