"""Bytes in, typed messages out, and back: the sans-I/O codec of protocol v1.

Decoding happens in two stages. :func:`decode_request` reads the envelope and leaves
``params`` raw; :func:`decode_params` then decodes it with the type its method declares.
Every failure becomes the :mod:`hud.protocol.errors` class whose code belongs on the wire,
with the JSON path of the offending member in ``data["path"]``.

Encoders and decoders are built once and reused for every message: the envelopes' at import,
each method's params and result decoders on first use (building all sixteen would cost
every ``hud task`` process start-up time for two it needs).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .errors import (
    HudError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
    error_from_wire,
)
from .messages import (
    Body,
    ErrorObject,
    ErrorResponse,
    Params,
    Reply,
    Request,
    RequestId,
    Response,
)
from .methods import METHODS

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)
_params_decoders: dict[str, msgspec.json.Decoder[Params]] = {}
_result_decoders: dict[str, msgspec.json.Decoder[Body]] = {}
_any_decoder = msgspec.json.Decoder()

_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)


def split_validation_error(exc: msgspec.ValidationError, prefix: str = "$") -> tuple[str, str]:
    """Split msgspec's ``"Expected `int`, got `str` - at `$.a`"`` into message and path.

    ``prefix`` replaces the leading ``$`` so a path inside ``params`` reads ``$.params.a``.
    """
    match = _AT_PATH.match(str(exc))
    assert match is not None  # the pattern matches any string
    path = match.group("path") or "$"
    return match.group("message"), prefix + path[1:]


def decode_request(frame: bytes | str) -> Request:
    """Decode one control frame's envelope.

    Raises :class:`ParseError` for malformed JSON and :class:`InvalidRequest` for JSON that
    is not a single JSON-RPC 2.0 request object (arrays, i.e. batches, are not accepted).
    """
    try:
        return _request_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        raise InvalidRequest(f"not a JSON-RPC 2.0 request: {message}", {"path": path}) from None
    except msgspec.DecodeError as exc:
        raise ParseError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ParseError(_TOO_DEEP) from None


_TOO_DEEP = "malformed JSON: nested too deeply"


def request_id_of(frame: bytes | str) -> RequestId:
    """Best-effort ``id`` of a frame that failed to decode as a request (``None`` if unknown)."""
    try:
        value = _any_decoder.decode(frame)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, (int, str)) and not isinstance(rid, bool):
            return rid
    return None


def decode_params(request: Request) -> Params:
    """Decode ``request.params`` with the type its method declares."""
    decoder = _params_decoders.get(request.method)
    if decoder is None:
        method = METHODS.get(request.method)
        if method is None:
            raise MethodNotFound(f"method not found: {request.method!r}",
                                 {"method": request.method})
        decoder = _params_decoders[method.name] = msgspec.json.Decoder(method.params)
    try:
        return decoder.decode(request.params)
    except RecursionError:
        raise InvalidParams(f"{request.method}: params nested too deeply",
                            {"path": "$.params"}) from None
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc, "$.params")
        raise InvalidParams(f"{request.method}: {message} at {path}", {"path": path}) from None


def encode_result(request_id: RequestId, result: Body) -> bytes:
    return _encoder.encode(Response(id=request_id, result=result))


def encode_error(request_id: RequestId, error: HudError) -> bytes:
    data = error.data or msgspec.UNSET
    body = ErrorObject(code=error.code, message=error.message, data=data)
    return _encoder.encode(ErrorResponse(id=request_id, error=body))


def encode_request(request_id: RequestId, method: str, params: Params | dict[str, Any]) -> bytes:
    """Encode a request; ``request_id=None`` would be a JSON null id, not a notification."""
    return _encoder.encode(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    )


def decode_reply(frame: bytes | bytearray | str) -> Reply:
    try:
        return _reply_decoder.decode(frame)
    except msgspec.DecodeError as exc:
        raise ParseError(f"malformed reply from server: {exc}") from None
    except RecursionError:
        raise ParseError(f"{_TOO_DEEP} (reply from server)") from None


def error_of(error: ErrorObject) -> HudError:
    """The exception class an error object stands for (see :func:`error_from_wire`)."""
    return error_from_wire(error.code, error.message, error.data or None)


def decode_result(method: str, raw: msgspec.Raw) -> Body:
    """Decode a ``result`` with the type of ``method``'s result."""
    try:
        decoder = _result_decoders.get(method)
        if decoder is None:
            decoder = _result_decoders[method] = msgspec.json.Decoder(METHODS[method].result)
        return decoder.decode(raw)
    except RecursionError:
        raise ParseError(f"{_TOO_DEEP} ({method} result from server)") from None
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc, "$.result")
        raise InvalidRequest(f"{method}: bad result from server: {message} at {path}") from None


def encode(value: Any) -> bytes:
    """Encode any JSON-able value with the shared encoder."""
    return _encoder.encode(value)
