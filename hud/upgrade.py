"""The common case of the WebSocket opening handshake (RFC 6455 section 4.2), without I/O.

websockets' ``ServerProtocol`` parses a handshake with a generic, generator-driven HTTP
parser and builds its response header by header: about a tenth of the server's CPU for a
short-lived connection. :func:`parse_upgrade` takes a complete request head and returns
the request and its ``Sec-WebSocket-Accept`` value, or None for anything but a plain,
valid upgrade; :func:`switching_protocols` is the 101 response, from a template. The
client's side is the same in reverse: :func:`upgrade_request` writes the request from a
template, and :func:`switched` takes a plain 101 that accepts its key.

Every check here is a strict subset of websockets' own (``Request.parse`` and
``ServerProtocol.process_request``, ``Response.parse`` and ``ClientProtocol.process_response``
of websockets 17): what this module accepts, websockets would accept too, and everything
else (malformed, unusual, or asking for extensions or subprotocols) goes to websockets,
which decides it exactly as before.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import time
from email.utils import formatdate
from typing import overload

from websockets.datastructures import MultipleValuesError

MAX_HEAD = 8192
"""Bytes of request head parsed here; a longer one goes to websockets (and its limits)."""
MAX_HEADERS = 128  # websockets' MAX_NUM_HEADERS

MANIFEST_HEADER = "Hud-Manifest"
"""The control session's ``manifest`` request, sent in the upgrade request (one line of
ASCII JSON); a server that takes it answers the 101 with ``Hud-Manifest: answered`` and
the reply as its first frame (protocol/README.md, "The manifest in the upgrade")."""

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # RFC 9110 section 5.6.2 (the client's)
_VALUE = re.compile(rb"[\x09\x20-\x7e]*")  # visible ASCII (websockets also takes obs-text)
_PATH = re.compile(rb"/[\x21-\x7e]*")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_NAME = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_REQUEST_LINE = re.compile(r"GET (/[\x21-\x7e]*) HTTP/1\.1")
_FIELDS = re.compile(rf"{_NAME}:[\x09\x20-\x7e]*(?:\r\n{_NAME}:[\x09\x20-\x7e]*)*")
"""Header lines, each a name and a value of visible ASCII, spaces and tabs."""
_HUD_101 = re.compile(  # a hud server's own 101, exactly as switching_protocols writes it
    rb"HTTP/1\.1 101 Switching Protocols\r\nDate: ([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)"
    rb"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ([\x21-\x7e]+)"
    rb"\r\nServer: ([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)(\r\nHud-Manifest: answered)?")
_CONNECTION = re.compile(rf"[ \t]*{_NAME}[ \t]*(?:,[ \t]*{_NAME}[ \t]*)*")
"""A ``Connection`` value: tokens separated by commas."""
_AT_MOST_ONCE = ("upgrade", "sec-websocket-key", "sec-websocket-version", "origin")
_TEMPLATED = {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"}
_ABSENT = ("transfer-encoding", "content-length", "sec-websocket-extensions",
           "sec-websocket-protocol")


class Fields:
    """A plain upgrade's header values by lower-case name, as :func:`parse_upgrade` reads
    them: the lookups the server's gate makes of websockets' ``Headers`` (``get``,
    ``get_all``, ``[]``, ``in``, each case-insensitive), without building one (a ``Headers``
    costs more than the rest of the parse)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name.lower(), [])

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._values.get(name.lower())
        if not values:
            return default
        if len(values) > 1:  # as websockets' Headers: which one would it be?
            raise MultipleValuesError(name)
        return values[0]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values


class Head:
    """A plain upgrade request: its path (with the query) and its :class:`Fields`."""

    __slots__ = ("headers", "path")

    def __init__(self, path: str, headers: Fields) -> None:
        self.path = path
        self.headers = headers


def parse_upgrade(head: bytes | bytearray) -> tuple[Head, str] | None:
    """The request whose head (up to, not including, the blank line) is ``head``, and the
    ``Sec-WebSocket-Accept`` value that answers it; None when websockets must decide."""
    try:
        text = head.decode("ascii")  # obs-text and anything else goes to websockets
    except UnicodeDecodeError:
        return None
    first, _, fields = text.partition("\r\n")
    request = _REQUEST_LINE.fullmatch(first)
    read = _read_fields(fields) if request is not None else None
    if request is None or read is None:
        return None
    values, repeated = read
    key = _key(values, repeated)
    if key is None:
        return None
    return Head(request[1], Fields(values)), accept_value(key)


def _read_fields(fields: str) -> tuple[dict[str, list[str]], bool] | None:
    """Header lines (a head without its first line) as values by lower-case name, and
    whether a name came more than once; None unless every line is a name and a value of
    visible ASCII, spaces and tabs."""
    if not _FIELDS.fullmatch(fields):
        return None
    lines = fields.split("\r\n")
    if len(lines) > MAX_HEADERS:
        return None
    values: dict[str, list[str]] = {}
    repeated = False
    for line in lines:
        name, _, value = line.partition(":")  # a name has no colon (matched above)
        name, value = name.lower(), value.strip(" \t")
        if name in values:
            values[name].append(value)
            repeated = True
        else:
            values[name] = [value]
    return values, repeated


