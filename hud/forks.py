"""Branches of a running task (``tasks.fork``): each a copy of this process, made with
``os.fork()``, serving one parked session on a server of its own.

A task's template is a suspended async generator and its environment's state lives in this
process's memory, so a copy of the process is a copy of the episode, paid for page by page
as either side writes (copy-on-write). That holds only where the process serves the task
alone (a pool worker, a ``hud serve`` per rollout): servers enable ``tasks.fork`` with
``ServerConfig.max_forks``, and decline it otherwise.

The child is forked from inside the running event loop and never runs that loop again: its
epoll instance and wake-up descriptors are shared with the parent (a copied descriptor is
the same open file), so touching them (``remove_reader``, ``close``) would disturb the
parent's loop. Instead the child (:func:`_become_branch`)

1. points every inherited socket and pipe, and stdin and stdout, at ``/dev/null``
   (``os.dup2``: the parent's clients, listener and daemons are no longer held open by the
   child, and the descriptor numbers stay taken, so a stale object closing one later
   cannot close a socket of the child's own);
2. starts a thread with a fresh event loop (uvloop where installed) serving a new
   :class:`~hud.server.Server` on 127.0.0.1 port 0 with a token of its own, whose only
   session is the copied task, parked until a client resumes it (or the park TTL ends it);
3. reports that server's URL on a pipe, then waits in the main thread for SIGTERM (its
   parent's shutdown), its parent's death, or the end of its session, and exits with
   ``os._exit``: nothing of the parent's is finalised in the child.

The environment's shutdown hooks never run in a branch (the environment is its parent's);
the branch's task cleanup (the template's ``finally``) does. What a template holds that is
bound to the parent's event loop (futures, open connections, subprocess handles) does not
work in a branch; plain objects, files written so far and the generator's locals do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import json
import logging
import os
import secrets
import signal
import stat
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from .eventloop import loop_factory
from .protocol.errors import CannotFork, LimitExceeded, NoTaskInProgress
from .protocol.messages import Fork, TaskRef
from .session import Session, new_session_id

if TYPE_CHECKING:
    from .environment import Environment
    from .runner import Bindings, TaskRunner, TaskScope
    from .server import ServerConfig

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
"""Seconds a branch may take to serve and report its URL before the fork is undone."""
STOP_GRACE = 10.0
"""Seconds a branch has to run its task's cleanup after SIGTERM before it is killed."""
WATCH_INTERVAL = 0.25
"""How often a branch checks that its parent lives and its session is still held."""

_CAUSES = {errno.ENOMEM: "memory", errno.EAGAIN: "processes", errno.ENOSPC: "disk"}


@dataclass(slots=True)
class _Child:
    pid: int
    report: int  # read end of the pipe the child reports its URL on
    session_id: str
    token: str
    pidfd: int = -1


