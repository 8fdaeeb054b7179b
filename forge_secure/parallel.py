"""A small task runner: the same function over a list of inputs, in parallel, on long-lived workers.

- ``workers=1`` (the default, and no Ray): in this process, one task after the other. It
  is the default because it was measured fastest for this toolkit's work on small machines
  (docs/benchmarks.md, "runner scaling"): reference models train batched in one process,
  and a worker process pays torch's imports and the base load before its first task.
- ``workers=N > 1``: a *persistent* pool of N local worker processes
  (:class:`WorkerPool`: ``concurrent.futures.ProcessPoolExecutor``, *spawn* start method
  (fork is unsafe with torch's and Ray's threads), one torch/BLAS thread each). A worker
  imports the heavy modules once (at start with ``warm``, else with its first task) and
  keeps what tasks memoise (e.g. the loaded base model) for every later task; the pool itself is kept for the life of this
  process, so a second ``run_tasks`` call reuses warm workers.
- ``ray="auto"``: a local Ray started for the run; ``ray="host:port"`` /
  ``"ray://host:port"``: that cluster, after checking that the address answers (a wrong
  address is a clear error, not a hang). Tasks go to long-lived Ray *actors* (one CPU
  each), which likewise import once and take many tasks. When an actor or its node dies,
  its unfinished task is handed to another actor (a replacement is started where the
  cluster has room); only when no actor can be had does the run fail, and the tasks that
  finished have already returned (the bench caches each cell, so a rerun resumes).

Results come back in the order of the inputs; a progress bar advances as tasks finish. A
:class:`~forge_secure.errors.ForgeError` raised in a worker is re-raised here with its type,
message, fix and reason code intact; the first failure cancels the tasks not started.

The function and its inputs must be importable/picklable by the workers (define the
function at module top level). Pickle is used here only for in-memory messages between
our own processes, never to read files.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import importlib
import multiprocessing
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

from . import progress
from .errors import ForgeDependencyError, ForgeError, ForgeValueError

_RAY_DEFAULT_PORT = 6379
#: modules worth importing when a worker starts (``warm=WARM_MODULES``) for torch work
WARM_MODULES = ("numpy", "torch", "peft", "opacus", "forge_secure.privacy.train", "forge_secure.plugins.bases", "attacks.references")
#: how many times a task may lose its Ray actor (node failure) before the run gives up
RAY_TASK_RETRIES = 3


class ForgeRayError(ForgeError, ConnectionError):
    """A Ray cluster address that cannot be reached or used, or a cluster that lost every worker."""

    default_code = "parallel.ray_unreachable"

    def __init__(self, message: str, *, fix: str | None = None, code: str | None = None):
        ForgeError.__init__(self, message, fix=fix, code=code)


def _init_worker(warm: Sequence[str] = ()) -> None:
    """One BLAS/torch thread per worker, then import ``warm`` (missing modules are skipped)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in warm:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _call(fn: Callable[[Any], Any], item: Any) -> tuple:
    """Run one task; carry a ForgeError back as data so its code and fix survive the trip."""
    try:
        return ("ok", fn(item))
    except ForgeError as e:
        return ("forge_error", type(e), e.message, e.fix, e.code)


def _unwrap(outcome: tuple) -> Any:
    if outcome[0] == "ok":
        return outcome[1]
    _, cls, message, fix, code = outcome
    try:
        err = cls(message, fix=fix, code=code)
    except TypeError:  # a subclass with another signature
        err = ForgeError(message, fix=fix, code=code)
    raise err


def default_workers() -> int:
    """The default worker count: 1 (in this process; see the module docstring)."""
    return 1


def _check_workers(workers: Any) -> None:
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ForgeValueError(f"workers={workers!r} must be a positive integer", fix="use e.g. --workers 2", code="parallel.workers")


