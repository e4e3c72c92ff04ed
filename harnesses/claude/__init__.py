"""``claude``: Anthropic's Messages API on Claude's native tools (see :mod:`.agent`)."""

from .agent import ClaudeAgent, Settings

__all__ = ["ClaudeAgent", "Settings"]
