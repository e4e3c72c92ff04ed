"""``pool``, the default: pre-forked environment processes, each serving exactly one rollout.

A zygote process (:mod:`hud.runtimes.zygote`) imports the environment once; workers are forked
from it ahead of demand, each with its own initialized environment, listening on 127.0.0.1.
A rollout takes a ready worker, and the pool asks for its replacement at once; when the
rollout ends the worker is stopped (SIGTERM: cleanup and shutdown hooks run; SIGKILL if it
has not exited :data:`KILL_AFTER` seconds later). Start-up costs
stay off the rollouts' critical path, and no two rollouts ever share a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..client import Client
from ..errors import HudConnectionError
from .base import Runtime, RuntimeOptions, end_session, source_of, stop_process
from .subprocess import MAX_FORKS

if TYPE_CHECKING:
    from ..environment import Task


KILL_AFTER = 10.0  # seconds a released worker has for its cleanup, as stop_process gives


class Stopping:
    """One released worker on its way out, watched through the pidfd opened when it reported
    ready: the worker is the zygote's child, not ours, and the zygote reaps it the moment it
    exits, so its bare pid could name another process by the time it is released."""

    def __init__(self, pidfd: int, kill_after: float) -> None:
        loop = asyncio.get_running_loop()
        self.pidfd = pidfd
        self.exited: asyncio.Future[None] = loop.create_future()
        self._kill = loop.call_later(kill_after, self._signal, signal.SIGKILL)
        loop.add_reader(pidfd, self._done)  # a pidfd reads ready once the process exits

    @classmethod
    def begin(cls, pid: int, pidfd: int | None, kill_after: float) -> Stopping | None:
        """SIGTERM the worker and watch it; without a pidfd (see :func:`open_pidfd`) it gets
        the SIGTERM alone, and ``None`` is returned."""
        if pidfd is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            return None
        stopping = cls(pidfd, kill_after)
        stopping._signal(signal.SIGTERM)
        return stopping

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signum)

    def _done(self) -> None:
        self._kill.cancel()
        asyncio.get_running_loop().remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.exited.set_result(None)


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or ``None`` where there is none to have: not Linux, a kernel
    before 5.3, a seccomp filter that refuses the call, or the process already gone."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class Worker:
    pid: int
    url: str


class Zygote:
    """One zygote process for one environment target, and its queue of ready workers."""

    def __init__(self, target: str, *, size: int, solutions: bool, ready_timeout: float,
                 kill_after: float = KILL_AFTER) -> None:
        self.target = target
        self.size = size
        self.solutions = solutions
        self.ready_timeout = ready_timeout
        self.token = secrets.token_urlsafe(16)
        self._ready: asyncio.Queue[Worker | HudConnectionError] = asyncio.Queue()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._live: dict[int, int | None] = {}  # ready or serving worker: pid → its pidfd
        self._stopping: set[Stopping] = set()
        self.kill_after = kill_after

    async def start(self) -> None:
        argv = [sys.executable, "-m", "hud.runtimes.zygote", self.target,
                "--max-forks", str(MAX_FORKS)]
        if self.solutions:
            argv.append("--enable-solutions")
        self._proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "HUD_TOKEN": self.token},
        )
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(self.ready_timeout):
                line = await self._proc.stdout.readline()
        except TimeoutError:
            line = b""
        if line.strip() != b"ZYGOTE READY":
            await stop_process(self._proc)
            raise HudConnectionError(f"{self.target}: the pool's zygote did not start "
                                     "(its error is on stderr above)")
        self._reader = asyncio.create_task(self._read(), name="hud-pool-reader")
        self._fork(self.size)

    def _fork(self, count: int) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if not self._proc.stdin.is_closing():
            self._proc.stdin.write(b"fork\n" * count)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            kind, _, rest = raw.decode().strip().partition(" ")
            pid_text, _, detail = rest.partition(" ")
            if kind == "READY":
                self._live[int(pid_text)] = open_pidfd(int(pid_text))
                self._ready.put_nowait(Worker(int(pid_text), detail))
            elif kind == "FAILED":
                self._ready.put_nowait(HudConnectionError(
                    f"{self.target}: a pool worker failed to start: {detail}"))
        self._ready.put_nowait(HudConnectionError(f"{self.target}: the pool's zygote exited"))

    @property
    def exited(self) -> bool:
        """Whether the zygote process is gone (killed, say): it forks no more workers. (Its
        stdout does not tell: the workers it forked hold that pipe open a while longer.)"""
        return self._proc is not None and self._proc.returncode is not None

    async def acquire(self) -> Worker:
        """A ready worker (waiting for one if need be); its replacement is forked at once."""
        self._fork(1)
        item = await self._ready.get()
        if isinstance(item, HudConnectionError):
            raise item
        return item

    def release(self, worker: Worker) -> None:
        """Stop a worker that served its rollout: SIGTERM (its cleanup runs in the worker),
        SIGKILL after :attr:`kill_after` seconds if it has not exited by then (a template
        that blocks its event loop never sees the SIGTERM)."""
        if worker.pid not in self._live:
            return
        stopping = Stopping.begin(worker.pid, self._live.pop(worker.pid), self.kill_after)
        if stopping is not None:
            self._stopping.add(stopping)
            stopping.exited.add_done_callback(lambda _: self._stopping.discard(stopping))

    async def aclose(self) -> None:
        for pid in list(self._live):
            self.release(Worker(pid, ""))
        # Each stop ends within kill_after; a pending kill must not be dropped with this loop.
        await asyncio.gather(*(s.exited for s in list(self._stopping)))
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            await stop_process(self._proc)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class PoolRuntime(Runtime):
    """Fresh, isolated environment per rollout, from a pool of ``size`` pre-forked workers."""

    name = "pool"

    def __init__(self, target: str | None = None, *, size: int = 4, solutions: bool = False,
                 ready_timeout: float = 60.0, kill_after: float = KILL_AFTER) -> None:
        super().__init__(solutions=solutions)
        self.target = target
        self.size = size
        self.ready_timeout = ready_timeout
        self.kill_after = kill_after
        self._zygotes: dict[str, Zygote] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_spec(cls, argument: str | None, options: RuntimeOptions) -> PoolRuntime:
        """``pool``: as many ready workers as rollouts run at once (``options.concurrency``)."""
        if argument is not None:
            raise ValueError(f"runtime 'pool' takes no argument (got {argument!r})")
        return cls(size=options.concurrency, solutions=options.solutions)

    async def _zygote(self, target: str) -> Zygote:
        async with self._lock:
            zygote = self._zygotes.get(target)
            if zygote is not None and zygote.exited:
                await zygote.aclose()  # its ready workers follow it: start again
                zygote = None
            if zygote is None:
                zygote = Zygote(target, size=self.size, solutions=self.solutions,
                                ready_timeout=self.ready_timeout, kill_after=self.kill_after)
                await zygote.start()
                self._zygotes[target] = zygote
            return zygote

    @contextlib.asynccontextmanager
    async def open(self, task: Task) -> AsyncIterator[Client]:
        zygote = await self._zygote(self.target or source_of(task))
        worker = await zygote.acquire()
        try:
            client = await Client.connect(worker.url, token=zygote.token)
            try:
                yield client
            finally:
                await end_session(client)
        finally:
            zygote.release(worker)

    async def aclose(self) -> None:
        zygotes, self._zygotes = list(self._zygotes.values()), {}
        for zygote in zygotes:
            await zygote.aclose()
