"""``openai_compatible``: a harness for any Chat Completions server.

The pieces, each usable alone: :mod:`.toolbox` (the neutral tool spec and a box that runs
tools), :mod:`.shell_tools` and :mod:`.mcp_tools` (tools from capabilities), :mod:`.chat`
(pure mapping to and from the Chat Completions wire format), :mod:`.loop` (the agent loop,
with retries) and :mod:`.agent` (settings, and the harness that ties them together).
"""

from .agent import OpenAICompatibleAgent, Settings, open_toolbox
from .loop import ModelAPIError, RequestPolicy
from .toolbox import Image, Tool, ToolBox, ToolError, ToolOutput, ToolSpec

__all__ = [
    "Image",
    "ModelAPIError",
    "OpenAICompatibleAgent",
    "RequestPolicy",
    "Settings",
    "Tool",
    "ToolBox",
    "ToolError",
    "ToolOutput",
    "ToolSpec",
    "open_toolbox",
]
