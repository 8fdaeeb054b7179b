"""A small task runner: the same function over a list of inputs, in parallel.

- ``workers=1`` (and no Ray): in this process, one task after the other (the baseline).
- otherwise (the default): local worker processes from
  ``concurrent.futures.ProcessPoolExecutor`` with the *spawn* start method (fork is unsafe
  with torch's and Ray's threads), each limited to one torch/BLAS thread;
- ``ray="auto"``: starts a local Ray (``ray.init()``) for the run and shuts it down after;
  ``ray="host:port"`` or ``"ray://host:port"``: connects to that cluster after checking
  that the address answers, so a wrong address is a clear error rather than a hang.

Results come back in the order of the inputs. A progress bar (``forge_secure.progress``)
advances as tasks finish. A :class:`~forge_secure.errors.ForgeError` raised in a worker is
re-raised here with its type, message, fix and reason code intact; the first failure
cancels the tasks that have not started.

The function and its inputs must be importable/picklable by the workers (define the
function at module top level). Pickle is used here only for in-memory messages between
our own processes, never to read files.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import socket
import sys
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

from . import progress
from .errors import ForgeDependencyError, ForgeError, ForgeValueError

_RAY_DEFAULT_PORT = 6379


class ForgeRayError(ForgeError, ConnectionError):
    """A Ray cluster address that cannot be reached or used."""

    default_code = "parallel.ray_unreachable"

    def __init__(self, message: str, *, fix: str | None = None, code: str | None = None):
        ForgeError.__init__(self, message, fix=fix, code=code)


def _init_worker() -> None:
    """One BLAS/torch thread per worker. Set through the environment so torch, imported
    later by the task itself, starts with one thread; importing it here would make every
    worker pay torch's import time even for tasks that never use it."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _call(fn: Callable[[Any], Any], item: Any) -> tuple:
    """Run one task; carry a ForgeError back as data so its code and fix survive the trip."""
    try:
        return ("ok", fn(item))
    except ForgeError as e:
        return ("forge_error", type(e), e.message, e.fix, e.code)


def _call_in_worker(fn: Callable[[Any], Any], item: Any) -> tuple:
    _init_worker()
    return _call(fn, item)


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
    return max(1, os.cpu_count() or 1)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`ForgeRayError` unless ``host:port`` accepts a TCP connection."""
    text = address if "://" in address else f"tcp://{address}"
    try:
        parsed = urlparse(text)
        host, port = parsed.hostname, parsed.port or _RAY_DEFAULT_PORT
    except ValueError:
        host, port = None, None
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
) -> list[Any]:
    """``[fn(x) for x in items]``, in parallel; see the module docstring for the modes."""
    items = list(items)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ForgeValueError(f"workers={workers!r} must be a positive integer", fix="use e.g. --workers 2", code="parallel.workers")
    if not items:
        return []
    if ray:
        return _run_ray(fn, items, ray, workers, description)
    n = min(workers or default_workers(), len(items))
    with progress.task(description, total=len(items)) as advance:
        if n == 1:
            out = []
            for item in items:
                out.append(_unwrap(_call(fn, item)))
                advance(1)
            return out
        results: list[Any] = [None] * len(items)
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(_call, fn, item): i for i, item in enumerate(items)}
            try:
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = _unwrap(fut.result())
                    advance(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return results


def _run_ray(fn, items, address: str, workers: int | None, description: str) -> list[Any]:
    try:
        import ray as ray_mod
    except ImportError as e:  # pragma: no cover - ray is a dependency
        raise ForgeDependencyError("Ray is not installed", fix="pip install 'ray[default]'") from e
    started = False
    if not ray_mod.is_initialized():
        if address == "auto":
            ray_mod.init(
                num_cpus=workers or default_workers(),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            check_ray_address(address)
            try:
                ray_mod.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ForgeRayError(f"cannot join the Ray cluster at {address!r} ({e})", fix="check the address and the Ray version on the cluster") from None
        started = True
    try:
        remote = ray_mod.remote(num_cpus=1)(_call_in_worker)
        pending = {remote.remote(fn, item): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        with progress.task(description + " (ray)", total=len(items)) as advance:
            waiting = list(pending)
            while waiting:
                done, waiting = ray_mod.wait(waiting, num_returns=1)
                for ref in done:
                    results[pending[ref]] = _unwrap(ray_mod.get(ref))
                    advance(1)
        return results
    finally:
        if started:
            ray_mod.shutdown()
