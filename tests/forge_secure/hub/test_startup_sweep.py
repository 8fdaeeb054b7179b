"""Start-up of the hub removes the partial outputs a killed hub left in its store, roster
state and key directory (issue 16 item 3), and never one that a live process still writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from forge_secure.fileio import PARTIAL_PREFIX

# a process that starts receiving an upload into the store and stays in the middle of it
RECEIVER = """
import sys, time
from forge_secure.hub.store import Store
cm = Store(sys.argv[1]).incoming()  # kept referenced: the upload stays open
inc = cm.__enter__()
inc.write(b"patient-derived ciphertext " * 4096)
inc.file.flush()
print(inc.path, flush=True)
time.sleep(600)
"""


def _receiver(store: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(store)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the receiving process did not start"
    return proc, Path(line)


def test_leftover_partials_removed_at_start_live_upload_kept(tmp_path, consortium, hubkit):
    make_hub = hubkit.make_hub
    root = tmp_path / "hub"
    store = root / "store"
    db_url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    make_hub(root, consortium, db_url).engine.dispose()  # the hub exists (store, keys, roster state)

    dead, dead_path = _receiver(store)
    os.kill(dead.pid, signal.SIGKILL)  # killed mid-upload: its partial file stays, unlocked
    dead.wait()
    live, live_path = _receiver(store)  # a sibling hub process receiving right now
    try:
        assert dead_path.name.startswith(PARTIAL_PREFIX) and dead_path.parent == store / "incoming"
        assert dead_path.exists() and live_path.exists()
        # partial outputs of atomic writes that a killed hub left in its roster state and key directory
        stale = [store / "roster-state" / f"{PARTIAL_PREFIX}medforge.json.x1.part", root / "hub-keys" / f"{PARTIAL_PREFIX}log.key.x2.part"]
        for p in stale:
            p.write_bytes(b"partial")

        hub = make_hub(root, consortium, db_url)  # start-up
        hub.engine.dispose()
        assert not dead_path.exists()
        assert live_path.exists() and live_path.stat().st_size == len(b"patient-derived ciphertext " * 4096)
        assert not any(p.exists() for p in stale)
        assert set(hub.swept) == {dead_path, *stale}
    finally:
        live.kill()
        live.wait()
    hub = make_hub(root, consortium, db_url)  # the next start after the sibling died
    hub.engine.dispose()
    assert hub.swept == [live_path] and not live_path.exists()
    assert list((store / "incoming").iterdir()) == []


def test_upload_file_is_partial_named_and_removed_after_use(tmp_path, consortium, hubkit):
    hub = hubkit.make_hub(tmp_path / "hub", consortium, f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    try:
        with hub.store.incoming() as inc:
            assert inc.path.name.startswith(PARTIAL_PREFIX)
            inc.write(b"abc")
        assert list((hub.store.root / "incoming").iterdir()) == []
    finally:
        hub.engine.dispose()
