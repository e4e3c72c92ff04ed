"""The event loop hud runs its own entry points on: uvloop where it is installed.

uvloop cuts the loop's share of each request by about a third (BENCHMARKS.md), for servers
and clients alike. Library users keep whatever loop they run; this applies to ``hud serve``,
``hud eval``, ``hud check``, the other async CLI commands, and pool workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory where it is installed, else ``None`` (asyncio's own loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on :func:`loop_factory`'s loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
