"""kill -9 at random points of `open` (issue 16): never a duplicate acceptance, never plaintext
left after the next run.

Each trial seals a fresh bundle, starts a real process that opens it, kills it with SIGKILL
after a random delay (anywhere from before the roster check to after the store write), then
runs `open` of the same bundle again into another directory (the next run). Afterwards:
exactly one of the two outputs holds the plugin (the first if its rename happened, else the
second: never both, never neither), no partial directory (decrypted data) is left, and the
replay store holds no pending record.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forge_secure.crypto import BundleError, ReplayStore
from forge_secure.fileio import PARTIAL_PREFIX

CHILD = """
import sys
from forge_secure.crypto import load_decryption_key, open_bundle
bundle, key, roster, out, now = sys.argv[1:6]
open_bundle(bundle, load_decryption_key(key), roster, out, now=int(now))
print("opened", flush=True)
"""


def _delivered(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _trials(world, kit, count: int, seed: int) -> dict:
    rng = random.Random(seed)  # the kill points only; nothing secret
    inbox = world.root / "inbox"
    inbox.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")]))
    # the time of one whole open in a child process, to spread the kill points over it
    b0 = world.seal("calibrate.forge")
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(b0),
            str(world.keys["consortium"].decryption),
            str(world.roster),
            str(inbox / "calibrate"),
            str(kit.NOW),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    full = time.perf_counter() - t0
    stats = {"killed_before_delivery": 0, "killed_after_delivery": 0, "completed": 0}
    for i in range(count):
        bundle = world.seal(f"t{i}.forge")
        first, second = inbox / f"first-{i}", inbox / f"second-{i}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(bundle),
                str(world.keys["consortium"].decryption),
                str(world.roster),
                str(first),
                str(kit.NOW),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.0, full * 1.1))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        completed = b"opened" in out
        # the next run: open the same bundle into another directory of the same inbox
        try:
            world.open(bundle, out=f"inbox/second-{i}")
            second_ok = True
        except BundleError as e:
            assert e.code == "bundle.replay", e
            second_ok = False
        delivered = [_delivered(first), _delivered(second)]
        assert delivered.count(True) == 1, (i, delivered, completed)  # never twice, never lost
        assert second_ok == delivered[1]
        assert not [p for p in inbox.iterdir() if p.name.startswith(PARTIAL_PREFIX)], list(inbox.iterdir())
        assert not ReplayStore()._load()["pending"]
        key = "completed" if completed else ("killed_after_delivery" if delivered[0] else "killed_before_delivery")
        stats[key] += 1
    return stats


def test_kill_open_at_random_points_quick(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=20_000)  # ~1.3 MB payload, 320 chunks of 4 KiB
    stats = _trials(world, kit, 3, seed=7)
    assert sum(stats.values()) == 3


@pytest.mark.slow
def test_kill_open_at_random_points_50_trials(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=60_000)  # ~3.8 MB payload
    stats = _trials(world, kit, 50, seed=2026)
    assert sum(stats.values()) == 50
    assert stats["killed_before_delivery"] > 0  # the kills did land inside open
