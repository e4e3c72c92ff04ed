"""The part of the ``ray`` runtime that runs on a cluster node: one whole rollout.

Imported by the Ray worker process that runs :func:`run_remote`; it needs no Ray itself.

Isolation ``process`` (the default): the rollout's environment is a fresh process, forked for
it by a pool (:class:`~hud.runtimes.pool.PoolRuntime`, one worker kept ready) that the Ray
worker keeps between rollouts, exactly as the local default serves rollouts. The pool's zygote
is an asyncio subprocess, which belongs to the loop that started it and is killed when that
loop closes; so the Ray worker runs every such rollout on one event loop, in a thread of its
own for the worker's life, instead of an ``asyncio.Runner`` per call. When the Ray worker
exits, the zygote sees its channel end and exits, and its workers follow it.

Isolation ``inprocess``: the environment is loaded once per Ray worker and served in its
process (:class:`~hud.runtimes.inprocess.InProcessRuntime`), on a loop made for the call.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ..environment import Environment, Task
    from .base import Runtime
    from .pool import PoolRuntime

_ENVIRONMENTS: dict[str, Environment] = {}  # loaded once per Ray worker process, by target
_POOLS: dict[tuple[str, bool], PoolRuntime] = {}  # by (target, solutions); on the loop below


def run_remote(target: str, task: dict[str, Any], agent: Any, group_id: str,
               timeout: float | None, max_steps: int | None, solutions: bool,
               isolation: str = "process") -> bytes:
    """Run ``task`` of the environment at ``target`` with ``agent``, its environment isolated
    as ``isolation`` says; returns the trace (msgpack), whatever happened to the rollout. The
    trace's first step names the node and the Ray worker process that ran it."""
    from ..eventloop import loop_factory

    rollout = _rollout(target, task, agent, group_id, timeout, max_steps, solutions,
                       isolation)
    if isolation == "inprocess":
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(rollout)
    future = asyncio.run_coroutine_threadsafe(rollout, _worker_loop())
    try:
        return future.result()
    except BaseException:
        # ray.cancel interrupts this thread: cancel the rollout on its loop as well, so that
        # its environment process is stopped rather than left serving no one.
        future.cancel()
        raise


@functools.cache
def _worker_loop() -> asyncio.AbstractEventLoop:
    """The event loop this Ray worker runs isolated rollouts on, started on first use."""
    from ..eventloop import loop_factory

    loop = (loop_factory() or asyncio.new_event_loop)()
    threading.Thread(target=loop.run_forever, name="hud-ray-rollouts", daemon=True).start()
    return loop


def _runtime(target: str, solutions: bool, isolation: str) -> Runtime:
    from .inprocess import InProcessRuntime
    from .pool import PoolRuntime

    if isolation == "inprocess":
        return InProcessRuntime(solutions=solutions)
    pool = _POOLS.get((target, solutions))
    if pool is None:
        # One rollout at a time runs in a Ray worker: one ready process hides the fork.
        pool = _POOLS[target, solutions] = PoolRuntime(target, size=1, solutions=solutions)
    return pool


def _task(target: str, row: dict[str, Any]) -> Task:
    from ..environment import Task
    from ..loader import load_environment

    env = _ENVIRONMENTS.get(target)
    if env is None:
        env = _ENVIRONMENTS[target] = load_environment(target)
    return Task(env=row["env"], id=row["id"], args=row["args"], slug=row["slug"],
                template=env.templates[row["id"]])


async def _rollout(target: str, row: dict[str, Any], agent: Any, group_id: str,
                   timeout: float | None, max_steps: int | None, solutions: bool,
                   isolation: str) -> bytes:
    import ray

    from ..eval.rollout import rollout

    task = _task(target, row)
    node = ray.get_runtime_context().get_node_id()

    def placed(run: Any) -> None:
        run.record("placement", node=node, host=socket.gethostname(), pid=os.getpid(),
                   isolation=isolation)

    runtime = _runtime(target, solutions, isolation)
    try:
        run = await rollout(task, agent, runtime, group_id=group_id, timeout=timeout,
                            max_steps=max_steps, on_start=placed)
    finally:
        if isolation == "inprocess":
            await runtime.aclose()  # its server lives on this call's loop; the pool stays
    return msgspec.msgpack.encode(run.trace)
