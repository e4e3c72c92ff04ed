"""The environment ``bench/tunnel.py --container`` serves in a container: bench/tunnel.py's
pipe daemon on the container's own loopback, declared as capability ``pipe`` (``tcp/1``),
and one template to hold a session with."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel  # bench/tunnel.py: the daemon's protocol

from hud import Environment

env = Environment("bench-tunnel")


@env.initialize
async def start_pipe() -> None:
    daemon = await asyncio.start_server(tunnel.pipe, "127.0.0.1", 0)
    env.add_capability("pipe", "tcp/1", f"tcp://127.0.0.1:{daemon.sockets[0].getsockname()[1]}")


@env.template()
async def hold():
    """Nothing to do: the bench only opens the capability."""
    yield "hold"
    yield 1.0
