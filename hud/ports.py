"""The TCP ports this process serves hud on: the control port, the capabilities' daemons
and relays, DevTools, a client's tunnel ends.

Whatever lets the agent open connections refuses all of them: a page in the agent's
browser must not drive the control channel, grade its own task or reach another task's
capability (see :mod:`hud.capabilities.cdp.egress`). Register a port once it is bound and
release it once it is closed.
"""

from __future__ import annotations

_serving: set[int] = set()


def claim(port: int) -> int:
    """Register ``port`` as hud's; returns it."""
    _serving.add(port)
    return port


def release(port: int) -> None:
    _serving.discard(port)


def serving() -> frozenset[int]:
    """Every port registered and not yet released."""
    return frozenset(_serving)