class Forks:
    """The branches one server made. :meth:`branch` makes them; :meth:`aclose` stops those
    still running (the server's shutdown). A branch that ends by itself is reaped at once."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._live: dict[int, _Child] = {}

    def __len__(self) -> int:
        return len(self._live)

    async def branch(self, env: Environment, session: Session, count: int) -> list[Fork]:
        """Fork ``session``'s task ``count`` times; each branch parks a new session.

        Raises :class:`LimitExceeded`, :class:`NoTaskInProgress` or :class:`CannotFork`
        before anything is made; a failure while forking, or the caller's cancellation,
        stops the branches made so far, so it makes all or none."""
        runner, _ = self._check(env, session, count)
        for capability in _unique(env.branching):
            if hasattr(capability, "settle"):
                await capability.settle(runner.scope)
        runner, task = self._check(env, session, count)  # it may have ended meanwhile
        made: list[_Child] = []
        try:
            for _ in range(count):  # no await in between: every branch sees the same state
                made.append(self._fork_one(env, runner, task))
            outcomes = await asyncio.gather(*(self._ready(child) for child in made),
                                            return_exceptions=True)
            readies = []
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
                readies.append(outcome)
        except BaseException:
            await self._stop(made)
            raise
        expires_in = round(self.config.park_ttl, 3)
        return [Fork(session_id=child.session_id, url=ready["url"], token=child.token, task=task,
                     bindings=ready["bindings"], expires_in=expires_in)
                for child, ready in zip(made, readies, strict=True)]

    async def aclose(self) -> None:
        """Stop every branch still running (SIGTERM: its task's cleanup runs)."""
        await self._stop(list(self._live.values()))

    # -- checks ---------------------------------------------------------------------------

    def _check(self, env: Environment, session: Session, count: int
               ) -> tuple[TaskRunner, TaskRef]:
        limit = self.config.max_forks
        if count > limit:
            raise LimitExceeded(f"cannot fork into {count} branches at once (limit {limit})",
                                {"limit": "max_forks", "value": limit})
        runner, task = session.runner, session.task
        # tasks.fork is queued behind the session's tasks.start and tasks.grade, so no step
        # of this task runs now: it is either started and waiting for its answer, or over
        if runner is None or task is None or runner.closed or not runner.started:
            raise NoTaskInProgress("no task in progress to fork: start one first (a graded, "
                                   "cancelled or failed task cannot be forked)")
        refuse_uncopyable(env)
        return runner, task

    # -- the parent's side ----------------------------------------------------------------

    def _fork_one(self, env: Environment, runner: TaskRunner, task: TaskRef) -> _Child:
        report, write_end = os.pipe()
        session_id, token = new_session_id(), secrets.token_urlsafe(16)
        config = dataclasses.replace(self.config, host="127.0.0.1", port=0, token=token,
                                     interrupt_blocking=None)
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(report)
            os.close(write_end)
            cause = _CAUSES.get(exc.errno or 0, "processes")
            raise CannotFork(f"the server ran out of {cause} while forking the task: "
                             f"{exc.strerror}", {"cause": cause}) from None
        if pid == 0:
            os.close(report)
            _become_branch(_Branch(env, runner, task, config, session_id, write_end))
        os.close(write_end)
        child = _Child(pid, report, session_id, token)
        self._live[pid] = child
        self._watch(child)
        return child

    async def _ready(self, child: _Child) -> dict[str, Any]:
        """What the branch reports once it serves (``url``, ``bindings``); raises
        :class:`CannotFork` if it exits or says it failed first."""
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()
        chunks: list[bytes] = []

        def readable() -> None:
            data = os.read(child.report, 4096)
            chunks.append(data)
            if (not data or b"\n" in data) and not got.done():
                got.set_result(b"".join(chunks))

        loop.add_reader(child.report, readable)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = (await got).decode(errors="replace").strip()
        except TimeoutError:
            line = f"FAILED start no report within {READY_TIMEOUT:g} s"
        finally:
            loop.remove_reader(child.report)
            os.close(child.report)
        kind, _, detail = line.partition(" ")
        if kind != "READY":
            cause, _, why = detail.partition(" ")
            raise CannotFork(f"a branch failed to start: {why or 'it exited'}",
                             {"cause": cause or "start"})
        ready: dict[str, Any] = json.loads(detail)
        return ready

    def _watch(self, child: _Child) -> None:
        """Reap the branch as soon as it exits (a pidfd turns readable then)."""
        try:
            child.pidfd = os.pidfd_open(child.pid)
        except (AttributeError, OSError):
            return  # no pidfds here: reaped by _stop instead
        asyncio.get_running_loop().add_reader(child.pidfd, self._reap, child)

    def _reap(self, child: _Child) -> bool:
        """Collect the branch if it has exited; returns whether it has."""
        try:
            done, _ = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            done = child.pid
        if not done:
            return False
        self._live.pop(child.pid, None)
        if child.pidfd >= 0:
            asyncio.get_running_loop().remove_reader(child.pidfd)
            os.close(child.pidfd)
            child.pidfd = -1
        return True

    async def _stop(self, children: list[_Child]) -> None:
        """SIGTERM each branch, SIGKILL those still running after :data:`STOP_GRACE`;
        return once every one is reaped."""
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        pending = [c for c in children if not self._reap(c)]
        while pending:
            if time.monotonic() > deadline:
                for child in pending:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
            await asyncio.sleep(0.02)
            pending = [c for c in pending if not self._reap(c)]


class Branchable(Protocol):
    """A capability that follows a task into its branches (``env.branching[name]``).

    :meth:`rehome` runs once in each branch, on its fresh event loop, before it serves: it
    serves the capability anew (the copied daemon's sockets are the parent's) and publishes
    its binding again. A capability with a task hook also has ``branch(scope)``: an async
    context manager entered in the branch in place of that hook, which takes over the
    copied task's state (``scope.state``), yields the branch's own bindings, and exits
    when the branch's task ends. One may also be :class:`Settling`."""

    async def rehome(self) -> None: ...


class Settling(Protocol):
    """A :class:`Branchable` whose state may be mid-change outside the event loop (a
    simulator stepping on its thread): ``settle(scope)`` returns once it is not, and the
    fork follows before the loop runs anything else."""

    async def settle(self, scope: TaskScope) -> None: ...


def refuse_uncopyable(env: Environment) -> None:
    """Raise :class:`CannotFork` naming the first capability of ``env`` that no branch can
    take along (one not in ``env.branching``, or whose task hook has no ``branch``)."""
    for binding in env.capabilities:
        if binding.name not in env.branching:
            raise _uncopyable(binding.name, {"protocol": binding.protocol},
                              f"capability {binding.name!r} ({binding.protocol})")
    owners = [getattr(hook, "__self__", None) for hook in env.task_hooks]
    for hook, owner in zip(env.task_hooks, owners, strict=True):
        if not any(owner is b for b in env.branching.values()) or not hasattr(owner, "branch"):
            name = getattr(hook, "__qualname__", repr(hook))
            raise _uncopyable(name, {}, f"task hook {name}")


def _uncopyable(name: str, data: dict[str, str], what: str) -> CannotFork:
    return CannotFork(f"{what} cannot be copied into a branch: tasks with it cannot be "
                      "forked; nothing was created",
                      {"cause": "capability", "capability": name, **data})


def _unique(branching: dict[str, Any]) -> list[Any]:
    """Each capability of ``env.branching`` once (one may serve several names)."""
    return list({id(c): c for c in branching.values()}.values())


async def _take_along(env: Environment, runner: TaskRunner) -> Bindings:
    """In a branch: serve each capability anew, then hand the task's hooks their copies."""
    env.started = False  # republishing bindings now is no "capability added after start"
    try:
        for capability in _unique(env.branching):
            await capability.rehome()
    finally:
        env.started = True
    # refuse_uncopyable let only hooks bound to a Branchable with a branch() through
    return await runner.adopt_in_branch(
        lambda hook: getattr(hook, "__self__").branch(runner.scope))  # noqa: B009


# -- the child's side -----------------------------------------------------------------------


@dataclass(slots=True)
class _Branch:
    """What one branch serves, and how it ends."""

    env: Environment
    runner: TaskRunner
    task: TaskRef
    config: ServerConfig
    session_id: str
    report: int  # write end of the pipe to the parent
    parent: int = dataclasses.field(default_factory=os.getppid)
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    stopping: bool = False  # SIGTERM came, maybe before the loop was there to tell

    def stop_soon(self, *_: object) -> None:
        self.stopping = True
        loop, stop = self.loop, self.stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(stop.set)

    def report_line(self, line: str) -> None:
        """Tell the parent ``line`` (``READY url`` or ``FAILED reason``), once: the pipe is
        closed after it, and its descriptor number may then be another file's."""
        fd, self.report = self.report, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.write(fd, (line + "\n").encode())
            os.close(fd)

    def serve(self) -> None:
        """Run :meth:`_serve` on a fresh loop (in the branch's serving thread)."""
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        # lazy: the server module builds its Forks from this one
        from .server import Server

        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        bindings = await _take_along(self.env, self.runner)
        server = Server(self.env, self.config)
        await server.start()  # the environment is started already: its hooks do not rerun
        try:
            server.registry.park_branch(self.session_id, self.runner, self.task)
            self.report_line("READY " + json.dumps({"url": server.url, "bindings": bindings}))
            while (server.registry.holds_tasks or server.connections) \
                    and os.getppid() == self.parent and not self.stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_INTERVAL):
                        await self.stop.wait()
                if self.stop.is_set():
                    break
        finally:
            self.env.started = False  # its shutdown hooks are the parent's to run, not ours
            await server.aclose()


