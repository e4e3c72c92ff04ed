"""hud's errors that never cross the wire (those are in :mod:`hud.protocol.errors`).

Each is raised by one layer and translated, where it meets the user, into their terms: a
CLI message and exit code, a failed rollout with its phase, or a model-visible tool result.

=======================  ==================================================================
class                    raised when
=======================  ==================================================================
HudConnectionError       an environment cannot be reached, refuses the handshake, goes away
CapabilityUnavailable    a capability's tunnel is refused or its daemon is unreachable
TransportClosed          a control connection or tunnel is closing or closed
CapabilityLost           the agent killed its own capability (scored 0, never an error)
ToolError                a tool call failed in a way the model can read and correct
ModelAPIError            a model's API failed for good
GraderError              a grader could not produce a score (never a score of 0)
LoadError                an environment or task file cannot be loaded
AddressError             a URL hud cannot use
StoreError, UnknownId    the trace store cannot be opened, or an id matches nothing
=======================  ==================================================================

Errors of one capability's own protocol (a DevTools error, an RFB refusal) stay with that
capability: they mean nothing outside it.
"""

from __future__ import annotations


class HudConnectionError(ConnectionError):
    """The environment could not be reached, refused the handshake, or went away."""


class CapabilityUnavailable(HudConnectionError):
    """A capability's tunnel was refused or its daemon could not be reached."""


class TransportClosed(ConnectionError):
    """The connection under a control session or a tunnel is closing or closed.

    ``code`` and ``reason`` are the WebSocket close code and reason when one was received
    (``None`` when the connection dropped without a close frame).
    """

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class ToolError(Exception):
    """A tool call failed in a way the model should read and may correct (a missing file, an
    ambiguous edit, a bad argument).

    Raise it from a harness's tool, or from an MCP tool or its ``before`` hook: the call then
    returns the message as the tool's result, marked as an error, and the rollout goes on. It
    is never fatal. A failure no tool call can recover from (a lost connection to the
    environment, a model API that keeps failing) must not be a ``ToolError``: it ends the run.
    """


class CapabilityLost(Exception):
    """A task's capability died under the agent: its sandbox was killed, its browser crashed.

    The capabilities' template-side APIs (``workspace.run``, ``browser.evaluate``, ...) raise
    it when they find their task's daemon gone. The agent controls what runs there, so this is
    the agent's failure, not the infrastructure's: when it escapes a template's grading code,
    the task is scored 0 with ``info["cause"]`` set to the message. Anywhere else (setup,
    before the agent has acted) it is an ordinary template error.
    """


class ModelAPIError(RuntimeError):
    """The model's API failed for good: an error that retrying cannot fix, or retries ran out."""


class LoadError(Exception):
    """The target could not be imported or holds no (or more than one) environment."""


class AddressError(ValueError):
    """A URL hud cannot use."""


class StoreError(Exception):
    """The store cannot be opened: missing (when not creating) or written by a newer hud."""


class UnknownId(KeyError):
    """No job or run matches an id (or prefix), or a prefix matches several."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


class GraderError(Exception):
    """A grader could not produce a score (a judge that never answered, for instance).

    Raised, never turned into a score of 0: a failure to grade is not a low reward.
    """


class TemplateBlocked(RuntimeError):
    """Raised inside template code that held the event loop past the watchdog's limit (a
    ``time.sleep``, a synchronous HTTP call): every other session was waiting. The template
    fails with this as its error; blocking work belongs in ``asyncio.to_thread``."""