def _asks_upgrade(values: dict[str, list[str]]) -> bool:
    """Whether ``Connection`` names ``upgrade``, every token of it well-formed."""
    upgrade = False
    for value in values.get("connection", ()):
        if not _CONNECTION.fullmatch(value):
            return False
        tokens = value.lower().replace(" ", "").replace("\t", "").split(",")
        upgrade = upgrade or "upgrade" in tokens
    return upgrade


def _key(values: dict[str, list[str]], repeated: bool) -> str | None:
    """``Sec-WebSocket-Key`` when the headers ask for a plain upgrade to WebSocket 13."""
    if not values.keys().isdisjoint(_ABSENT):
        return None
    if repeated and any(len(values.get(name, ())) > 1 for name in _AT_MOST_ONCE):
        return None
    if not _asks_upgrade(values):
        return None
    if values.get("upgrade", [""])[0].lower() != "websocket":
        return None
    if values.get("sec-websocket-version") != ["13"]:
        return None
    key = values.get("sec-websocket-key", [""])[0]
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        return None
    return key if len(raw) == 16 else None


def plain_value(value: str) -> bool:
    """Whether ``value`` is a header value the templates carry as it is: visible ASCII,
    spaces and tabs (no obs-text, no control character, no DEL)."""
    return value.isascii() and _VALUE.fullmatch(value.encode()) is not None


def upgrade_request(path: str, host: str, key: str, headers: dict[str, str]) -> bytes | None:
    """The client's upgrade request (the headers websockets' ``ClientProtocol.connect``
    sends, then ``headers``), or None when a value could not be sent as it is (websockets
    must build it)."""
    fixed = _fixed_lines(path, host, tuple(headers.items()))
    if fixed is None:
        return None
    before, after = fixed
    return b"".join((before, key.encode(), after))


@functools.lru_cache(maxsize=256)
def _fixed_lines(path: str, host: str, headers: tuple[tuple[str, str], ...]
                 ) -> tuple[bytes, bytes] | None:
    """The request's lines before and after the key, checked once for the same path, host
    and headers (a client dials the same few with a fresh key each time)."""
    if not _PATH.fullmatch(path.encode()) or any(
            name.lower() in _TEMPLATED or not _TOKEN.fullmatch(name.encode())
            or not plain_value(value) for name, value in headers):
        return None
    before = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n" \
             "Connection: Upgrade\r\nSec-WebSocket-Key: "
    after = "".join(["\r\nSec-WebSocket-Version: 13", *(f"\r\n{name}: {value}"
                                                        for name, value in headers)])
    return before.encode(), after.encode() + b"\r\n\r\n"


def switched(head: bytes | bytearray, accept: str) -> dict[str, list[str]] | None:
    """The headers (lower-case names, each with its values) of the response head ``head``
    (up to, not including, the blank line) when it is a plain 101 that accepts the key
    whose ``Sec-WebSocket-Accept`` is ``accept``, without extensions or a subprotocol: a
    strict subset of what websockets' ``ClientProtocol`` accepts (it decides anything
    else, and says what is wrong). None otherwise."""
    ours = _HUD_101.fullmatch(head)  # the common case, read in one match
    if ours is not None and ours[2] == accept.encode():
        seen = {"date": [ours[1].decode()], "upgrade": ["websocket"], "connection": ["Upgrade"],
                "sec-websocket-accept": [accept], "server": [ours[3].decode()]}
        if ours[4]:
            seen["hud-manifest"] = ["answered"]
        return seen
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    first, _, fields = text.partition("\r\n")
    read = _read_fields(fields) if first.startswith("HTTP/1.1 101 ") else None
    if read is None:
        return None
    seen = read[0]
    plain = (_asks_upgrade(seen) and seen.get("upgrade", [""])[0].lower() == "websocket"
             and len(seen["upgrade"]) == 1
             and seen.get("sec-websocket-accept") == [accept]
             and "sec-websocket-extensions" not in seen
             and "sec-websocket-protocol" not in seen)
    return seen if plain else None


def accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``Sec-WebSocket-Key`` ``key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def switching_protocols(accept: str, server: str, answered: bool = False) -> bytes:
    """The 101 response, with the headers websockets sends (and ``Server``); ``answered``
    adds ``Hud-Manifest: answered`` (:data:`MANIFEST_HEADER`)."""
    return b"".join((
        b"HTTP/1.1 101 Switching Protocols\r\nDate: ", _date(),
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
        accept.encode(), b"\r\nServer: ", server.encode(),
        b"\r\nHud-Manifest: answered\r\n\r\n" if answered else b"\r\n\r\n",
    ))


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    """The ``Date`` header's value (RFC 9110 section 6.6.1), formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]
