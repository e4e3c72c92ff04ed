"""A watchdog that interrupts template code holding the event loop too long.

Template code runs on the server's event loop, so a ``time.sleep`` or a synchronous HTTP
call in one template stalls every session. Logging it (:mod:`hud.steps`) names the culprit;
this stops it. A thread checks every fraction of ``limit`` which stretch of template code is
running (:func:`hud.steps.current_stretch`); one that has held the loop for ``limit`` seconds
gets a signal, whose handler runs in the main thread at the next point the interpreter
allows (a sleeping or blocked system call returns early) and raises
:class:`~hud.errors.TemplateBlocked` there, inside the template's code only. The template
fails with that error, its session gets a ``template_error``, and every other session goes on.

Code that never returns to the interpreter (a long computation inside a C extension) cannot
be interrupted this way. Signals reach only the main thread, so the watchdog runs only for a
server whose event loop is there (``hud serve``, pool workers); it uses ``SIGUSR2``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from . import steps

log = logging.getLogger(__name__)

SIGNAL = signal.SIGUSR2


class Watchdog:
    """``start()`` in the main thread, ``stop()`` when done; see the module docstring."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: Any = None
        self._main = threading.main_thread().ident

    def start(self) -> bool:
        """Install the handler and start the thread; False (and nothing done) outside the
        main thread, where no signal handler can be installed."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._previous = signal.signal(SIGNAL, _interrupt)
        self._thread = threading.Thread(target=self._watch, name="hud-watchdog", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        signal.signal(SIGNAL, self._previous)

    def _watch(self) -> None:
        fired: int | None = None
        while not self._stop.wait(min(self.limit / 4, 0.5)):
            running = steps.current_stretch()
            if running is None or running[0] == fired:
                continue
            if time.perf_counter() - running[1] >= self.limit:
                fired = running[0]
                log.error("%s has held the event loop for %g s: interrupting it",
                          running[2], self.limit)
                steps.request_interrupt(running[0])
                assert self._main is not None
                signal.pthread_kill(self._main, SIGNAL)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    steps.interrupt_here(frame)
