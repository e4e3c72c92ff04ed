"""The event loop hud runs its own entry points on: uvloop where it is installed.

uvloop cuts the loop's share of each request by about a third (BENCHMARKS.md), for servers
and clients alike. Library users keep whatever loop they run; this applies to ``hud serve``,
``hud eval``, ``hud check``, the other async CLI commands, and pool workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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


def inherited_descriptors() -> list[int]:
    """The inheritable descriptors past stdio this process holds: those it was given open
    by its parent (what Python opens is close-on-exec). Empty without ``/proc``."""
    found = []
    with contextlib.suppress(OSError):  # (no /proc: nothing to go by)
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # (the listing's own, closed by now)
                if int(name) > 2 and os.get_inheritable(int(name)):
                    found.append(int(name))
    return found


def close_inherited_on_exec() -> None:
    """Make the descriptors this process inherited (:func:`inherited_descriptors`)
    close-on-exec, so that no program it starts inherits them: uvloop's subprocesses ignore
    ``close_fds`` (asyncio's close them by default), and an environment's daemons, browsers
    and desktop apps would otherwise hold whatever ``hud``'s parent left open to it (a CI
    runner's pipes, a file). They stay usable here (``--answer-file /dev/fd/3``). For a
    command's start, before anything else opens."""
    for fd in inherited_descriptors():
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
