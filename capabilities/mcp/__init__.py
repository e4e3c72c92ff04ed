"""``mcp/2025-11-25``: tools served over MCP (:class:`Tool`, ``@env.tool()``), existing MCP
servers wrapped as capabilities (:func:`add_mcp_server`), and the client (:class:`Tools`).

The names load lazily: declaring tools does not import the MCP SDK until the environment
starts serving them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hud.errors import ToolError

    from .bridge import add_mcp_server
    from .client import Tools, open_tools
    from .tools import Tool

__all__ = ["Tool", "ToolError", "Tools", "add_mcp_server", "open_tools"]

_EXPORTS = {"Tool": ".tools", "ToolError": "hud.errors", "Tools": ".client",
            "open_tools": ".client", "add_mcp_server": ".bridge"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
