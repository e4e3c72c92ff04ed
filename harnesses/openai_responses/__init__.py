"""``openai``: OpenAI's Responses API on GPT's native tools (see :mod:`.agent`)."""

from .agent import OpenAIAgent, Settings

__all__ = ["OpenAIAgent", "Settings"]
