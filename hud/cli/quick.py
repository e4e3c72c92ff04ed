"""The fast path of ``hud task start`` and ``hud task grade``: no typer, no asyncio.

Both commands are one short exchange with a served environment, usually run once per
process (by hand, from a script, through ``docker exec``), so their cost is the interpreter's
start-up and imports. Parsing them with argparse and speaking the protocol over a blocking
socket avoids importing typer (~120 ms), asyncio (~60 ms) and the websockets package (~30 ms,
most of it ``importlib.metadata``): see BENCHMARKS.md. Anything else (``--help``, ``--source``,
other commands) falls through to the typer app; ``HUD_CLI_FAST=0`` turns the fast path off.

The WebSocket client here is the minimum RFC 6455 needs for this exchange (handshake, masked
text frames out, unfragmented or fragmented text frames in, close); the protocol itself is
the same sans-I/O core every client drives (:class:`hud.protocol.connection.ClientConnection`),
and the tests run both CLI paths against the real server.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import socket
import struct
import sys
from typing import Any, NoReturn
from urllib.parse import urlsplit

from .common import (
    EXIT_CONNECTION,
    EXIT_PROTOCOL,
    EXIT_TASK,
    EXIT_USAGE,
    TASK_ERRORS,
    UsageError,
    emit,
    parse_args_json,
    prompt_text,
    read_answer,
    with_serve_hint,
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class QuickError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class QuickClient:
    """One blocking control session: manifest on connect, then :meth:`call`."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        from ..address import control_url
        from ..errors import AddressError

        try:
            target = urlsplit(control_url(url))
        except AddressError as exc:
            raise QuickError(str(exc), EXIT_CONNECTION) from None
        if target.scheme != "ws":  # wss and the rest: the full client handles them
            raise NotImplementedError(target.scheme)
        self.path = target.path + (f"?{target.query}" if target.query else "")
        self.host = target.hostname or "127.0.0.1"
        from ..proxy import from_environment

        if from_environment(target.geturl()) is not None:  # so does a proxy (hud.proxy)
            raise NotImplementedError("proxy")
        self.port = 80 if target.port is None else target.port
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise QuickError(with_serve_hint(f"cannot reach an environment at {url}: {exc}"),
                             EXIT_CONNECTION) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        from ..protocol.connection import ClientConnection

        self.core = ClientConnection()
        self._handshake(token, url)

    def _handshake(self, token: str | None, url: str) -> None:
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Upgrade: websocket",
            "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        if status != b"101":
            body = self.buffer.decode(errors="replace").strip()
            raise QuickError(f"{url} refused the connection (HTTP {status.decode()}): {body}",
                             EXIT_CONNECTION)
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        if b"sec-websocket-accept: " + accept.lower() not in head.lower():
            raise QuickError(f"{url} is not a WebSocket server", EXIT_CONNECTION)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise QuickError("the environment closed the connection", EXIT_CONNECTION)
        self.buffer += chunk

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send_text(self, payload: bytes) -> None:
        header = bytearray([0x81])  # FIN + text
        size = len(payload)
        if size < 126:
            header.append(0x80 | size)
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def recv_text(self) -> bytes:
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(size)  # servers never mask
            opcode = first & 0x0F
            if opcode == 0x8:
                raise QuickError("the environment closed the connection", EXIT_CONNECTION)
            if opcode in (0x9, 0xA):  # ping, pong: nothing to answer in a short exchange
                continue
            message += payload
            if first & 0x80:
                return message

    def call(self, method: str, params: Any) -> Any:
        """One request and its reply, through the protocol core: the result Struct, or
        the server's error raised as its class."""
        rid, payload = self.core.send(method, params)
        self.send_text(payload)
        while True:
            reply = self.core.receive(self.recv_text())
            if reply is not None and reply.id == rid:
                break
        if isinstance(reply.outcome, Exception):
            raise reply.outcome
        return reply.outcome

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a close frame (code 1000), masked with zeros
            self.sock.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + struct.pack("!H", 1000))
        self.sock.close()


class _SilentParser(argparse.ArgumentParser):
    """Reports a usage error by raising, not printing: typer then reports it, once."""

    def error(self, message: str) -> NoReturn:
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _SilentParser(prog="hud task", add_help=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "grade"):
        cmd = sub.add_parser(name, add_help=False)
        cmd.add_argument("task")
        cmd.add_argument("--url", "-u", default=os.environ.get("HUD_URL",
                                                               "ws://127.0.0.1:8765"))
        cmd.add_argument("--token", default=os.environ.get("HUD_TOKEN"))
        cmd.add_argument("--json", action="store_true")
        if name == "start":
            cmd.add_argument("--args", "-a", default="{}")
        else:
            cmd.add_argument("--answer")
            cmd.add_argument("--answer-file")
            cmd.add_argument("--session")
    return parser


def try_fast(argv: list[str]) -> int | None:
    """Run ``task start|grade`` here and return the exit code, or ``None`` to let typer
    handle the command line."""
    if os.environ.get("HUD_CLI_FAST") == "0" or argv[:1] != ["task"]:
        return None
    if len(argv) < 2 or argv[1] not in ("start", "grade") or any(
        a in ("--help", "-h", "--source", "-s") or a.startswith("--source=") for a in argv
    ):
        return None
    try:
        options = _parser().parse_args(argv[1:])
    except SystemExit:
        return None  # let typer report the usage error in its own words
    try:
        return _run(options)
    except NotImplementedError:
        return None


def _run(options: argparse.Namespace) -> int:
    import msgspec

    from ..protocol import errors
    from ..protocol.messages import SUPPORTED_VERSIONS, UNSET, ManifestParams, PeerInfo

    try:
        method, params = _request(options)
        client = QuickClient(options.url, options.token)
        try:
            client.call("manifest", ManifestParams(
                client=PeerInfo(name="hud-cli", version="0"),
                protocol_versions=list(SUPPORTED_VERSIONS),
                session_id=getattr(options, "session", None) or UNSET,
            ))
            result = client.call(method, params)
        finally:
            client.close()
    except QuickError as exc:
        return _fail(str(exc), exc.code)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except errors.Unauthorized as exc:
        return _fail(exc.message, EXIT_CONNECTION)
    except TASK_ERRORS as exc:
        return _fail(exc.message, EXIT_TASK)
    except errors.HudError as exc:
        return _fail(exc.message, EXIT_PROTOCOL)
    if options.command == "start":
        sys.stderr.write(f"session: {result.session_id}\n")
        emit(msgspec.to_builtins(result) if options.json else prompt_text(result.prompt))
    else:
        emit(msgspec.to_builtins(result) if options.json else repr(float(result.reward)))
    return 0


def _request(options: argparse.Namespace) -> tuple[str, Any]:
    from ..protocol.messages import UNSET, GradeParams, StartParams

    if options.command == "start":
        return "tasks.start", StartParams(template=options.task,
                                          args=parse_args_json(options.args))
    answer = read_answer(options.answer, options.answer_file)
    return "tasks.grade", GradeParams(answer=answer, template=options.task or UNSET)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code
