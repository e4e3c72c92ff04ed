"""``gemini``: Google's Gemini API on Gemini's native tools (see :mod:`.agent`)."""

from .agent import GeminiAgent, Settings

__all__ = ["GeminiAgent", "Settings"]
