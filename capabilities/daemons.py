"""The processes behind per-task capabilities (browsers, displays): stopping them with
everything they spawned, saying how they ended, and starting spares ahead of demand.

A spare has never been handed to anyone: taking it gives a task the same clean state as
starting a new one, only sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_MIN, RETRY_MAX = 0.5, 30.0


@cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def bound_to_us(argv: Sequence[str], *, uid: int | None = None) -> list[str]:
    """``argv`` wrapped so that the kernel kills it when this process dies, even by
    SIGKILL (``setpriv --pdeathsig``, from util-linux, then ``exec``: same pid, no fork of
    this process). Without setpriv, ``argv`` as it is: cleanup then relies on this process
    exiting normally.

    ``uid``: run as that uid, and the group of the same number, with no supplementary
    groups; the same setpriv switches first and then sets the death signal, which a change
    of uid would clear. Raises :class:`FileNotFoundError` without setpriv."""
    setpriv = _setpriv()
    if uid is not None:
        if setpriv is None:
            raise FileNotFoundError("running a program as another user needs setpriv: "
                                    "apt-get install util-linux")
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--pdeathsig", "KILL", "--", *argv]
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


class Spares(Generic[T]):
    """Keeps ``count`` backends started. :meth:`take` hands one over and starts a
    replacement. One background task refills; it belongs to this object and :meth:`aclose`
    cancels it, then closes the spares still held.

    A failing ``launch`` is logged and retried with backoff; it never raises out of here
    (the task that needs a backend launches its own and reports the error).
    """

    def __init__(
        self, launch: Callable[[], Awaitable[T]], close: Callable[[T], Awaitable[None]],
        count: int = 1, name: str = "spares", usable: Callable[[T], bool] = lambda _: True,
    ) -> None:
        self.count = count
        self.name = name
        self._launch = launch
        self._close = close
        self._usable = usable
        self._ready: list[T] = []
        self._wanted = asyncio.Event()
        self._settled = asyncio.Event()  # set whenever no launch is in flight
        self._settled.set()
        self._filler: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.count > 0 and self._filler is None:
            self._filler = asyncio.create_task(self._fill(), name=f"{self.name}-filler")
            self._wanted.set()

    async def take(self) -> T | None:
        """A started spare that is still ``usable``; when none is ready but one is being
        started, that one (it is nearer than a new one). None when none is coming."""
        if not self._ready and self._filler is not None:
            await self._settled.wait()
        self._wanted.set()
        while self._ready:
            spare = self._ready.pop(0)
            if self._usable(spare):
                return spare
            await self._close(spare)
        return None

    async def aclose(self) -> None:
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
            self._filler = None
        self._settled.set()
        ready, self._ready = self._ready, []
        for spare in ready:
            await self._close(spare)

    async def _fill(self) -> None:
        delay = RETRY_MIN
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while len(self._ready) < self.count:
                self._settled.clear()
                try:
                    self._ready.append(await self._launch())
                    delay = RETRY_MIN
                except Exception as exc:
                    log.warning("%s: starting a spare failed (%s); retrying in %.1f s",
                                self.name, exc, delay)
                    self._settled.set()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                finally:
                    self._settled.set()


async def stop_group(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
    """SIGTERM the process group led by ``proc`` (started with ``start_new_session``),
    SIGKILL it after ``timeout``, and reap ``proc``. Helpers it left in the group die too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            break
        except TimeoutError:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever outlived the leader


def exit_status(returncode: int | None) -> str:
    """``exit status 1``, ``killed by SIGKILL``, or ``running``."""
    if returncode is None:
        return "running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"
