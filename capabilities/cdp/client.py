"""The harness side of ``cdp/1.3``: ``await client.open("browser")`` gives a :class:`DevTools`.

Its ``endpoint`` is the task's own browser (through the tunnel, or at its own address for
a client in the server's network namespace), for any CDP client:

    devtools = await client.open("browser")
    browser = await playwright.chromium.connect_over_cdp(devtools.endpoint)

or without ``open``: :func:`endpoint_url` of ``await client.binding("browser")``.
"""

from __future__ import annotations

from hud.protocol.messages import Binding

from .page import DevTools

CONNECT_TIMEOUT = 15.0


def endpoint_url(binding: Binding) -> str:
    """The HTTP endpoint of this task's browser: the binding's URL plus the task's secret
    path (``endpoint_path`` in the bindings of ``tasks.start``). Without a task's path it is
    the bare URL, which the DevTools proxy refuses (403): every request needs the path."""
    return binding.url.rstrip("/") + str(binding.params.get("endpoint_path", ""))


async def open_devtools(binding: Binding) -> DevTools:
    """The ``hud.capabilities`` entry point for ``cdp``: connect to the task's browser.

    A browser that is gone (its task ended, or it crashed) raises ``ConnectionError`` with
    the environment's reason."""
    return await DevTools.connect(endpoint_url(binding), timeout=CONNECT_TIMEOUT)
