"""Which action runs at which step: the action queue of one episode (sans-I/O).

Observation ``n`` is the world after ``n`` steps; the action that produces observation
``n + 1`` is "the action for ``n``". An :class:`~.wire.Action` message answering
observation ``k`` with a chunk ``a[0..T-1]`` asks for ``a[i]`` to run at step ``k + i``.

* Entries for steps already taken are dropped (a late chunk still lands where it belongs:
  real-time chunking, as openpi and LeRobot's async inference do it).
* A new message replaces whatever was still queued: the freshest plan wins.
* When nothing is queued for a step, the environment's pace decides: ``lockstep`` waits for
  the policy, ``realtime`` holds the last action (see ``protocol/openpi-0/README.md``).
"""

from __future__ import annotations

from collections import deque
from typing import Any


class FutureIndex(ValueError):
    """An action answered an observation that has not been sent yet."""


class ActionQueue:
    """Actions waiting to run, aligned to the step they are for."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._first = 0  # the step the head of the queue is for
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def replace(self, index: int, chunk: Any, current: int) -> int:
        """Queue ``chunk`` (a sequence) answering observation ``index`` while the latest
        observation sent is ``current``; returns how many entries were stale and dropped."""
        if index > current:
            raise FutureIndex(f"action answers observation {index}, but the latest is {current}")
        stale = min(current - index, len(chunk))
        self.dropped += stale
        self._items = deque(chunk[stale:])
        self._first = current
        return stale

    def pop(self, step: int) -> Any | None:
        """The action for ``step``, or None when nothing is queued for it."""
        while self._items and self._first < step:  # left over from steps already taken
            self._items.popleft()
            self._first += 1
            self.dropped += 1
        if not self._items or self._first != step:
            return None
        self._first += 1
        return self._items.popleft()
