"""What every runtime is: :class:`Runtime`, the options it is built with, and the parts the
built-in runtimes share (finding a task's environment, ending a session, stopping a process)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

if TYPE_CHECKING:
    from ..client import Client
    from ..environment import Environment, Task


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """What a runtime is told besides its spec's argument, whichever runtime it is."""

    solutions: bool = False
    """Serve reference solutions (``tasks.solve``): the agent needs them (the oracle)."""
    token: str | None = None
    """Access token for environments served elsewhere (a URL runtime)."""
    concurrency: int = 4
    """How many rollouts will run at once (the pool keeps that many workers ready)."""
    warm: int = 0
    """Environments kept started and ready ahead of demand (the container runtime)."""
    max_starting: int = 4
    """Environments starting at once, at most (the container runtime)."""


class Runtime:
    """Where each rollout's environment lives: :meth:`open` yields a connected client for
    one rollout of ``task``, and tears down what it started when the block exits.

    Use a runtime as an async context manager around a batch (``Taskset.run`` does that);
    :meth:`aclose` releases what it keeps between rollouts. A runtime is registered under
    the ``hud.runtimes`` entry-point group, by name (``pool``) or URL scheme (``ws``), and
    built from a spec (``NAME``, ``NAME:ARGUMENT``, or a URL) by :meth:`from_spec`.
    """

    name: ClassVar[str] = "runtime"
    usage: ClassVar[str] = ""
    """How the spec is written on the command line (``container:IMAGE``); default: name."""

    def __init__(self, *, solutions: bool = False) -> None:
        self.solutions = solutions

    @classmethod
    def from_spec(cls, argument: str | None, options: RuntimeOptions) -> Runtime:
        """The runtime for spec argument ``argument`` (``None``: the spec was a bare name;
        for a URL spec, the whole URL). Raise ``ValueError`` for an argument it cannot use.
        The default takes no argument and honours only ``options.solutions``."""
        if argument is not None:
            raise ValueError(f"runtime {cls.name!r} takes no argument (got {argument!r})")
        return cls(solutions=options.solutions)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release whatever the runtime keeps between rollouts."""

    def open(self, task: Task) -> contextlib.AbstractAsyncContextManager[Client]:
        raise NotImplementedError


def environment_of(task: Task) -> Environment:
    """The live environment behind a task minted from a template."""
    if task.template is None:
        raise ValueError(
            f"task {task.slug!r} was loaded from data, not minted from a template: "
            "name its environment (--env) or use a URL runtime"
        )
    return task.template.env


def source_of(task: Task) -> str:
    """A ``file.py:attr`` target that serves the environment of ``task`` in a new process."""
    env = environment_of(task)
    source = getattr(env, "source", None)  # an environment built from a file, not a module
    if isinstance(source, str):
        return source
    module = sys.modules.get(task.template.func.__module__) if task.template else None
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        raise ValueError(f"cannot tell which file defines environment {env.name!r}")
    for attr, value in vars(module).items():
        if value is env:
            return f"{path}:{attr}"
    raise ValueError(f"{path} does not hold environment {env.name!r} at module level")


async def end_session(client: Client) -> None:
    """Say bye (ending the session for good) and disconnect; never raises."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await client.bye()
    with contextlib.suppress(Exception):
        await client.aclose()


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """SIGTERM (graceful shutdown: cleanup and hooks run), SIGKILL after ``grace`` seconds."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
