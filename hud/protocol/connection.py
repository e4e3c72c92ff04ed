"""Sans-I/O connections of protocol v1: frames in, calls and replies out.

:class:`ServerConnection` is one control connection as the environment sees it. Feed it each
text frame with :meth:`~ServerConnection.receive`; it decodes the request, enforces the
rules of the channel, and hands back the :class:`Call` objects the driver must run now. The
driver runs each call's handler and reports the outcome with :meth:`~ServerConnection.finish`,
which may release more calls. Every frame to send (replies, and the errors the core answers
by itself) comes out of :meth:`~ServerConnection.data_to_send`, in order.

:class:`ClientConnection` is the other side: it numbers requests, remembers what each
pending id asked for, and turns replies into typed results or the server's error class.

The rules, all here and nowhere else:

* ``manifest`` first: any other method before it (or after ``bye``) is refused;
* a method's :class:`~.methods.Schedule` decides its turn: an inline request holds every
  later frame until its reply is out; queued requests run one at a time in arrival order;
* limits: a frame over ``max_message_size``, an id over :data:`MAX_ID_LENGTH` characters,
  binary frames and JSON nested too deeply are refused with an error, never dropped;
* back-pressure: :attr:`ServerConnection.saturated` says when the driver should stop
  reading because :data:`MAX_WAITING` frames and requests, or :data:`MAX_WAITING_BYTES`
  of their frames, are waiting their turn.

Nothing here does I/O or knows about asyncio, so every rule is tested without sockets.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Mapping

from msgspec import UNSET, UnsetType

from . import codec
from .errors import (
    Cancelled,
    HudError,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
)
from .messages import Body, Params, RequestId
from .methods import METHODS, Method

MAX_WAITING = 64
"""Frames held behind an inline request plus queued requests waiting their turn, before the
driver should stop reading the connection."""

MAX_WAITING_BYTES = 8 * 1024 * 1024
"""Characters of the frames waiting their turn (as :data:`MAX_WAITING`) before the driver
should stop reading: without it, 64 frames near ``max_message_size`` would be held at once."""

MAX_ID_LENGTH = 256
"""Longest id accepted, in characters of a string or digits of a number: a reply echoes its
id, so a huge id would be sent back. A longer one is answered with id null."""

Outcome = Body | HudError
"""What a call ended with: its result, or the error to send instead."""


class Call:
    """One accepted request, for the driver to run and then pass to
    :meth:`ServerConnection.finish` exactly once.

    ``id`` is ``UNSET`` for a notification (it runs, but gets no reply); ``size`` counts the
    characters of the frame it came in, while it waits its turn. (A plain class, as is
    :class:`Reply`: the CLI imports this module, and a dataclass costs it start-up time.)"""

    __slots__ = ("id", "method", "params", "size")

    def __init__(self, id: RequestId | UnsetType, method: Method, params: Params) -> None:
        self.id = id
        self.method = method
        self.params = params
        self.size = 0


class ServerConnection:
    """The server's side of one control connection; see the module docstring.

    ``declined`` names methods of the table this server does not serve, with the hint its
    error gives (for example ``tasks.solve`` when solutions are off).
    """

    __slots__ = ("_held", "_inline", "_outbox", "_queued", "_running", "_waiting_size",
                 "declined", "max_message_size", "opened")

    def __init__(self, *, max_message_size: int, declined: Mapping[str, str] = {}) -> None:
        self.max_message_size = max_message_size
        self.declined = declined
        self.opened = False
        """True once ``manifest`` succeeded, until ``bye`` succeeds."""
        self._outbox: list[bytes] = []
        # Made on first use: an empty deque is 760 bytes, and most connections never hold
        # a frame or queue a call (10,000 open sessions would pay 15 MB for nothing).
        self._held: collections.deque[str | bytes | bytearray] | None = None
        self._inline: Call | None = None
        self._running: Call | None = None
        self._queued: collections.deque[Call] | None = None
        self._waiting_size = 0  # characters of the held frames and queued calls

    @property
    def saturated(self) -> bool:
        """Whether the driver should stop reading until more calls finish."""
        return (len(self._held or ()) + len(self._queued or ()) >= MAX_WAITING
                or self._waiting_size >= MAX_WAITING_BYTES)

    @property
    def idle(self) -> bool:
        """No call in progress and none waiting."""
        return self._inline is None and self._running is None and not self._queued

    def receive(self, frame: str | bytes | bytearray) -> list[Call]:
        """Take one frame; return the calls to start now, in order (possibly none)."""
        if self._inline is not None:
            if self._held is None:
                self._held = collections.deque()
            self._held.append(frame)
            self._waiting_size += len(frame)
            return []
        return self._take(frame)

    def finish(self, call: Call, outcome: Outcome) -> list[Call]:
        """Record how ``call`` ended (its reply goes to :meth:`data_to_send`); return the
        calls that may start now that it is done."""
        self._reply(call, outcome)
        ready: list[Call] = []
        if call is self._running:
            self._running = self._queued.popleft() if self._queued else None
            if self._running is not None:
                self._waiting_size -= self._running.size
                ready.append(self._running)
        elif call is self._inline:
            self._inline = None
            while self._held and self._inline is None:
                frame = self._held.popleft()
                self._waiting_size -= len(frame)
                ready += self._take(frame)
        return ready

    def cancel_waiting(self, reason: str) -> int:
        """Answer every queued call that has not started with :class:`Cancelled`; returns
        how many. The call in progress is the driver's to cancel (then :meth:`finish` it)."""
        waiting, self._queued = self._queued or collections.deque(), None
        self._waiting_size -= sum(call.size for call in waiting)
        for call in waiting:
            error = Cancelled(f"{call.method.name} was cancelled before it started: {reason}")
            self._reply(call, error)
        return len(waiting)

    def data_to_send(self) -> list[bytes]:
        """Frames to send, in order; each is returned once."""
        out, self._outbox = self._outbox, []
        return out

    # -- internals ------------------------------------------------------------------------

    def _take(self, frame: str | bytes | bytearray) -> list[Call]:
        call = self._accept(frame)
        if call is None:
            return []
        if call.method.queued:
            if self._running is None:
                self._running = call
                return [call]
            call.size = len(frame)
            if self._queued is None:
                self._queued = collections.deque()
            self._queued.append(call)
            self._waiting_size += call.size
            return []
        self._inline = call
        return [call]

    def _accept(self, frame: str | bytes | bytearray) -> Call | None:
        """Decode and check one frame; None when it was answered with an error."""
        if not isinstance(frame, str):
            self._refuse(None, InvalidRequest(
                "binary frames are not accepted on the control channel; "
                "send each request as one JSON text frame"))
            return None
        if len(frame) > self.max_message_size:
            self._refuse(_echoable_id_of(frame), LimitExceeded(
                f"frame of {len(frame)} characters exceeds the limit of "
                f"{self.max_message_size}",
                {"limit": "max_message_size", "value": self.max_message_size,
                 "size": len(frame)}))
            return None
        try:
            request = codec.decode_request(frame)
        except HudError as exc:
            self._refuse(_echoable_id_of(frame), exc)
            return None
        if _too_long(request.id):
            self._refuse(None, LimitExceeded(
                f"request id longer than the limit of {MAX_ID_LENGTH} characters",
                {"limit": "max_id_length", "value": MAX_ID_LENGTH}))
            return None
        try:
            params = codec.decode_params(request)
            method = METHODS[request.method]
            self._check(method)
        except HudError as exc:
            if request.id is not UNSET:
                self._refuse(request.id, exc)
            return None
        return Call(id=request.id, method=method, params=params)

    def _check(self, method: Method) -> None:
        hint = self.declined.get(method.name)
        if hint is not None:
            raise MethodNotFound(f"{method.name!r} is not served here ({hint})",
                                 {"method": method.name})
        if method.needs_session and not self.opened:
            raise InvalidRequest(f"send manifest before {method.name}")

    def _reply(self, call: Call, outcome: Outcome) -> None:
        if not isinstance(outcome, HudError):
            if not call.method.needs_session:
                self.opened = True
            elif call.method.ends_session:
                self.opened = False
        if call.id is UNSET:
            return
        if isinstance(outcome, HudError):
            self._outbox.append(codec.encode_error(call.id, outcome))
        else:
            self._outbox.append(codec.encode_result(call.id, outcome))

    def _refuse(self, request_id: RequestId, error: HudError) -> None:
        self._outbox.append(codec.encode_error(request_id, error))


