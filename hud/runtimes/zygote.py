"""The pre-forking parent of pool workers: ``python -m hud.runtimes.zygote TARGET``.

It imports hud and the environment once, then forks a worker for every ``fork`` line on
stdin. Each worker starts the environment (initialize hooks run in the worker, so every
worker has fresh state), listens on 127.0.0.1 with a token (``HUD_TOKEN``), and reports
``READY <pid> <url>`` (or ``FAILED <pid> <reason>``) on stdout, one line each. A worker
serves until SIGTERM, then shuts down cleanly, or exits on its own when the zygote is gone.
The zygote exits when stdin closes. It runs no event loop and no threads, so forking is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..server import Server


def main(argv: list[str]) -> int:
    target = argv[0]
    solutions = "--enable-solutions" in argv[1:]
    # each worker serves one rollout in a process of its own: it may fork that rollout
    max_forks = int(argv[argv.index("--max-forks") + 1]) if "--max-forks" in argv else 0
    token = os.environ.get("HUD_TOKEN")
    # Finished workers are reaped here (not left to the kernel with SIG_IGN), so that their
    # CPU time adds up in this process's children's time, which the pool's owner can read.
    signal.signal(signal.SIGCHLD, _reap)
    # Ctrl-C reaches the whole process group: the parent that runs the pool owns it and stops
    # the workers (SIGTERM, or closing stdin); the zygote and its workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from ..eventloop import loop_factory

    server = prepare(target, token, solutions=solutions, max_forks=max_forks)
    out = sys.stdout.fileno()
    os.write(out, b"ZYGOTE READY\n")
    zygote = os.getpid()
    for line in sys.stdin:
        if line.strip() != "fork":
            continue
        if os.fork() == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                # One run of the loop, its shutdown included (see _worker); the loop is not
                # closed: the process ends right after, and os._exit frees it all at once.
                loop = (loop_factory() or asyncio.new_event_loop)()
                loop.run_until_complete(_worker(server, out, zygote))
                code = 0
            except BrokenPipeError:
                pass  # the pool closed while this worker started: no one to report to
            except BaseException as exc:
                reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                with contextlib.suppress(OSError):
                    os.write(out, f"FAILED {os.getpid()} {reason}\n".encode())
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
    return 0


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
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


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
        async with Server(env, config) as server:
            for _ in range(rollouts):
                client = await Client.connect(server.url, token=token)
                await client.start("echo", {"text": "hi"})
                await client.grade(await client.solve())
                await end_session(client)


async def _worker(server: Server, out: int, zygote: int) -> None:
    """A worker's whole life on its loop: :func:`_serve_one`, then what
    ``asyncio.Runner`` does on closing (cancel the tasks left, finalize async generators,
    wait for the default executor's threads), in the same run of the loop. A runner
    would start the loop three times, and uvloop sets up and tears down its signal
    handling (a socket pair, its handlers) each time, once per worker and so per rollout."""
    try:
        await _serve_one(server, out, zygote)
    finally:
        this = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not this]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.shutdown_asyncgens()
        await loop.shutdown_default_executor()


async def _serve_one(server: Server, out: int, zygote: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        os.write(out, f"READY {os.getpid()} {server.url}\n".encode())
        while not stop.is_set() and os.getppid() == zygote:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
