"""``hud serve``: load an environment, serve it until SIGTERM or Ctrl-C, shut down cleanly.

SIGUSR1 (sent by ``hud dev``, which then serves the edited code) shuts down the same way,
but closes each connection with 1012 (service restart) and :data:`RELOADED` as the reason,
so that a client's next call says why its session ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from .. import steps
from ..environment import Environment
from ..errors import LoadError
from ..eventloop import loop_factory
from ..loader import load_environment
from ..server import Server, ServerConfig
from .common import results, user_prints_to_stderr

log = logging.getLogger("hud.serve")
RELOADED = ("the environment was reloaded (hud dev) and its tasks ended: connect again and "
            "start a new task")
SERVICE_RESTART = 1012  # RFC 6455 close code registry: "Service Restart"


def run_server(target: str, *, verbose: bool = False, quiet: bool = False,
               **config: object) -> int:
    """Serve ``target``; returns the process exit code (0 after a clean shutdown)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # one line per connection is noise at 1,000 sessions
        logging.getLogger("websockets").setLevel(logging.WARNING)
    user_prints_to_stderr()  # stdout is the URL alone
    try:
        env = load_environment(target)
    except LoadError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 6
    runner = asyncio.Runner(loop_factory=loop_factory())
    try:
        runner.run(serve_until_signalled(env, ServerConfig(**config)))  # type: ignore[arg-type]
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen: {exc}\n")
        return 3
    finally:
        _close(runner)
    return 0


def _close(runner: asyncio.Runner) -> None:
    """Close the loop, unless template steps that ignored their cancellation still run:
    closing would wait for them forever (``asyncio.Runner`` cancels and awaits every task),
    so the process exits without them."""
    if steps.ABANDONED:
        log.error("exiting with %d template step(s) still running: they ignored cancellation",
                  len(steps.ABANDONED))
        return
    runner.close()


async def serve_until_signalled(env: Environment, config: ServerConfig) -> None:
    stop, reloading = asyncio.Event(), asyncio.Event()

    def reload() -> None:
        reloading.set()
        stop.set()

    loop = asyncio.get_running_loop()
    handlers = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set}
    if hasattr(signal, "SIGUSR1"):  # POSIX only, as is hud dev
        handlers[signal.SIGUSR1] = reload
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, handler)
    async with Server(env, config) as server:
        results().write(server.url + "\n")
        results().flush()
        if server.token and config.token is None:
            sys.stderr.write(f"token: {server.token}\n")
        await stop.wait()
        log.info("shutting down for a reload" if reloading.is_set() else "shutting down")
        if reloading.is_set():
            await server.aclose(code=SERVICE_RESTART, reason=RELOADED)