class WorkerPool:
    """A persistent pool of ``workers`` local processes (spawn) that import ``warm`` once.

    ``map(fn, items)`` runs ``fn`` over ``items`` on the pool (in order, with progress and
    error forwarding); the pool stays up for further calls until :meth:`close`."""

    def __init__(self, workers: int, warm: Sequence[str] = ()):
        _check_workers(workers)
        self.workers = int(workers)
        ctx = multiprocessing.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker, initargs=(tuple(warm),))
        self.closed = False

    def warm_up(self) -> None:
        """Start every worker now (and wait until each has imported ``warm``)."""
        for f in [self._pool.submit(_noop, i) for i in range(self.workers)]:
            f.result()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], description: str = "working") -> list[Any]:
        if self.closed:
            raise ForgeValueError("the worker pool is closed", code="parallel.closed")
        items = list(items)
        results: list[Any] = [None] * len(items)
        with progress.task(description, total=len(items)) as advance:
            futures = {self._pool.submit(_call, fn, item): i for i, item in enumerate(items)}
            try:
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = _unwrap(fut.result())
                    advance(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return results

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _noop(i: int) -> int:
    return os.getpid()


_POOLS: dict[tuple, WorkerPool] = {}


def worker_pool(workers: int, warm: Sequence[str] = ()) -> WorkerPool:
    """The process-wide persistent pool of ``workers`` processes importing ``warm`` (created
    on first use, closed at exit). Workers keep the environment they were started with
    (``FORGE_HOME`` and the rest), so a changed environment gets a fresh pool and the old
    pools are closed."""
    env = hash(frozenset(os.environ.items()))
    key = (int(workers), tuple(warm), env)
    for k in [k for k in _POOLS if k[2] != env]:
        _POOLS.pop(k).close()
    pool = _POOLS.get(key)
    if pool is None or pool.closed or getattr(pool._pool, "_broken", False):
        pool = _POOLS[key] = WorkerPool(workers, warm)
    return pool


@atexit.register
def close_pools() -> None:
    """Close every persistent pool of this process."""
    for pool in list(_POOLS.values()):
        pool.close()
    _POOLS.clear()


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`ForgeRayError` unless ``host:port`` accepts a TCP connection."""
    text = address if "://" in address else f"tcp://{address}"
    try:
        parsed = urlparse(text)
        host, port = parsed.hostname, parsed.port or _RAY_DEFAULT_PORT
    except ValueError:
        host, port = None, _RAY_DEFAULT_PORT
    if not host:
        raise ForgeRayError(
            f"Ray address {address!r} is not of the form host:port or ray://host:port",
            fix="give e.g. --ray 10.0.0.5:6379, or --ray auto for a local Ray",
            code="parallel.ray_address",
        )
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise ForgeRayError(
            f"cannot reach the Ray cluster at {address!r} ({e.__class__.__name__}: {e})",
            fix="check that the head node is running (ray start --head) and the address, or use --ray auto",
        ) from None


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int | None = None,
    ray: str | None = None,
    description: str = "working",
    warm: Sequence[str] = (),
) -> list[Any]:
    """``[fn(x) for x in items]``, in parallel; see the module docstring for the modes.
    ``warm``: modules each worker imports when it starts (e.g. :data:`WARM_MODULES`)."""
    items = list(items)
    _check_workers(workers)
    if not items:
        return []
    if ray:
        from .ray_runner import run_on_ray

        return run_on_ray(fn, items, ray, workers, description, warm)
    n = min(workers or default_workers(), len(items))
    if n == 1:
        out = []
        with progress.task(description, total=len(items)) as advance:
            for item in items:
                out.append(_unwrap(_call(fn, item)))
                advance(1)
        return out
    return worker_pool(workers or n, warm).map(fn, items, description)


def _ray_module():
    try:
        import ray as ray_mod
    except ImportError as e:  # pragma: no cover - ray is a dependency
        raise ForgeDependencyError("Ray is not installed", fix="pip install 'ray[default]'") from e
    return ray_mod
