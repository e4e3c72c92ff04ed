#!/usr/bin/env python3
"""Container runtime benchmark: a fresh container per rollout against the pool runtime.

    .venv/bin/python bench/container.py [--image TAG] [--samples 15] [--rollouts 40]

Without ``--image`` it builds one with ``hud build`` (``bench/eval_env.py``, the trivial
``count_letter`` environment, FROM ``$HUD_BASE_IMAGE``, default localhost/hud-base:bookworm).
Stdout: one JSON line per measurement; progress on stderr. Lines:

* ``C1.fresh_<runtime>``: from asking for an environment (``runtime.open`` entered) to the
  prompt (``client.start`` returned), one rollout at a time, then grade and teardown.
  ``container`` starts a container per sample; ``container_warm`` (``warm=1``) finds one
  started, as ``pool`` finds a forked worker (both waited for before each sample).
* ``C2.eval_<runtime>``: ``oracle`` over ``--rollouts`` distinct tasks with
  ``Taskset.run`` at ``--width`` at once (``container_warm``: ``--width`` warm ones, and
  ``--width`` starting at once); rollouts/s over the whole call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_env  # bench/eval_env.py: the trivial environment
from common import emit, logger, stats

from hud.agents import create_agent
from hud.eval import PoolRuntime, Runtime, Taskset
from hud.eventloop import run as run_on_loop
from hud.runtimes.container import ContainerRuntime

ROOT = Path(__file__).resolve().parent.parent
log = logger("container")


def build_image() -> str:
    base = os.environ.get("HUD_BASE_IMAGE", "localhost/hud-base:bookworm")
    log(f"hud build (bench/eval_env.py FROM {base}) ...")
    proc = subprocess.run(
        [sys.executable, "-m", "hud", "build", str(ROOT), "--build-arg", f"BASE_IMAGE={base}",
         "--build-arg", "ENV_PATH=bench/eval_env.py"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    return proc.stdout.strip()


def make_runtime(kind: str, image: str, width: int) -> Runtime:
    """``pool`` of ``width`` workers; ``container`` (no warm ones) or ``container_warm``
    (``width`` warm ones), starting at most ``width`` at once."""
    if kind == "pool":
        return PoolRuntime(f"{eval_env.__file__}:env", size=width, solutions=True)
    warm = width if kind == "container_warm" else 0
    return ContainerRuntime(image, solutions=True, warm=warm, max_starting=width)


async def wait_ready(runtime: Runtime) -> None:
    """Until the runtime holds a ready environment (a pool's forked worker, a warm container)."""
    while True:
        if isinstance(runtime, PoolRuntime):
            queues = [zygote._ready for zygote in runtime._zygotes.values()]
        else:
            queues = [runtime._ready] if isinstance(runtime, ContainerRuntime) else []
        if all(queue.qsize() >= 1 for queue in queues):
            return
        await asyncio.sleep(0.01)


async def fresh(kind: str, image: str, n: int) -> dict[str, Any]:
    runtime = make_runtime(kind, image, width=1)
    task = eval_env.count_letter()
    prompt, teardown = [], []
    async with runtime:
        for i in range(n + 1):
            if i and kind != "container":  # the runtime warms up once its first rollout began
                await wait_ready(runtime)
            t0 = time.perf_counter()
            async with runtime.open(task) as client:
                await client.start(task.id, task.args)
                t1 = time.perf_counter()
                graded = await client.grade("3")
                assert graded.reward == 1.0, graded
                t2 = time.perf_counter()
            if i:  # the first sample pays the runtime's own start (sweep, zygote, reaper)
                prompt.append((t1 - t0) * 1000)
                teardown.append((time.perf_counter() - t2) * 1000)
    return {**stats(prompt), "teardown_p50_ms": stats(teardown)["p50_ms"]}


async def throughput(kind: str, image: str, rollouts: int, width: int) -> dict[str, Any]:
    tasks = Taskset([eval_env.count_letter(word="x" * i, letter="x") for i in range(rollouts)])
    runtime = make_runtime(kind, image, width)
    t0 = time.perf_counter()
    job = await tasks.run(create_agent("oracle"), runtime=runtime, max_concurrent=width)
    elapsed = time.perf_counter() - t0
    failures = sum(run.reward != 1.0 for run in job.runs)
    return {"rollouts": rollouts, "width": width, "seconds": round(elapsed, 2),
            "rollouts_per_s": round(rollouts / elapsed, 2), "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--rollouts", type=int, default=40)
    parser.add_argument("--width", type=int, default=4)
    args = parser.parse_args()
    image = args.image or build_image()
    emit("machine", cpus=os.cpu_count(), image=image,
         engine=ContainerRuntime(image).engine.name)
    for kind in ("pool", "container", "container_warm"):
        log(f"fresh {kind} x{args.samples}")
        emit(f"C1.fresh_{kind}", runtime=kind, **run_on_loop(fresh(kind, image, args.samples)))
    for kind in ("pool", "container", "container_warm"):
        log(f"eval {kind} x{args.rollouts}")
        emit(f"C2.eval_{kind}", runtime=kind,
             **run_on_loop(throughput(kind, image, args.rollouts, args.width)))


if __name__ == "__main__":
    main()
