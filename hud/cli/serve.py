"""``hud serve``: load an environment, serve it until SIGTERM or Ctrl-C, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from ..environment import Environment
from ..errors import LoadError
from ..eventloop import loop_factory
from ..loader import load_environment
from ..server import Server, ServerConfig

log = logging.getLogger("hud.serve")


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
    try:
        env = load_environment(target)
    except LoadError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 6
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve_until_signalled(env, ServerConfig(**config)))  # type: ignore[arg-type]
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen: {exc}\n")
        return 3
    return 0


async def serve_until_signalled(env: Environment, config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    async with Server(env, config) as server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        if server.token and config.token is None:
            sys.stderr.write(f"token: {server.token}\n")
        await stop.wait()
        log.info("shutting down")
