"""Built-in harness plug-ins, installed as ``hud.harnesses``, and the core they share.

The core is neutral (no provider's SDK or wire format): :mod:`.tool` (the tool spec, a tool's
output), :mod:`.toolbox` (runs calls by name), :mod:`.content` (the prompt's blocks and turns),
:mod:`.retry` (model requests with bounded retries), :mod:`.dialogue` (the agent loop),
:mod:`.workbench` (the capabilities, opened), :mod:`.computer` (computer use on a screen),
:mod:`.shell_tools`, :mod:`.mcp_tools` and :mod:`.editing` (tools over capabilities) and
:mod:`.provider` (the base of a model-provider harness). Each provider package (``claude``,
``openai_responses``, ``gemini``, ``openai_compatible``) imports from these and from no other
provider. The names below load lazily: importing one harness loads only what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hud.errors import ModelAPIError, ToolError

    from .computer import Computer, switch_screen
    from .dialogue import Dialect, Limits, Turn, converse, run_tools
    from .provider import ProviderAgent, ProviderSettings
    from .retry import RequestPolicy, send_with_retries
    from .tool import Image, Tool, ToolFunction, ToolOutput, ToolSpec
    from .toolbox import ToolBox
    from .workbench import Workbench, open_capability, open_workbench

_EXPORTS = {
    "ToolError": "hud.errors",
    "Computer": ".computer", "switch_screen": ".computer",
    "Dialect": ".dialogue", "Limits": ".dialogue", "Turn": ".dialogue", "converse": ".dialogue",
    "run_tools": ".dialogue",
    "ProviderAgent": ".provider", "ProviderSettings": ".provider",
    "ModelAPIError": "hud.errors", "RequestPolicy": ".retry", "send_with_retries": ".retry",
    "Image": ".tool", "Tool": ".tool", "ToolFunction": ".tool", "ToolOutput": ".tool",
    "ToolSpec": ".tool",
    "ToolBox": ".toolbox",
    "Workbench": ".workbench", "open_capability": ".workbench", "open_workbench": ".workbench",
}
__all__ = [
    "Computer", "Dialect", "Image", "Limits", "ModelAPIError", "ProviderAgent",
    "ProviderSettings", "RequestPolicy", "Tool", "ToolBox", "ToolError", "ToolFunction",
    "ToolOutput", "ToolSpec", "Turn", "Workbench", "converse", "open_capability",
    "open_workbench", "run_tools", "send_with_retries", "switch_screen",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
