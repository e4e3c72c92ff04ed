"""hud's errors that never cross the wire (the wire's own, each with its JSON-RPC code, are in
:mod:`hud.protocol.errors`)."""

from __future__ import annotations

__all__ = ["ToolError"]


class ToolError(Exception):
    """A tool call failed in a way the model should read and may correct (a missing file, an
    ambiguous edit, a bad argument).

    Raise it from a tool, or from an MCP tool's ``before`` hook: the call then returns the
    message as the tool's result, marked as an error, and the rollout goes on. It is never fatal.
    A failure that no tool call can recover from (a lost connection to the environment, a
    model API that keeps failing) must not be a ``ToolError``: it ends the run instead.
    """
