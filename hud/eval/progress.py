"""How a running eval is going: rollouts done of the total, mean reward so far, errors, cost
and time left; shown on stderr while the eval runs.

On a terminal it is a live display (rich) redrawn in place; elsewhere (a pipe, a log file,
CI) one plain line every :data:`INTERVAL` seconds and a last one at the end, so a log shows
progress without a screenful of redraws. stdout is never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from .run import Run

INTERVAL = 5.0
"""Seconds between plain progress lines; ``$HUD_PROGRESS_INTERVAL`` overrides it."""


class Tally:
    """The finished rollouts of an eval, as counts: fed each run as it finishes."""

    def __init__(self, total: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.rewards: list[float] = []
        self.cost: float | None = None
        """Summed over the runs whose usage carries a cost; ``None`` while none has."""
        self._clock = clock
        self.started = clock()

    def add(self, run: Run) -> None:
        self.done += 1
        if run.reward is not None:
            self.rewards.append(run.reward)
        if run.errored:
            self.errors += 1
        cost = run_cost(run)
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.rewards) if self.rewards else None

    def elapsed(self) -> float:
        return self._clock() - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace so far (``None`` before the first run finishes)."""
        if not self.done:
            return None
        return self.elapsed() / self.done * (self.total - self.done)

    def line(self) -> str:
        """``3/10 rollouts · mean reward 0.667 · 1 error · $0.0123 · 12s elapsed · ETA 28s``"""
        parts = [f"{self.done}/{self.total} rollouts",
                 "mean reward " + ("-" if self.mean is None else f"{self.mean:.3f}"),
                 f"{self.errors} error" + ("" if self.errors == 1 else "s")]
        if self.cost is not None:
            parts.append(f"${self.cost:.4f}")
        parts.append(f"{duration(self.elapsed())} elapsed")
        eta = self.eta()
        if self.done < self.total:
            parts.append("ETA " + ("-" if eta is None else duration(eta)))
        return " · ".join(parts)


def run_cost(run: Run) -> float | None:
    """The run's cost in dollars where its harness priced its model calls, else ``None``."""
    cost = run.trace.usage.get("cost_usd")
    return None if cost is None else float(cost)


def duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``1h 02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def interval() -> float:
    """:data:`INTERVAL`, or ``$HUD_PROGRESS_INTERVAL`` seconds where that is a positive number."""
    with contextlib.suppress(ValueError):
        value = float(os.environ.get("HUD_PROGRESS_INTERVAL", ""))
        if value > 0:
            return value
    return INTERVAL


@contextlib.asynccontextmanager
async def open_progress(tally: Tally, stream: TextIO) -> AsyncIterator[Callable[[Run], None]]:
    """Show ``tally`` on ``stream`` while the block runs; yields the function to call with
    each finished run. Live on a terminal, plain lines elsewhere; the last state stays shown
    when the block ends (normally or not)."""
    if stream.isatty():
        with _live(tally, stream) as advance:
            yield advance
        return
    async with _plain(tally, stream) as advance:
        yield advance


@contextlib.contextmanager
def _live(tally: Tally, stream: TextIO) -> Any:
    from rich.console import Console
    from rich.live import Live

    # Live redraws from its own thread, re-rendering the view: the elapsed time and the ETA
    # move between runs too.
    with Live(_View(tally), console=Console(file=stream), refresh_per_second=4):
        yield tally.add


class _View:
    """A bar and :meth:`Tally.line`, rendered afresh at each redraw."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        grid.add_row(ProgressBar(total=self.tally.total, completed=self.tally.done, width=30),
                     self.tally.line())
        return grid


@contextlib.asynccontextmanager
async def _plain(tally: Tally, stream: TextIO) -> AsyncIterator[Callable[[Run], None]]:
    def write() -> None:
        stream.write(tally.line() + "\n")
        stream.flush()

    async def tick() -> None:
        while True:
            await asyncio.sleep(interval())
            write()

    ticker = asyncio.create_task(tick(), name="hud-progress")  # owned here, cancelled below
    try:
        yield tally.add
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        write()
