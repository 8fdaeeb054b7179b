"""The task runner: in-process, local worker processes (spawn), Ray."""

from __future__ import annotations

import json
import math
import time

import pytest

from forge_secure import progress
from forge_secure.errors import ForgeFileError, ForgeValueError
from forge_secure.fileio import read_json_file
from forge_secure.parallel import ForgeRayError, check_ray_address, run_tasks


def test_in_process_keeps_order_and_shows_progress():
    progress.enable(True)
    try:
        assert run_tasks(math.sqrt, [16, 1, 9], workers=1) == [4.0, 1.0, 3.0]
    finally:
        progress.enable(False)
    assert run_tasks(math.sqrt, [], workers=3) == []


def test_worker_processes_keep_order_and_forward_errors(tmp_path):
    files = []
    for i in range(4):
        p = tmp_path / f"{i}.json"
        p.write_text(json.dumps({"i": i}))
        files.append(str(p))
    assert run_tasks(read_json_file, files, workers=2) == [{"i": i} for i in range(4)]
    # a ForgeError in a worker comes back with its type, reason code and fix
    with pytest.raises(ForgeFileError) as e:
        run_tasks(read_json_file, files[:1] + [str(tmp_path / "missing.json")], workers=2)
    assert e.value.code == "file.missing" and "missing.json" in str(e.value) and e.value.fix


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_count(workers):
    with pytest.raises(ForgeValueError, match="workers"):
        run_tasks(math.sqrt, [1], workers=workers)


def test_unreachable_ray_address_is_a_clear_error_and_fast():
    start = time.monotonic()
    with pytest.raises(ForgeRayError) as e:
        run_tasks(math.sqrt, [1], ray="127.0.0.1:9")
    assert time.monotonic() - start < 10
    assert "127.0.0.1:9" in str(e.value) and "--ray auto" in str(e.value)
    assert isinstance(e.value, ConnectionError)
    with pytest.raises(ForgeRayError, match="host:port"):
        check_ray_address("ray://")


@pytest.mark.slow
def test_local_ray_runs_tasks_in_order():
    assert run_tasks(math.sqrt, [25, 4, 1], workers=2, ray="auto") == [5.0, 2.0, 1.0]


def test_persistent_pool_keeps_its_workers():
    """Local workers live across calls: the second run is served by the same processes."""
    import os

    from forge_secure.parallel import _noop, close_pools, worker_pool

    try:
        first = set(run_tasks(_noop, range(4), workers=2))
        second = set(run_tasks(_noop, range(4), workers=2))
        assert os.getpid() not in first and len(first) <= 2
        assert second <= set(worker_pool(2)._pool._processes)  # the same, still running processes
        assert first <= set(worker_pool(2)._pool._processes)
    finally:
        close_pools()
    assert worker_pool(2) is not None  # a closed pool is replaced on next use
    close_pools()


def test_default_is_one_process():
    from forge_secure.parallel import default_workers

    assert default_workers() == 1


def test_changed_environment_gets_fresh_workers(monkeypatch):
    """Workers keep the environment they started with, so a changed FORGE_HOME is never served
    by workers started under the old one."""
    from forge_secure.parallel import close_pools, worker_pool

    try:
        monkeypatch.setenv("FORGE_HOME", "/tmp/forge-home-a")
        a = worker_pool(2)
        monkeypatch.setenv("FORGE_HOME", "/tmp/forge-home-b")
        b = worker_pool(2)
        assert a is not b and a.closed and not b.closed
        assert worker_pool(2) is b
    finally:
        close_pools()
