"""``openai_compatible``: a harness for any Chat Completions server.

:mod:`.wire` maps our types to and from the Chat Completions wire format (pure functions),
:mod:`.loop` is the agent loop and :mod:`.agent` the settings and the harness that ties them
together. The tools, the tool box and the retry policy are the shared core in
:mod:`hud.harnesses`.
"""

from .agent import OpenAICompatibleAgent, Settings, open_toolbox

__all__ = ["OpenAICompatibleAgent", "Settings", "open_toolbox"]
