"""Tasks on a Ray cluster, on long-lived actors (used by :func:`forge_secure.parallel.run_tasks`).

Each actor is a worker process holding one CPU that imports the heavy modules once
(at start with ``warm``, else with its first task) and keeps what tasks memoise (the loaded base
model) for every later task. The driver hands one task at a time to each idle actor. When
an actor dies (its node was lost, or its process crashed), the task it held goes back to
the front of the queue for another actor, and a replacement actor is started when the
cluster still has a free CPU; a task that loses its actor more than
:data:`~forge_secure.parallel.RAY_TASK_RETRIES` times, or a cluster left without any actor,
ends the run with a :class:`~forge_secure.parallel.ForgeRayError`. Tasks that finished
have returned by then (the bench stores each cell as it finishes, so a rerun resumes).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from . import progress
from .parallel import RAY_TASK_RETRIES, ForgeRayError, _call, _init_worker, _ray_module, _unwrap, check_ray_address


class RayWorker:
    """The actor class (made remote in :func:`run_on_ray`)."""

    def __init__(self, warm: Sequence[str]):
        _init_worker(warm)

    def run(self, fn: Callable[[Any], Any], item: Any) -> tuple:
        return _call(fn, item)

    def pid(self) -> int:
        import os

        return os.getpid()


def connect(address: str, workers: int | None) -> bool:
    """Join (or for ``"auto"`` start) Ray; return True when this call started the session."""
    ray = _ray_module()
    if ray.is_initialized():
        return False
    if address == "auto":
        from .parallel import default_workers

        ray.init(num_cpus=workers or max(2, default_workers()), include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        check_ray_address(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ForgeRayError(
                f"cannot join the Ray cluster at {address!r} ({e})", fix="check the address and the Ray version on the cluster"
            ) from None
    return True


def _lost_errors(ray) -> tuple[type[BaseException], ...]:
    ex = ray.exceptions
    return tuple(
        getattr(ex, n)
        for n in (
            "RayActorError",
            "ActorDiedError",
            "ActorUnavailableError",
            "WorkerCrashedError",
            "NodeDiedError",
            "ObjectLostError",
            "OwnerDiedError",
            "LocalRayletDiedError",
        )
        if hasattr(ex, n)
    )


def _free_cpus(ray) -> float:
    try:
        return float(ray.available_resources().get("CPU", 0.0))
    except Exception:  # noqa: BLE001 - a cluster in trouble: assume no room
        return 0.0


def run_on_ray(
    fn: Callable[[Any], Any], items: list[Any], address: str, workers: int | None, description: str, warm: Sequence[str] = ()
) -> list[Any]:
    ray = _ray_module()
    started = connect(address, workers)
    actors: list = []
    try:
        Actor = ray.remote(num_cpus=1, max_restarts=0)(RayWorker)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers or cpus, len(items)))
        actors = [Actor.remote(tuple(warm)) for _ in range(n)]
        idle = list(actors)
        queue = deque(range(len(items)))
        running: dict = {}
        losses: Counter = Counter()
        lost = _lost_errors(ray)
        results: list[Any] = [None] * len(items)
        with progress.task(description + " (ray)", total=len(items)) as advance:
            while queue or running:
                while queue and idle:
                    actor, i = idle.pop(), queue.popleft()
                    running[actor.run.remote(fn, items[i])] = (actor, i)
                if not running:
                    raise ForgeRayError(
                        "the Ray cluster has no worker left to run the remaining tasks",
                        fix="add a node (ray start --address HEAD:PORT) and rerun: finished work is kept",
                        code="parallel.ray_workers_lost",
                    )
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    actor, i = running.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except lost as e:
                        losses[i] += 1
                        if losses[i] > RAY_TASK_RETRIES:
                            raise ForgeRayError(
                                f"task {i} lost its Ray worker {losses[i]} times ({type(e).__name__})",
                                fix="check the cluster's nodes and rerun: finished work is kept",
                                code="parallel.ray_workers_lost",
                            ) from None
                        queue.appendleft(i)
                        if _free_cpus(ray) >= 1:  # a replacement where the cluster still has room
                            new = Actor.remote(tuple(warm))
                            actors.append(new)
                            idle.append(new)
                        continue
                    idle.append(actor)
                    results[i] = _unwrap(outcome)
                    advance(1)
        return results
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead
                pass
        if started:
            ray.shutdown()
