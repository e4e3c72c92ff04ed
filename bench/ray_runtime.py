"""The ray runtime against the pool on this machine: ``oracle`` over the trivial taskset.

Runtimes (``KINDS``): ``pool`` (the local default); ``ray`` (each rollout's environment a
fresh process, from a pool the Ray worker keeps); ``ray_inprocess`` (``ray?isolation=
inprocess``: the environment in the Ray worker's process); and ``ray_max_calls_1``, the
alternative not taken for isolation: a new Ray worker process per rollout (Ray's
``max_calls=1``), the environment in process in it (``--n-fresh`` rollouts: it is slow).

* ``R1.throughput_<kind>``: n distinct tasks, ``--concurrency`` at once: rollouts/s.
* ``R2.sequential_<kind>``: m tasks one at a time: wall time per rollout (p50 of the
  driver's view), whose difference between runtimes is the overhead per rollout.
* ``R3.memory_ray``: right after ``ray``'s R1, the PSS of each Ray worker that keeps a pool,
  and of that pool (its zygote and the one worker it keeps ready). Measured then, since
  Ray may hand those workers the other kinds' tasks (a ``max_calls=1`` task ends its worker).

The kinds run interleaved (R2 of each, then R1 of each), ``--rounds`` times, so that the
load of a shared machine weighs on all of them alike. Ray runs as a local cluster started in
this process (``ray.init(num_cpus=…)``), the smallest setting that still goes through Ray's
scheduler, object store and worker pool.
``.venv/bin/python bench/ray_runtime.py [--n 200] [--sequential 30] [--concurrency 4]``
(not ``bench/ray.py``: a script of that name would shadow Ray itself).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_env
from common import emit, logger, stats

from hud.agents import create_agent
from hud.eval.taskset import Taskset
from hud.runtimes import PoolRuntime, Runtime
from hud.runtimes.ray import RayRuntime

log = logger("ray")
KINDS = ("pool", "ray", "ray_inprocess", "ray_max_calls_1")
serial = itertools.count()  # every batch gets tasks of its own: no cache hit between them


class FreshRayWorker(RayRuntime):
    """A new Ray worker process for every rollout (``max_calls=1``), environment in it."""

    def _init(self) -> Any:
        import ray

        from hud.runtimes.ray_worker import run_remote

        super()._init()
        return ray.remote(max_retries=0, max_calls=1)(run_remote)


def tasks(n: int, tag: str) -> Taskset:
    return Taskset([eval_env.count_letter(word=f"{tag}{i}straw", letter="r")
                    for i in range(n)], name=f"bench-{tag}")


def runtime(kind: str, concurrency: int) -> Runtime:
    if kind == "pool":
        return PoolRuntime(size=concurrency, solutions=True)
    if kind == "ray_max_calls_1":
        return FreshRayWorker(solutions=True, isolation="inprocess")
    return RayRuntime(solutions=True,
                      isolation="inprocess" if kind == "ray_inprocess" else "process")


async def batch(kind: str, n: int, concurrency: int) -> list[float]:
    """Finish times (perf_counter) of ``n`` rollouts, ``concurrency`` at once, each one
    checked for reward 1."""
    finished: list[float] = []
    async with runtime(kind, concurrency) as chosen:
        job = await tasks(n, f"{kind}{next(serial)}x{concurrency}").run(
            create_agent("oracle"), runtime=chosen, max_concurrent=concurrency,
            progress=lambda run: finished.append(time.perf_counter()))
    assert job.reward == 1.0 and not job.errors, [r.error for r in job.errors][:1]
    return finished


async def throughput(kind: str, n: int, concurrency: int) -> None:
    start = time.perf_counter()
    finished = await batch(kind, n, concurrency)
    wall = time.perf_counter() - start
    first = finished[concurrency - 1]  # steady state: after the first wave (and start-up)
    steady = (len(finished) - concurrency) / (finished[-1] - first)
    emit(f"R1.throughput_{kind}", n=n, max_concurrent=concurrency, wall_s=round(wall, 3),
         rollouts_per_s=round(n / wall, 2), steady_rollouts_per_s=round(steady, 2))


async def sequential(kind: str, m: int) -> None:
    finished = await batch(kind, m + 2, 1)
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(finished[2:])]
    emit(f"R2.sequential_{kind}", **stats(gaps, 1))


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory() -> None:
    """PSS of the Ray workers that keep a pool, and of their pools' processes."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # it exited meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
        commands[int(stat.parent.name)] = command

    def tree(pid: int) -> list[int]:
        return [pid, *(p for child in children.get(pid, []) for p in tree(child))]

    workers = [pid for pid, command in commands.items() if command.startswith("ray::")
               and any("hud.runtimes.zygote" in commands.get(child, "")
                       for child in children.get(pid, []))]
    pools = [sum(pss_mb(p) for p in tree(worker)[1:]) for worker in workers]
    emit("R3.memory_ray", ray_workers=len(workers),
         ray_worker_pss_mb=round(sum(map(pss_mb, workers)) / max(len(workers), 1), 1),
         pool_pss_mb=round(sum(pools) / max(len(pools), 1), 1))


async def main(args: argparse.Namespace) -> None:
    import ray

    ray.init(num_cpus=args.concurrency, object_store_memory=80 * 2**20,
             include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    log(f"ray {ray.__version__}: {ray.cluster_resources()}")
    fresh = {"ray_max_calls_1": (args.n_fresh, args.n_fresh // 2)}
    for _ in range(args.rounds):
        for kind in KINDS:
            await sequential(kind, fresh.get(kind, (0, args.sequential))[1])
        for kind in KINDS:
            await throughput(kind, fresh.get(kind, (args.n, 0))[0], args.concurrency)
            if kind == "ray":
                memory()
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--n-fresh", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