def _become_branch(branch: _Branch) -> NoReturn:
    """The child's whole life after ``os.fork()``; see the module docstring."""
    code = 1
    try:
        _let_go_of_parent(keep=branch.report)
        signal.signal(signal.SIGTERM, branch.stop_soon)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                branch.serve()
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=serve, name="hud-branch")
        thread.start()
        while thread.is_alive():  # joined in slices: SIGTERM's handler runs in between
            thread.join(0.5)
        if failed:
            raise failed[0]
        code = 0
    except BaseException as exc:
        cause = _CAUSES.get(exc.errno or 0, "start") if isinstance(exc, OSError) else "start"
        branch.report_line(f"FAILED {cause} {type(exc).__name__}: {exc}".replace("\n", " "))
        traceback.print_exc()
    finally:
        os._exit(code)


def _let_go_of_parent(*, keep: int) -> None:
    """Point stdin, stdout and every inherited socket and pipe but ``keep`` at /dev/null,
    stop signals from waking the parent's loop (its wake-up descriptor is shared), and keep
    the garbage collector off what was copied."""
    signal.set_wakeup_fd(-1)
    # Whatever was alive at the fork stays out of the collector's walks: each walk writes
    # to every object it visits, which would copy the parent's pages into this process.
    gc.freeze()
    devnull = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in (2, keep, devnull):
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # the directory listing's own descriptor, closed by now
        if fd < 2 or stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            os.dup2(devnull, fd)
    os.close(devnull)
