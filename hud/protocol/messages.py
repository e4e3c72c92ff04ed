"""The wire model of protocol v1: one msgspec Struct per message body.

These types are the source of truth for ``protocol/v1/*.schema.json``; the schema files are
generated from them (``python -m hud.protocol.schema --write``) and a test fails when the two
drift. A breaking change means a new protocol version, never an edit of v1.

Optional members are ``UNSET`` and left out of the JSON; the envelope never omits members.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Raw, Struct, UnsetType

PROTOCOL_VERSION = "1"
SUPPORTED_VERSIONS: tuple[str, ...] = (PROTOCOL_VERSION,)

RequestId = int | str | None

# --- envelope --------------------------------------------------------------------------------


class Request(Struct, kw_only=True):
    """A JSON-RPC 2.0 request. Without ``id`` it is a notification and gets no reply.

    ``params`` stays raw here: it is decoded in a second stage, by method.
    """

    jsonrpc: Literal["2.0"]
    method: str
    id: RequestId | UnsetType = UNSET
    params: Raw = Raw(b"{}")


class ErrorObject(Struct, kw_only=True, omit_defaults=True):
    code: int
    message: str
    data: dict[str, Any] | UnsetType = UNSET


class Response(Struct, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RequestId
    result: Any


class ErrorResponse(Struct, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RequestId
    error: ErrorObject


class Reply(Struct, kw_only=True):
    """What a client decodes: a response or an error, told apart by which member is set."""

    jsonrpc: Literal["2.0"]
    id: RequestId
    result: Raw | UnsetType = UNSET
    error: ErrorObject | UnsetType = UNSET


# --- shared pieces ---------------------------------------------------------------------------


class Params(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every ``params`` body: unknown members are an error, not silently dropped."""


class Body(Struct, kw_only=True, omit_defaults=True):
    """Base of every ``result`` body."""


class PeerInfo(Body, kw_only=True):
    """Who is on the other end: a client or an environment."""

    name: str
    version: str
    description: str | UnsetType = UNSET


class TextBlock(Struct, kw_only=True, tag="text", tag_field="type"):
    text: str


class ImageBlock(Struct, kw_only=True, tag="image", tag_field="type"):
    """An image, base64-encoded, with its media type (``image/png``, ``image/jpeg``, ...)."""

    data: str
    mime_type: str


ContentBlock = TextBlock | ImageBlock


class Message(Struct, kw_only=True):
    """One chat turn, when a template prompts with a conversation instead of a single text."""

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentBlock]


class Binding(Body, kw_only=True):
    """A capability the agent may open: a name, a protocol id such as ``ssh/2``, where, and how.

    ``url`` is the daemon's address as the environment sees it; clients reach it through a
    tunnel on the control port (path ``/v1/tunnel/{name}``), never by dialling it directly.
    """

    name: str
    protocol: str
    url: str
    params: dict[str, Any] = {}


class TemplateInfo(Body, kw_only=True):
    """A task template: its id, what it asks, and JSON Schemas of its arguments and answer."""

    id: str
    description: str = ""
    args: dict[str, Any] = {}
    answer: dict[str, Any] = {}
    # True when the template declares a reference solution (see tasks.solve).
    has_solution: bool = False


class TaskRef(Body, kw_only=True):
    """One concrete task: a template id with its validated arguments (defaults applied)."""

    template: str
    args: dict[str, Any] = {}


class Subscore(Body, kw_only=True):
    name: str
    score: float
    weight: float = 1.0


# --- methods ---------------------------------------------------------------------------------


class ManifestParams(Params, kw_only=True):
    """Opens (or resumes) a session. Must be the first request on a control connection."""

    client: PeerInfo
    protocol_versions: list[str]
    session_id: str | UnsetType = UNSET


class ManifestResult(Body, kw_only=True):
    protocol_version: str
    session_id: str
    resumed: bool
    environment: PeerInfo
    templates: list[TemplateInfo] = []
    capabilities: list[Binding] = []
    # The task this session holds, when it resumed one that was parked.
    task: TaskRef | UnsetType = UNSET


class ListParams(Params, kw_only=True):
    pass


class ListResult(Body, kw_only=True):
    templates: list[TemplateInfo]


class StartParams(Params, kw_only=True):
    """Starts a task; any task this session already holds is cancelled first."""

    template: str
    args: dict[str, Any] = {}


