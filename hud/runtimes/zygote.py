"""The pre-forking parent of pool workers: ``python -m hud.runtimes.zygote TARGET --channel FD``.

It imports hud and the environment once, then forks a worker for every ``fork`` message
on the channel, a Unix ``SOCK_SEQPACKET`` socket shared with the pool. Each worker starts
the environment (initialize hooks run in the worker, so every worker has fresh state) and
makes a Unix socket pair: it serves one end as its only control connection (the same
upgrade and token check as a port), and reports ``READY <pid> <url>`` on the channel with
the other end attached (``SCM_RIGHTS``) for its rollout's client, or ``FAILED <pid>
<reason>``. A worker listens on 127.0.0.1 (its ``url``) only where its environment
declares capabilities, for their tunnels; otherwise it reports ``-``. A worker serves until
its connection ends or it gets SIGTERM, then shuts down cleanly; it also exits on its own
when the zygote is gone. The zygote exits when the pool closes the channel. It runs no
event loop and no threads, so forking is safe. Its stdout (and the workers') is stderr:
what an environment prints is a log, never data.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import traceback
from typing import TYPE_CHECKING, Any

from ..eventloop import inherited_descriptors

if TYPE_CHECKING:
    from ..server import Server


def main(argv: list[str]) -> int:
    target = argv[0]
    solutions = "--enable-solutions" in argv[1:]
    # each worker serves one rollout in a process of its own: it may fork that rollout
    max_forks = int(argv[argv.index("--max-forks") + 1]) if "--max-forks" in argv else 0
    channel = socket.socket(fileno=int(argv[argv.index("--channel") + 1]))
    channel.set_inheritable(False)  # forked workers hold it; programs they run do not
    _close_strays()
    _CHILDREN.channel = channel
    os.dup2(2, 1)  # what the environment prints is a log
    token = os.environ.get("HUD_TOKEN")
    # Finished workers are reaped here (not left to the kernel with SIG_IGN), so that their
    # CPU time adds up in this process's children's time, which the pool's owner can read.
    signal.signal(signal.SIGCHLD, _reap)
    # Ctrl-C reaches the whole process group: the parent that runs the pool owns it and stops
    # the workers (their connections end, and SIGTERM); the zygote and workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from ..eventloop import loop_factory

    server = prepare(target, token, solutions=solutions, max_forks=max_forks)
    channel.send(b"ZYGOTE READY")
    zygote = os.getpid()
    while True:
        message = channel.recv(64)
        if not message:  # the pool closed the channel
            return 0
        verb, _, count = message.partition(b" ")
        if verb == b"fork" and count.isdigit():
            for _ in range(int(count)):
                _fork_worker(server, channel, zygote, loop_factory)


def _close_strays() -> None:
    """Close the descriptors past stdio this process inherited (the pool's parent may hold
    some open to its children, and uvloop's subprocesses ignore ``close_fds``): neither the
    workers nor what they run should hold them."""
    for fd in inherited_descriptors():
        with contextlib.suppress(OSError):
            os.close(fd)


class _Children:
    """The zygote's workers not yet reaped, each with the read end of a pipe it writes one
    byte to once it has reported (``READY`` or ``FAILED``): one that exits without (killed,
    ``os._exit`` in an initialize hook, a crash) is reported ``FAILED`` by the zygote, so
    that the pool never waits for it."""

    def __init__(self) -> None:
        self.channel: socket.socket | None = None
        self.said: dict[int, int] = {}
        self.ready = False  # in a worker: it has reported READY


_CHILDREN = _Children()


def _fork_worker(server: Server, channel: socket.socket, zygote: int,
                 loop_factory: Any) -> None:
    """A worker: it reports on ``channel``, and its life ends in ``os._exit``."""
    # SIGCHLD waits until the worker is listed: a worker that dies at once is reported too
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        said_r, said_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(said_r)
            os.close(said_w)
            raise
    except OSError as exc:  # out of processes or memory: this request fails, not the pool
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        with contextlib.suppress(OSError):
            channel.send(f"FAILED 0 cannot start a worker: {exc}".encode())
        return
    if pid:
        os.close(said_w)
        os.set_blocking(said_r, False)
        _CHILDREN.said[pid] = said_r
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        return
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        os.close(said_r)
        for fd in _CHILDREN.said.values():  # other workers' pipes
            os.close(fd)
        _CHILDREN.said.clear()
        # One run of the loop, its shutdown included (see _worker); the loop is not
        # closed: the process ends right after, and os._exit frees it all at once.
        loop = (loop_factory() or asyncio.new_event_loop)()
        loop.run_until_complete(_worker(server, channel, zygote, said_w))
        code = 0
    except BaseException as exc:
        if not _CHILDREN.ready:  # (after READY, its rollout's client sees it fail)
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            with contextlib.suppress(OSError):
                channel.send(f"FAILED {os.getpid()} {reason}".encode())
                os.write(said_w, b".")
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def prepare(target: str, token: str | None, *, solutions: bool = False,
            max_forks: int = 0) -> Server:
    """Put this process in the state a zygote forks from, and return the
    :class:`~hud.server.Server` each worker starts (bench/pool_floor.py forks from the same)."""
    from ..eventloop import loop_factory
    from ..loader import load_environment
    from ..server import Server, ServerConfig

    env = load_environment(target)
    _warm_up(loop_factory, token)
    # Built once, before forking: its manifest (every template's argument schema) is then
    # shared by all workers instead of computed again in each. Each worker starts its own
    # copy (the initialize hooks run there), so no state is shared between rollouts.
    server = Server(env, ServerConfig(host="127.0.0.1", port=0, token=token,
                                      enable_solutions=solutions, max_forks=max_forks))
    # Everything imported so far is shared with the workers copy-on-write; keep the garbage
    # collector from walking (and so writing to, and copying) those pages in every worker.
    gc.collect()
    gc.freeze()
    return server


def _reap(_signum: int, _frame: object) -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                return
            said = _CHILDREN.said.pop(pid, None)
            if said is None:
                continue
            try:
                reported = os.read(said, 1)
            except BlockingIOError:  # no byte; a process the worker forked holds the pipe
                reported = b""
            finally:
                os.close(said)
            if not reported and _CHILDREN.channel is not None:
                code = os.waitstatus_to_exitcode(status)
                how = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
                with contextlib.suppress(OSError):
                    _CHILDREN.channel.send(f"FAILED {pid} it exited before it was ready "
                                           f"({how})".encode())


def _warm_up(loop_factory: Any, token: str | None) -> None:
    """Pay, once and before forking, what each worker would otherwise pay again: importing
    uvloop and websockets' lazily imported modules, first-use caches, and above all the
    interpreter's own warm-up of hud's code (CPython specializes a function's bytecode in
    place once it has run a few times; done here, every worker inherits it instead of
    writing, and so copying, those pages itself). A rehearsal environment serves a few
    rollouts the way the pool does: server start, a client's connect, start, solve, grade,
    bye, stop. The loop is closed again, so the process forks with no loop and no threads."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_rehearse(token))


async def _rehearse(token: str | None, servers: int = 4, rollouts: int = 16) -> None:
    from ..client import Client
    from ..environment import Environment
    from ..server import Server, ServerConfig
    from .base import end_session
    from .pool import NO_PORT

    env = Environment("warm-up")

    @env.template()
    async def echo(text: str = "hi"):  # type: ignore[no-untyped-def]
        answer = yield text
        yield 1.0 if answer == text else 0.0

    @echo.solution
    def solve(text: str) -> str:
        return text

    for _ in range(servers):
        config = ServerConfig(host="127.0.0.1", port=0, token=token, enable_solutions=True)
        server = Server(env, config)
        await server.start(listen=False)
        try:
            for _ in range(rollouts):  # over a socket pair, as a worker and the pool do
                ours, theirs = socket.socketpair()
                ended = await server.adopt(ours)
                client = await Client.connect(NO_PORT, token=token, sock=theirs)
                await client.start("echo", {"text": "hi"})
                await client.grade(await client.solve())
                await end_session(client)
                await ended
        finally:
            await server.aclose()


async def _worker(server: Server, channel: socket.socket, zygote: int,
                  said: int | None = None) -> None:
    """A worker's whole life on its loop: :func:`_serve_one`, then what
    ``asyncio.Runner`` does on closing (cancel the tasks left, finalize async generators,
    wait for the default executor's threads), in the same run of the loop. A runner
    would start the loop three times, and uvloop sets up and tears down its signal
    handling (a socket pair, its handlers) each time, once per worker and so per rollout."""
    try:
        await _serve_one(server, channel, zygote, said)
    finally:
        this = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not this]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.shutdown_asyncgens()
        await loop.shutdown_default_executor()


async def _serve_one(server: Server, channel: socket.socket, zygote: int,
                     said: int | None = None) -> None:
    """Serve one control connection, its other end sent to the pool with ``READY`` (then a
    byte written to ``said``), until it ends, SIGTERM comes, or the zygote is gone; then
    shut the server down."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def stopping() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, stopping)
    await server.env.start()  # first: its initialize hooks may add capabilities
    await server.start(listen=bool(server.env.capabilities))  # a port only for tunnels
    try:
        ours, theirs = socket.socketpair()
        with theirs:
            ended = await server.adopt(ours)
            ended.add_done_callback(lambda _: stopping())
            url = server.url if server.listening else "-"
            try:
                socket.send_fds(channel, [f"READY {os.getpid()} {url}".encode()],
                                [theirs.fileno()])
            except BrokenPipeError:  # the pool closed while this worker started
                return
        _CHILDREN.ready = True
        if said is not None:
            os.write(said, b".")
        while not stop.done() and os.getppid() == zygote:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(stop)
    finally:
        await server.aclose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