def _too_long(request_id: RequestId | UnsetType) -> bool:
    if isinstance(request_id, str):
        return len(request_id) > MAX_ID_LENGTH
    return isinstance(request_id, int) and abs(request_id) >= _ID_NUMBER_LIMIT


_ID_NUMBER_LIMIT = 10**MAX_ID_LENGTH


def _echoable_id_of(frame: str) -> RequestId:
    """The id of a frame that failed to decode, when it is short enough to send back."""
    request_id = codec.request_id_of(frame)
    return None if _too_long(request_id) else request_id


class Reply:
    """A reply the client matched to one of its requests."""

    __slots__ = ("id", "method", "outcome")

    def __init__(self, id: int, method: Method, outcome: Outcome) -> None:
        self.id = id
        self.method = method
        self.outcome = outcome


class ClientConnection:
    """The client's side of one control connection; see the module docstring."""

    __slots__ = ("_ids", "_pending", "opened")

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, Method] = {}
        self.opened = False
        """True once ``manifest`` was sent (requests may be pipelined behind it), until
        ``bye`` is sent."""

    @property
    def pending(self) -> list[int]:
        """Ids sent and not answered yet."""
        return list(self._pending)

    def send(self, method: str, params: Params) -> tuple[int, bytes]:
        """Number one request; returns its id and the frame to send. Raises
        :class:`MethodNotFound` for a method outside the table and :class:`InvalidRequest`
        for a method sent before ``manifest``."""
        spec = METHODS.get(method)
        if spec is None:
            raise MethodNotFound(f"method not found: {method!r}", {"method": method})
        if spec.needs_session and not self.opened:
            raise InvalidRequest(f"send manifest before {method}")
        if not spec.needs_session:
            self.opened = True
        elif spec.ends_session:
            self.opened = False
        rid = next(self._ids)
        self._pending[rid] = spec
        return rid, codec.encode_request(rid, method, params)

    def forget(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (its caller gave up); a late reply is ignored."""
        self._pending.pop(request_id, None)

    def receive(self, frame: str | bytes | bytearray) -> Reply | None:
        """Match one frame to its request. None for a reply to a forgotten id. Raises
        :class:`HudError` when the frame cannot be trusted: undecodable, or an error tied
        to no request (the server refused something it could not attribute)."""
        reply = codec.decode_reply(frame)
        if reply.id is None and reply.error is not UNSET:
            raise codec.error_of(reply.error)
        spec = self._pending.pop(reply.id, None) if isinstance(reply.id, int) else None
        if spec is None or not isinstance(reply.id, int):
            return None
        if reply.error is not UNSET:
            return Reply(reply.id, spec, codec.error_of(reply.error))
        if reply.result is UNSET:
            error = HudError(f"{spec.name}: reply has neither result nor error")
            return Reply(reply.id, spec, error)
        try:
            return Reply(reply.id, spec, codec.decode_result(spec.name, reply.result))
        except HudError as exc:
            return Reply(reply.id, spec, exc)
