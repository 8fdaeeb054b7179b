"""kill -9 of a merge that opened sealed bundles (issue 16, item 3): the decrypted plugins are
in a private scratch directory (``FORGE_HOME/partial/.forge-partial.merge-inputs.*.part``,
mode 0700), never in /tmp, and the next command that opens a bundle or makes a scratch
directory removes what the killed process left.

A real child process opens bundles with ``forge_secure.merge.io.open_inputs`` (what ``forge
merge``, ``forge mix``, ``forge he encrypt`` and ``forge he aggregate`` do) and is killed
with SIGKILL: once while it holds the decrypted plugins (deterministic), and, in the slow
test, at random points of the opening.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forge_secure.fileio import PARTIAL_PREFIX, scratch_root

CHILD = """
import sys, time
from forge_secure.crypto import _time, load_decryption_key
_time.now = lambda: int(sys.argv[3])  # the test world's fixed clock
from forge_secure.merge.io import open_inputs
with open_inputs(sys.argv[4:], key=load_decryption_key(sys.argv[1]), roster=sys.argv[2]) as dirs:
    print("ready", *dirs, flush=True)
    time.sleep(600)
"""


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[3])
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def _child(world, kit, bundles) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(world.keys["consortium"].decryption), str(world.roster), str(kit.NOW), *map(str, bundles)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _partials() -> list[Path]:
    return [p for p in scratch_root().iterdir() if p.name.startswith(PARTIAL_PREFIX)]


def _tmp_merge_dirs() -> set[str]:
    import tempfile

    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("forge-merge-")}


def test_kill_9_while_holding_decrypted_inputs(world, kit):
    world.trusted()  # pins the roster in this FORGE_HOME (the child shares it)
    before_tmp = _tmp_merge_dirs()
    for next_run in ("open", "merge"):
        bundles = [world.seal(f"{next_run}-{i}.forge") for i in range(2)]
        proc = _child(world, kit, bundles)
        line = proc.stdout.readline()
        assert line.startswith("ready"), (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = _partials()
        assert len(left) == 1 and left[0].name.startswith(PARTIAL_PREFIX + "merge-inputs.")
        assert stat.S_IMODE(left[0].stat().st_mode) == 0o700  # decrypted data never readable by others
        opened = Path(line.split()[1])
        assert opened.parent == left[0] and (opened / "adapter_model.safetensors").is_file()
        assert _tmp_merge_dirs() == before_tmp  # nothing in /tmp
        # the next run of a command that writes there removes it
        if next_run == "open":
            world.open(world.seal("other.forge"), out="inbox/next")
        else:
            from forge_secure.merge.io import open_inputs

            with open_inputs([world.plugin]) as dirs:
                assert dirs == [world.plugin]
        assert _partials() == [], _partials()


def test_scratch_removed_after_a_normal_merge_and_after_an_error(world, kit, monkeypatch):
    from forge_secure.crypto import _time
    from forge_secure.merge.io import open_inputs

    monkeypatch.setattr(_time, "now", lambda: kit.NOW)  # open_inputs opens at "now": the world's fixed clock

    world.trusted()
    bundle = world.seal("ok.forge")
    with open_inputs([bundle], key=world.decryption(), roster=world.roster) as dirs:
        held = dirs[0].parent
        assert held.parent == scratch_root() and stat.S_IMODE(held.stat().st_mode) == 0o700
    assert not held.exists() and _partials() == []
    with pytest.raises(RuntimeError), open_inputs([world.seal("err.forge")], key=world.decryption(), roster=world.roster):
        raise RuntimeError("the merge failed")
    assert _partials() == []


@pytest.mark.slow
def test_kill_9_at_random_points_of_opening_inputs(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=60_000)  # ~3.8 MB payload per bundle
    world.trusted()
    rng = random.Random(16)  # the kill points only
    t0 = time.perf_counter()
    proc = _child(world, kit, [world.seal("calibrate.forge")])
    assert proc.stdout.readline().startswith("ready")
    full = time.perf_counter() - t0
    proc.kill()
    proc.wait()
    for i in range(10):
        proc = _child(world, kit, [world.seal(f"k{i}-a.forge"), world.seal(f"k{i}-b.forge")])
        time.sleep(rng.uniform(0.0, full * 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for p in _partials():  # whatever was left is private
            assert stat.S_IMODE(p.stat().st_mode) == 0o700
        world.open(world.seal(f"next-{i}.forge"), out=f"inbox/next-{i}")
        assert _partials() == []
