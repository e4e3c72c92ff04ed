"""The part of the ``ray`` runtime that runs on a cluster node: one whole rollout.

Imported by the Ray worker process that runs :func:`run_remote`; it needs no Ray itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

_ENVIRONMENTS: dict[str, Any] = {}  # loaded once per Ray worker process, by target


def run_remote(target: str, task: dict[str, Any], agent: Any, group_id: str,
               timeout: float | None, max_steps: int | None, solutions: bool) -> bytes:
    """Run ``task`` of the environment at ``target`` in this process with ``agent``; returns
    the trace (msgpack), whatever happened to the rollout. The trace's first step names the
    node and process that ran it."""
    from ..eventloop import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_rollout(target, task, agent, group_id, timeout, max_steps,
                                   solutions))


async def _rollout(target: str, row: dict[str, Any], agent: Any, group_id: str,
                   timeout: float | None, max_steps: int | None, solutions: bool) -> bytes:
    import os
    import socket

    import ray

    from ..environment import Task
    from ..eval.rollout import rollout
    from ..loader import load_environment
    from .inprocess import InProcessRuntime

    env = _ENVIRONMENTS.get(target)
    if env is None:
        env = _ENVIRONMENTS[target] = load_environment(target)
    template = env.templates[row["id"]]
    task = Task(env=row["env"], id=row["id"], args=row["args"], slug=row["slug"],
                template=template)
    node = ray.get_runtime_context().get_node_id()

    def placed(run: Any) -> None:
        run.record("placement", node=node, host=socket.gethostname(), pid=os.getpid())

    async with InProcessRuntime(solutions=solutions) as runtime:
        run = await rollout(task, agent, runtime, group_id=group_id, timeout=timeout,
                            max_steps=max_steps, on_start=placed)
    return msgspec.msgpack.encode(run.trace)
