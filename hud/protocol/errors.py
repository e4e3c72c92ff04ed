"""Every error the protocol can carry, each class with its JSON-RPC code.

The server raises these; the client turns an error frame back into the same class
(:func:`error_from_wire`), so ``except UnknownTask`` works on both sides of the wire.
The table in ``protocol/README.md`` lists the same codes; a test keeps them in step.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HudError(Exception):
    """Base of every error that crosses the wire.

    ``data`` is the structured detail sent in the error frame's ``data`` member
    (for example the JSON path of an invalid parameter). It must be JSON-serialisable.
    """

    code: ClassVar[int] = -32603
    kind: ClassVar[str] = "internal_error"

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}


class ParseError(HudError):
    """The frame is not valid JSON."""

    code = -32700
    kind = "parse_error"


class InvalidRequest(HudError):
    """The frame is JSON but not a JSON-RPC 2.0 request we accept (or arrives out of order)."""

    code = -32600
    kind = "invalid_request"


class MethodNotFound(HudError):
    """The method is not part of protocol v1 (or not served on this connection)."""

    code = -32601
    kind = "method_not_found"


class InvalidParams(HudError):
    """A parameter has the wrong type or value; ``data["path"]`` is its JSON path."""

    code = -32602
    kind = "invalid_params"


class InternalError(HudError):
    """A bug in hud itself, never in the template (that is :class:`TemplateError`)."""

    code = -32603
    kind = "internal_error"


class UnknownTask(HudError):
    """``tasks.start`` named a template the environment does not have."""

    code = -32001
    kind = "unknown_task"


class NoTaskInProgress(HudError):
    """``tasks.grade`` found no task to grade: none on this session and none parked."""

    code = -32002
    kind = "no_task_in_progress"


class AmbiguousSessions(HudError):
    """More than one parked task could be adopted; ``data["sessions"]`` names them."""

    code = -32003
    kind = "ambiguous_sessions"


class TemplateError(HudError):
    """The template failed; ``data["phase"]`` says where: setup, grade, cleanup or solution."""

    code = -32004
    kind = "template_error"


class UnsupportedVersion(HudError):
    """No protocol version in common; ``data["supported"]`` lists the server's."""

    code = -32005
    kind = "unsupported_version"


class Unauthorized(HudError):
    """The token is missing or wrong (sent as HTTP 401 at the WebSocket handshake)."""

    code = -32006
    kind = "unauthorized"


class LimitExceeded(HudError):
    """A configured limit was hit; ``data["limit"]`` names it and gives its value."""

    code = -32007
    kind = "limit_exceeded"


class UnknownSession(HudError):
    """A session id to resume does not exist (never did, was graded, or expired)."""

    code = -32008
    kind = "unknown_session"


class SessionBusy(HudError):
    """The session to resume is attached to another live connection."""

    code = -32009
    kind = "session_busy"


class Cancelled(HudError):
    """The request was cancelled by ``tasks.cancel``, ``bye`` or server shutdown."""

    code = -32010
    kind = "cancelled"


class CannotFork(HudError):
    """``tasks.fork`` made nothing: ``data["cause"]`` says why: ``capability`` (named in
    ``data["capability"]``), ``memory``, ``processes``, ``disk`` or ``start``, or ``runtime``."""

    code = -32011
    kind = "cannot_fork"


ERRORS: tuple[type[HudError], ...] = (
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InternalError,
    UnknownTask,
    NoTaskInProgress,
    AmbiguousSessions,
    TemplateError,
    UnsupportedVersion,
    Unauthorized,
    LimitExceeded,
    UnknownSession,
    SessionBusy,
    Cancelled,
    CannotFork,
)

_BY_CODE: dict[int, type[HudError]] = {cls.code: cls for cls in ERRORS}


def error_from_wire(code: int, message: str, data: dict[str, Any] | None = None) -> HudError:
    """Rebuild the exception a server sent; unknown codes become a plain :class:`HudError`."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = HudError(message, data)
        err.code = code  # type: ignore[misc]  # keep the foreign code visible
        return err
    return cls(message, data)