class StartResult(Body, kw_only=True):
    session_id: str
    task: TaskRef
    prompt: str | list[ContentBlock]
    # Set when the template prompted with a conversation; ``prompt`` is then its last user turn.
    messages: list[Message] | UnsetType = UNSET
    # Per-episode parameters for capabilities, keyed by capability name.
    bindings: dict[str, dict[str, Any]] = {}


class GradeParams(Params, kw_only=True):
    """Grades the task this session holds, or adopts the only parked one.

    ``template``, when given, must match the task's template: a guard against grading
    someone else's parked task.
    """

    answer: Any = None
    template: str | UnsetType = UNSET


class GradeResult(Body, kw_only=True):
    session_id: str
    task: TaskRef
    reward: Annotated[float, Meta(ge=0.0, le=1.0)]
    subscores: list[Subscore] | UnsetType = UNSET
    info: dict[str, Any] | UnsetType = UNSET


class SolveParams(Params, kw_only=True):
    """Runs the reference solution of this session's task and returns its answer.

    Served only when the server was started with solutions enabled (they reveal answers);
    otherwise the method is not found. Used by the ``oracle`` harness and ``hud check``.
    """


class SolveResult(Body, kw_only=True):
    answer: Any = None


class CancelParams(Params, kw_only=True):
    pass


class CancelResult(Body, kw_only=True):
    cancelled: bool


class StatusParams(Params, kw_only=True):
    """Asks for the state of every task the server holds, attached or parked."""


class TaskStatus(Body, kw_only=True):
    """One task held by a session."""

    session_id: str
    task: TaskRef
    attached: bool
    """True while a connection holds the session; False while it is parked."""
    started: bool
    """True once the prompt was produced (the template's setup finished)."""
    age: float
    """Seconds since ``tasks.start`` was received for it."""
    expires_in: float | UnsetType = UNSET
    """Parked tasks only: seconds until the server cancels it (the park TTL)."""


class StatusResult(Body, kw_only=True):
    sessions: int
    """Open sessions, with or without a task."""
    tasks: list[TaskStatus]


class ForkParams(Params, kw_only=True):
    """Branches the episode this session holds into ``count`` new sessions.

    The task must have started and not yet been graded. Each new session holds an
    independent copy of the episode as it is now (the template's suspended state, the
    environment's in-memory state, the copyable capabilities' state); it is parked until a
    client claims it by resuming its ``session_id`` at its ``url``. The original goes on
    unchanged. The server caps ``count`` (``limit_exceeded``, limit ``max_forks``).
    """

    count: Annotated[int, Meta(ge=1)] = 1


class Fork(Body, kw_only=True):
    """One branch: a parked session on a server of its own, waiting to be claimed."""

    session_id: str
    """Resume it (``manifest`` with this ``session_id``) to claim the branch."""
    url: str
    """The branch's server, as the environment's host sees it (``ws://127.0.0.1:PORT``)."""
    token: str
    """The bearer token of the branch's server (its own, not the original's)."""
    task: TaskRef
    bindings: dict[str, dict[str, Any]] = {}
    """The branch's own per-episode capability parameters, as ``tasks.start`` gives them."""
    expires_in: float
    """Seconds the branch waits to be claimed before it is cleaned up (the park TTL)."""


class ForkResult(Body, kw_only=True):
    session_id: str
    """The original session, which goes on unchanged."""
    sessions: list[Fork]


class ByeParams(Params, kw_only=True):
    pass


class ByeResult(Body, kw_only=True):
    pass


__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "UNSET",
    "Binding",
    "Body",
    "ByeParams",
    "ByeResult",
    "CancelParams",
    "CancelResult",
    "ContentBlock",
    "ErrorObject",
    "ErrorResponse",
    "Fork",
    "ForkParams",
    "ForkResult",
    "GradeParams",
    "GradeResult",
    "ImageBlock",
    "ListParams",
    "ListResult",
    "ManifestParams",
    "ManifestResult",
    "Message",
    "Params",
    "PeerInfo",
    "Reply",
    "Request",
    "RequestId",
    "Response",
    "SolveParams",
    "SolveResult",
    "StartParams",
    "StartResult",
    "StatusParams",
    "StatusResult",
    "Subscore",
    "TaskRef",
    "TaskStatus",
    "TemplateInfo",
    "TextBlock",
]
