"""The ray runtime against the pool on this machine: ``oracle`` over the trivial taskset.

* ``R1.throughput_<runtime>``: n distinct tasks, ``--concurrency`` at once: rollouts/s.
* ``R2.sequential_<runtime>``: m tasks one at a time: wall time per rollout (p50 of the
  driver's view), whose difference between runtimes is the ray runtime's overhead per
  rollout (a Ray task submitted, the environment loaded in a reused Ray worker, the agent
  pickled there and the trace back).

Ray runs as a local cluster started in this process (``ray.init(num_cpus=…)``), the smallest
setting that still goes through Ray's scheduler, object store and worker pool.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_env
from common import emit, logger, stats

from hud.agents import create_agent
from hud.eval.taskset import Taskset
from hud.runtimes import PoolRuntime, Runtime
from hud.runtimes.ray import RayRuntime

log = logger("ray")


def tasks(n: int, tag: str) -> Taskset:
    return Taskset([eval_env.count_letter(word=f"{tag}{i}straw", letter="r")
                    for i in range(n)], name=f"bench-{tag}")


def runtime(kind: str, concurrency: int) -> Runtime:
    if kind == "pool":
        return PoolRuntime(size=concurrency, solutions=True)
    return RayRuntime(solutions=True)


async def batch(kind: str, n: int, concurrency: int) -> list[float]:
    """Finish times (perf_counter) of ``n`` rollouts, ``concurrency`` at once, each one
    checked for reward 1."""
    finished: list[float] = []
    job = await tasks(n, f"{kind}{n}x{concurrency}").run(
        create_agent("oracle"), runtime=runtime(kind, concurrency), max_concurrent=concurrency,
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


async def main(args: argparse.Namespace) -> None:
    import ray

    ray.init(num_cpus=args.concurrency, object_store_memory=80 * 2**20,
             include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    log(f"ray {ray.__version__}: {ray.cluster_resources()}")
    for kind in ("pool", "ray"):
        await sequential(kind, args.sequential)
        await throughput(kind, args.n, args.concurrency)
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
