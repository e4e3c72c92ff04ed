"""``pool``, the default: pre-forked environment processes, each serving exactly one rollout.

A zygote process (:mod:`hud.runtimes.zygote`) imports the environment once; workers are forked
from it ahead of demand, each with its own initialized environment and one control
connection: a Unix socket pair, whose other end it sends the pool when it is ready (no
port, no TCP handshake; a worker listens on 127.0.0.1 only for its capabilities' tunnels).
A rollout takes a ready worker and speaks over that end, and the pool asks for its
replacement at once; when the rollout ends the worker is stopped (its connection ends, and
SIGTERM: cleanup and shutdown hooks run; SIGKILL if it has not exited :data:`KILL_AFTER`
seconds later). Start-up costs stay off the rollouts' critical path, and no two rollouts
ever share a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..client import Client
from ..errors import HudConnectionError
from .base import Runtime, RuntimeOptions, end_session, source_of, stop_process
from .subprocess import MAX_FORKS

if TYPE_CHECKING:
    from ..environment import Task


KILL_AFTER = 10.0  # seconds a released worker has for its cleanup, as stop_process gives

_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)  # (Linux's; elsewhere set by hand)

NO_PORT = "ws://127.0.0.1:0"
"""The ``url`` a worker's client gets where the worker listens on no port (its environment
declares no capabilities, so no tunnel is ever asked for): it reaches nothing."""


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


@dataclass(slots=True)
class Worker:
    pid: int
    url: str
    sock: socket.socket | None = None
    """The pool's end of the worker's control connection, until a client takes it."""

    def take(self) -> socket.socket | None:
        sock, self.sock = self.sock, None
        return sock


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
        self._channel: socket.socket | None = None  # ours; the zygote and workers share theirs
        self._started: asyncio.Future[bool] | None = None
        self._owed = 0  # workers asked for and not yet sent to the zygote
        self._waiting = False  # for room in the channel
        self._gone: HudConnectionError | None = None  # once the channel has ended
        self._live: dict[int, int | None] = {}  # ready or serving worker: pid → its pidfd
        self._stopping: set[Stopping] = set()
        self.kill_after = kill_after

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [sys.executable, "-m", "hud.runtimes.zygote", self.target,
                "--channel", str(theirs.fileno()), "--max-forks", str(MAX_FORKS)]
        if self.solutions:
            argv.append("--enable-solutions")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                env={**os.environ, "HUD_TOKEN": self.token},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        ours.setblocking(False)
        self._channel = ours
        self._started = loop.create_future()
        loop.add_reader(ours, self._readable)
        exited = asyncio.ensure_future(self._proc.wait())
        started_or: list[asyncio.Future[Any]] = [self._started, exited]
        try:  # its report, or its exit (the channel ends later if it left processes behind)
            await asyncio.wait(started_or, timeout=self.ready_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        started = self._started.done() and self._started.result()
        if not started:
            await self.aclose()
            raise HudConnectionError(f"{self.target}: the pool's zygote did not start "
                                     "(its error is on stderr above)")
        self._fork(self.size)

    def _fork(self, count: int) -> None:
        """Ask for ``count`` more workers (``fork N``): now, or once the channel has room
        (its send buffer fills while the zygote is busy forking)."""
        self._owed += count
        self._ask()

    def _ask(self) -> None:
        if self._channel is None or not self._owed:
            return
        try:
            self._channel.send(f"fork {self._owed}".encode())
        except BlockingIOError:
            if not self._waiting:
                self._waiting = True
                asyncio.get_running_loop().add_writer(self._channel, self._room)
            return
        except OSError:  # the zygote is gone: the end of the channel says so
            return
        self._owed = 0

    def _room(self) -> None:
        assert self._channel is not None
        asyncio.get_running_loop().remove_writer(self._channel)
        self._waiting = False
        self._ask()

    def _readable(self) -> None:
        """Take every report the channel holds: ``READY`` with the worker's end of its
        connection attached, ``FAILED``, or (once every holder of the zygote's end is gone)
        the end of the channel."""
        assert self._channel is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._channel, 1024, 1, _CLOEXEC)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not _CLOEXEC:
                for fd in fds:
                    os.set_inheritable(fd, False)
            if not data:
                self._ended()
                return
            self._report(data.decode(errors="replace"), fds)

    def _report(self, line: str, fds: list[int]) -> None:
        assert self._started is not None
        try:
            if not self._started.done():
                self._started.set_result(line == "ZYGOTE READY")
                return
            kind, _, rest = line.partition(" ")
            pid_text, _, detail = rest.partition(" ")
            if kind == "READY" and fds and pid_text.isdigit():
                pid = int(pid_text)
                self._live[pid] = open_pidfd(pid)
                sock = socket.socket(fileno=fds.pop(0))
                self._ready.put_nowait(Worker(pid, NO_PORT if detail == "-" else detail, sock))
            elif kind == "FAILED":
                self._ready.put_nowait(HudConnectionError(
                    f"{self.target}: a pool worker failed to start: {detail}"))
        finally:
            for fd in fds:
                os.close(fd)

    def _ended(self) -> None:
        assert self._channel is not None and self._started is not None
        self._close_channel()
        if not self._started.done():
            self._started.set_result(False)
        self._gone = HudConnectionError(f"{self.target}: the pool's zygote exited")
        self._ready.put_nowait(self._gone)

    def _close_channel(self) -> None:
        if self._channel is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._channel)
        if self._waiting:
            loop.remove_writer(self._channel)
            self._waiting = False
        self._channel.close()
        self._channel = None

    @property
    def exited(self) -> bool:
        """Whether the zygote process is gone (killed, say): it forks no more workers. (Its
        channel does not tell: the workers it forked hold their end open a while longer.)"""
        return self._proc is not None and self._proc.returncode is not None

    async def acquire(self) -> Worker:
        """A ready worker (waiting for one if need be); its replacement is forked at once."""
        self._fork(1)
        item = await self._ready.get()
        if item is self._gone:  # for every rollout still waiting, not only the first
            self._ready.put_nowait(item)
        if isinstance(item, HudConnectionError):
            raise item
        return item

    def release(self, worker: Worker) -> None:
        """Stop a worker that served its rollout: its connection ends, and SIGTERM (its
        cleanup runs in the worker), SIGKILL after :attr:`kill_after` seconds if it has not
        exited by then (a template that blocks its event loop never sees either)."""
        sock = worker.take()
        if sock is not None:  # no client took it
            sock.close()
        if worker.pid not in self._live:
            return
        stopping = Stopping.begin(worker.pid, self._live.pop(worker.pid), self.kill_after)
        if stopping is not None:
            self._stopping.add(stopping)
            stopping.exited.add_done_callback(lambda _: self._stopping.discard(stopping))

    async def aclose(self) -> None:
        while not self._ready.empty():  # ready workers no rollout took
            item = self._ready.get_nowait()
            if isinstance(item, Worker):
                self.release(item)
        for pid in list(self._live):
            self.release(Worker(pid, ""))
        # Each stop ends within kill_after; a pending kill must not be dropped with this loop.
        await asyncio.gather(*(s.exited for s in list(self._stopping)))
        self._close_channel()  # the zygote reads the end of it, and exits
        if self._proc is not None:
            await stop_process(self._proc)


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
            try:
                client = await Client.connect(worker.url, token=zygote.token,
                                              sock=worker.take())
            except HudConnectionError as exc:
                raise HudConnectionError(f"pool worker {worker.pid} ended before its rollout "
                                         f"began ({exc})") from None
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
