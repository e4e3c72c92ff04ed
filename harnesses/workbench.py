"""Every capability an environment offers, opened for a native-API harness.

:func:`open_workbench` opens each ``ssh``, ``mcp``, ``rfb`` and ``cdp`` capability in the
manifest (all of them, not only the first of each kind): shells and screens are handed to
the provider's native tools, MCP tools become function tools in :attr:`Workbench.functions`.
:func:`open_capability` opens one capability, for a harness that picks its own.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from .mcp_tools import mcp_tools
from .toolbox import ToolBox

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Workbench:
    """Opened capabilities: ``shells`` and ``screens`` as ``(name, handle)`` pairs (a
    screen is a :class:`~hud.harnesses.computer.Computer`), and the MCP tools."""

    shells: list[tuple[str, Any]] = field(default_factory=list)
    screens: list[tuple[str, Any]] = field(default_factory=list)
    functions: ToolBox = field(default_factory=ToolBox)


async def open_workbench(client: Any, stack: contextlib.AsyncExitStack,
                         screen_size: tuple[int, int] | None = None) -> Workbench:
    """Open every capability the harness can use; ``screen_size`` bounds the screenshots
    the model sees (see :class:`~hud.harnesses.computer.Computer`)."""
    from .computer import Computer, open_display

    bench = Workbench()
    bindings = list(client.manifest.capabilities)
    mcp_count = sum(b.protocol.startswith("mcp/") for b in bindings)
    for binding in bindings:
        family = binding.protocol.partition("/")[0]
        if family == "ssh":
            bench.shells.append((binding.name, await open_capability(client, binding, stack)))
        elif family == "mcp":
            handle = await open_capability(client, binding, stack)
            for tool in await mcp_tools(handle, binding.name if mcp_count > 1 else None):
                bench.functions.add(tool)
        elif family in ("rfb", "cdp"):
            handle = await open_capability(client, binding, stack)
            display = await open_display(family, handle)
            bench.screens.append((binding.name, Computer(display, screen_size)))
        else:
            log.debug("no native tools for %s (%s)", binding.name, binding.protocol)
    return bench


async def open_capability(client: Any, binding: Any, stack: contextlib.AsyncExitStack) -> Any:
    """``await client.open(name)``: the capability's handle, which closes with the client.
    An opener that returns an async context manager instead is entered on ``stack``."""
    opener = getattr(client, "open", None)
    if opener is None:
        raise RuntimeError(f"capability {binding.name!r} ({binding.protocol}) cannot be "
                           "opened: this hud client has no open()")
    opened = opener(binding.name)
    if hasattr(opened, "__aenter__"):
        return await stack.enter_async_context(opened)
    return await opened
