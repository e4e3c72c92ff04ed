#!/usr/bin/env python3
"""Core benchmark: this project's ``hud`` side by side with the reference ``hud==0.6.21``.

Run it with the project's venv::

    .venv/bin/python bench/core.py [--quick]

Stdout carries one JSON line per measurement (the first is ``machine``); progress and
logs go to stderr. Our environment (``bench/bench_env.py``) is served by ``hud serve`` in
its own process, as the reference serves ``bench/ref_env.py`` in its own venv, so neither
client shares an event loop with its server. The reference side reuses
``bench/reference.py``; when its venv cannot be made, a line says so and only ours runs.

Lines (same ``bench`` name for both systems where both exist):

* ``B1.raw_persistent``: one blocking socket, n start+grade cycles. Ours speaks
  WebSocket through a minimal framing client below (no hud or websockets client code).
* ``B1.asyncio_persistent``: the same over asyncio streams.
* ``B1.api_persistent``: ours only, through ``hud.Client`` (``_uvloop``: the client on
  uvloop's event loop, as ``hud eval`` runs it).
* ``B1.raw_conn_per_cycle``: a new connection (handshake + manifest/hello) per cycle.
  ``B1.raw_conn_per_cycle_manifest_in_upgrade`` (ours; its ratio is against the
  reference's ``B1.raw_conn_per_cycle``): the same raw client with its ``manifest`` in
  the handshake's ``Hud-Manifest`` header, as protocol v1 allows, so it costs the round
  trips the reference's costs (handshake or hello, start, grade).
* ``B1.api_conn_per_cycle``: the same through each system's own Python client: ours
  ``hud.Client`` (connect, start, grade, ``aclose``; ``_uvloop`` on uvloop), the
  reference's ``hud.connect(Runtime(url))`` (``bench/ref_client.py``, in its venv),
  both on asyncio's event loop.
* ``B2.held_sessions``: ours only: 10,000 sessions open at once, each with a task started
  (opened in waves of 500), then each graded while all stay connected.
* ``B2.concurrent_sessions``: 1,000 connections at once, each manifest+start+grade,
  with the server's idle and peak RSS; ``B2.api_concurrent_sessions`` is ours through
  ``hud.Client`` on a fresh server.
* ``B5.cli_cycle``: ``hud task start`` then ``hud task grade`` as two processes.

``--rounds K`` runs the selected steps K times (both servers fresh in each round) and ends
with a ``ratios`` line: for each line both systems have, ours/reference per round for p50
and p99 (and B2's wall time), with their median, low and high. On a shared or drifting
machine one run's ratio can land on either side of a target; the spread says how far to
trust it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import queue
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # bench/reference.py: the reference driver, reused
from common import loadavg, logger

ROOT = Path(__file__).resolve().parent.parent
OUR_VENV = Path(sys.prefix)
OUR_HUD = OUR_VENV / "bin" / "hud"
OUR_ENV_FILE = ROOT / "bench" / "bench_env.py"
OUR_SERVER_LOG = ROOT / ".bench" / "hud-server.log"
SYSTEM = "hud"
HOST = "127.0.0.1"
CONTROL_PATH = "/v1/control"
TEMPLATE = "count_letter"
ANSWER = "3"
MANIFEST = {"client": {"name": "bench", "version": "0"}, "protocol_versions": ["1"]}
START = {"template": TEMPLATE, "args": {}}
GRADE = {"answer": ANSWER}
RpcError = ref.RpcError


log = logger("core")


def record(system: str, bench: str, **fields: Any) -> dict:
    return {"bench": bench, "system": system, **fields, "loadavg": loadavg()}


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


# ----------------------------------------------------------------------- machine


def _read(path: str) -> str | None:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return None


def _cpu_model() -> str | None:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ref_versions(venv: Path | None) -> dict:
    """hud/typer/pydantic versions in the reference venv (no ``import hud``)."""
    if venv is None:
        return {}
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({d: m.version(d) for d in ('hud', 'typer', 'pydantic')}))"
    )
    try:
        out = subprocess.run(
            [str(ref._venv_python(venv)), "-I", "-c", code],
            capture_output=True, text=True, timeout=60, cwd=str(venv),
        )
        return {"ref_" + k: v for k, v in json.loads(out.stdout).items()}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def machine_record(nofile: tuple, ref_venv: Path | None) -> dict:
    mem = next(
        (ln.split()[1] for ln in (_read("/proc/meminfo") or "").splitlines()
         if ln.startswith("MemTotal:")),
        None,
    )
    return {
        "bench": "machine",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_total_gb": round(int(mem) / 1048576, 1) if mem else None,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "hud": _version("hud-runtime"),
        "websockets": _version("websockets"),
        "msgspec": _version("msgspec"),
        "typer": _version("typer"),
        **_ref_versions(ref_venv),
        "nofile_soft": nofile[0],
        "nofile_hard": nofile[1],
        "somaxconn": _read("/proc/sys/net/core/somaxconn"),
        "loadavg": loadavg(),
    }


# ------------------------------------------------------------------- our server


def _await_url(proc: subprocess.Popen, lines: queue.Queue, timeout: float) -> str:
    """The ``ws://`` URL ``hud serve`` prints on stdout once it listens."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"hud serve exited (rc={proc.poll()}) before printing its URL")
        if line.startswith("ws://"):
            return line.strip()
        log("server stdout: " + line.rstrip())
    raise TimeoutError(f"hud serve printed no URL within {timeout:.0f} s")


def start_our_server(timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """``hud serve bench/bench_env.py --port 0`` in its own process; return (proc, url)."""
    ref.raise_nofile_limit()  # the child inherits the raised limit
    cmd = [str(OUR_HUD), "serve", str(OUR_ENV_FILE), "--host", HOST, "--port", "0"]
    log(f"$ {' '.join(cmd)}  (stderr -> {OUR_SERVER_LOG})")
    OUR_SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(OUR_SERVER_LOG, "a") as errlog:
        proc = subprocess.Popen(
            cmd, cwd=str(ROOT), env=ref._child_env(), stdout=subprocess.PIPE, stderr=errlog,
            text=True,
        )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=ref._pump_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        url = _await_url(proc, lines, timeout)
    except BaseException:
        ref.stop_server(proc)
        log("server stderr tail: " + ref._tail(OUR_SERVER_LOG))
        raise
    log(f"hud server pid {proc.pid} at {url}")
    return proc, url


# ------------------------------------------------------ raw WebSocket JSON-RPC
#
# A minimal RFC 6455 client, so the raw lines cost the client about what the reference's
# newline-JSON socket client costs: text frames only, no extensions, and a zero masking
# key (the client must mask, RFC 6455 section 5.3; XOR with zero leaves the payload as is,
# which the server cannot tell from any other key).

_MASK = b"\x00\x00\x00\x00"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def _request(rid: int, method: str, params: dict) -> bytes:
    msg = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    return json.dumps(msg, separators=(",", ":")).encode()


def _check_reward(result: dict) -> None:
    if result.get("reward") != 1.0:
        raise RpcError(f"tasks.grade reward {result.get('reward')!r} != 1.0")


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    return head + _MASK + payload


def _frame_header(head: bytes) -> tuple[int, int]:
    """(opcode, length code) of a server frame's first two bytes; fragments are refused."""
    if len(head) < 2:
        raise ConnectionError("server closed the connection")
    if not head[0] & 0x80 or head[1] & 0x80:
        raise RpcError(f"unexpected frame header {head!r} (fragmented or masked)")
    return head[0] & 0x0F, head[1] & 0x7F


def _extended_length(code: int) -> int:
    return {126: 2, 127: 8}.get(code, 0)


def _length(code: int, extended: bytes) -> int:
    return struct.unpack("!H" if code == 126 else "!Q", extended)[0] if extended else code


@functools.lru_cache(maxsize=8)
def _endpoint(url: str, first: bytes | None) -> tuple[str, int, str, str]:
    """(host, port, the upgrade request before its key, the rest) for ``url``'s control
    endpoint, parsed once per URL as a client holding a connection string would;
    ``first``, a request's JSON, goes in a ``Hud-Manifest`` header (protocol/README.md,
    "The manifest in the upgrade")."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    extra = f"Hud-Manifest: {first.decode()}\r\n" if first is not None else ""
    before = (f"GET {CONTROL_PATH} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
              "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ")
    return parts.hostname, parts.port, before, f"\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"


def _handshake(url: str, first: bytes | None = None) -> tuple[str, int, bytes]:
    """(host, port, HTTP upgrade request) for ``url``'s control endpoint, with a fresh
    random key (RFC 6455, section 4.1)."""
    host, port, before, after = _endpoint(url, first)
    key = base64.b64encode(os.urandom(16)).decode()
    return host, port, f"{before}{key}{after}".encode()


def _check_upgrade(head: bytes) -> None:
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")


def _check_answered(head: bytes) -> None:
    """The 101 says the server took the ``Hud-Manifest`` header: its reply comes next."""
    if b"\r\nhud-manifest: answered\r\n" not in head.lower():
        raise ConnectionError(f"the server ignored Hud-Manifest: {head[:300]!r}")


_FIRST_MANIFEST = _request(1, "manifest", MANIFEST)


class BlockingWs:
    """One blocking socket speaking WebSocket JSON-RPC (one call in flight).

    ``manifest_in_upgrade``: the ``manifest`` request rides in the opening handshake, and
    its reply is the first frame after the 101.
    """

    def __init__(self, url: str, timeout: float = 10.0, manifest_in_upgrade: bool = False
                 ) -> None:
        first = _FIRST_MANIFEST if manifest_in_upgrade else None
        host, port, upgrade = _handshake(url, first)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.sock.sendall(upgrade)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline()
            if not line:
                raise ConnectionError("server closed the connection during the handshake")
            head += line
        _check_upgrade(head)
        self.last_id = 0
        if first is not None:
            _check_answered(head)
            self.last_id = 1
            ref._parse_reply(self._read_text(), 1)

    def _read_text(self) -> bytes:
        while True:
            opcode, code = _frame_header(self.rfile.read(2))
            payload = self.rfile.read(_length(code, self.rfile.read(_extended_length(code))))
            if opcode == _TEXT:
                return payload
            if opcode == _PING:
                self.sock.sendall(_frame(_PONG, payload))
            elif opcode == _CLOSE:
                raise ConnectionError(f"server closed the WebSocket: {payload[2:]!r}")

    def call(self, method: str, params: dict) -> dict:
        self.last_id += 1
        self.sock.sendall(_frame(_TEXT, _request(self.last_id, method, params)))
        return ref._parse_reply(self._read_text(), self.last_id)

    def cycle(self) -> None:
        ref._check_prompt(self.call("tasks.start", START))
        _check_reward(self.call("tasks.grade", GRADE))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(_frame(_CLOSE, struct.pack("!H", 1000)))
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> BlockingWs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncWs:
    """The same over asyncio streams (the analogue of the reference's ``AsyncRpc``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.last_id = reader, writer, 0

    @classmethod
    async def connect(cls, url: str, manifest_in_upgrade: bool = False) -> AsyncWs:
        """Connected and upgraded; ``manifest_in_upgrade`` as for :class:`BlockingWs`."""
        first = _FIRST_MANIFEST if manifest_in_upgrade else None
        host, port, upgrade = _handshake(url, first)
        reader, writer = await asyncio.open_connection(host, port)
        self = cls(reader, writer)
        try:
            writer.write(upgrade)
            head = await reader.readuntil(b"\r\n\r\n")
            _check_upgrade(head)
            if first is not None:
                _check_answered(head)
                self.last_id = 1
                ref._parse_reply(await self._read_text(), 1)
        except BaseException:
            await self.close()
            raise
        return self

    async def _read_text(self) -> bytes:
        read = self.reader.readexactly
        while True:
            opcode, code = _frame_header(await read(2))
            extended = await read(_extended_length(code)) if code >= 126 else b""
            payload = await read(_length(code, extended))
            if opcode == _TEXT:
                return payload
            if opcode == _PING:
                self.writer.write(_frame(_PONG, payload))
            elif opcode == _CLOSE:
                raise ConnectionError(f"server closed the WebSocket: {payload[2:]!r}")

    async def call(self, method: str, params: dict) -> dict:
        self.last_id += 1
        self.writer.write(_frame(_TEXT, _request(self.last_id, method, params)))
        return ref._parse_reply(await self._read_text(), self.last_id)

    async def cycle(self) -> None:
        ref._check_prompt(await self.call("tasks.start", START))
        _check_reward(await self.call("tasks.grade", GRADE))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(_frame(_CLOSE, struct.pack("!H", 1000)))
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# ------------------------------------------------------------------ B1: cycles


def _failed(bench: str, n: int, exc: BaseException, **extra: Any) -> dict:
    return record(SYSTEM, bench, n=n, failures=n, first_error=ref.describe(exc), **extra)


def bench_raw_persistent(url: str, n: int, warmup: int) -> dict:
    """B1.raw_persistent: one blocking WebSocket, manifest once, n start+grade cycles."""
    extra = {"warmup": warmup, "connections": 1,
             "client": "blocking socket, minimal WebSocket framing"}
    try:
        with BlockingWs(url) as rpc:
            rpc.call("manifest", MANIFEST)
            tally = ref._timed_loop(rpc.cycle, n, warmup)
    except (OSError, ValueError, RpcError) as exc:
        return _failed("B1.raw_persistent", n, exc, **extra)
    return record(SYSTEM, "B1.raw_persistent", **tally.fields(n), **extra)


def _conn_cycle(url: str, manifest_in_upgrade: bool = False) -> None:
    with BlockingWs(url, manifest_in_upgrade=manifest_in_upgrade) as rpc:
        if not manifest_in_upgrade:
            rpc.call("manifest", MANIFEST)
        rpc.cycle()


def bench_conn_per_cycle(url: str, n: int, warmup: int, manifest_in_upgrade: bool = False
                         ) -> dict:
    """B1.raw_conn_per_cycle: a new blocking WebSocket (manifest+start+grade) per cycle;
    ``_manifest_in_upgrade``: the manifest request rides in the handshake."""
    bench = "B1.raw_conn_per_cycle" + ("_manifest_in_upgrade" if manifest_in_upgrade else "")
    extra = {"warmup": warmup, "client": "blocking socket, minimal WebSocket framing"}
    try:
        tally = ref._timed_loop(lambda: _conn_cycle(url, manifest_in_upgrade), n, warmup)
    except (OSError, ValueError, RpcError) as exc:
        return _failed(bench, n, exc, **extra)
    return record(SYSTEM, bench, **tally.fields(n), **extra)


async def _timed_async(step: Callable[[], Awaitable[Any]], n: int, warmup: int,
                       failure: tuple) -> ref._Tally:
    for _ in range(warmup):
        await step()
    tally = ref._Tally()
    begin = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            await step()
        except failure as exc:
            tally.fail(exc)
            continue
        tally.samples.append((time.perf_counter() - t0) * 1000.0)
    tally.wall_s = time.perf_counter() - begin
    return tally


async def _asyncio_cycles(url: str, n: int, warmup: int) -> ref._Tally:
    rpc = await AsyncWs.connect(url)
    try:
        await rpc.call("manifest", MANIFEST)
        return await _timed_async(rpc.cycle, n, warmup, (RpcError,))
    finally:
        await rpc.close()


def bench_asyncio_persistent(url: str, n: int, warmup: int, timeout: float = 120.0) -> dict:
    """B1.asyncio_persistent: one asyncio-streams WebSocket, manifest once, n cycles."""
    extra = {"warmup": warmup, "connections": 1,
             "client": "asyncio streams, minimal WebSocket framing"}
    try:
        tally = asyncio.run(asyncio.wait_for(_asyncio_cycles(url, n, warmup), timeout))
    except (OSError, ValueError, RpcError, TimeoutError) as exc:
        return _failed("B1.asyncio_persistent", n, exc, **extra)
    return record(SYSTEM, "B1.asyncio_persistent", **tally.fields(n), **extra)


async def _api_cycles(url: str, n: int, warmup: int) -> ref._Tally:
    from hud import Client, HudError

    client = await Client.connect(url)

    async def cycle() -> None:
        await _start_and_grade(client)

    try:
        return await _timed_async(cycle, n, warmup, (RpcError, HudError))
    finally:
        await client.aclose()


def _run(main: Any, uvloop: bool) -> Any:
    """``main`` to its end on asyncio's own event loop, or on uvloop's."""
    if uvloop:
        import uvloop as uv

        return uv.run(main)
    return asyncio.run(main)


def bench_api_persistent(url: str, n: int, warmup: int, timeout: float = 120.0,
                         uvloop: bool = False) -> dict:
    """B1.api_persistent: ``hud.Client`` on one connection, n start+grade cycles, on
    asyncio's own event loop (or on uvloop's, as hud's own commands run it)."""
    extra = {"warmup": warmup, "connections": 1, "client": "hud.Client",
             "loop": "uvloop" if uvloop else "asyncio"}
    name = "B1.api_persistent_uvloop" if uvloop else "B1.api_persistent"
    main = asyncio.wait_for(_api_cycles(url, n, warmup), timeout)
    try:
        tally = _run(main, uvloop)
    except (OSError, ValueError, RpcError, TimeoutError) as exc:
        return _failed(name, n, exc, **extra)
    return record(SYSTEM, name, **tally.fields(n), **extra)


async def _start_and_grade(client: Any) -> None:
    """One checked start+grade cycle on ``client`` (a ``hud.Client``)."""
    started = await client.start(TEMPLATE, {})
    if not isinstance(started.prompt, str):
        raise RpcError(f"tasks.start gave no prompt: {started!r}")
    graded = await client.grade(ANSWER)
    if graded.reward != 1.0:
        raise RpcError(f"tasks.grade reward {graded.reward!r} != 1.0")


async def _api_conn_cycles(url: str, n: int, warmup: int) -> ref._Tally:
    from hud import Client, HudError

    async def cycle() -> None:
        async with await Client.connect(url) as client:
            await _start_and_grade(client)

    return await _timed_async(cycle, n, warmup, (RpcError, HudError))


def bench_api_conn_per_cycle(url: str, n: int, warmup: int, timeout: float = 120.0,
                             uvloop: bool = False) -> dict:
    """B1.api_conn_per_cycle: ``hud.Client`` on a new connection per cycle (connect with
    its manifest, start, grade, ``aclose``), on asyncio's event loop as the reference's
    client runs (``bench/ref_client.py``), or on uvloop's (``_uvloop``)."""
    extra = {"warmup": warmup, "client": "hud.Client", "loop": "uvloop" if uvloop else "asyncio"}
    name = "B1.api_conn_per_cycle_uvloop" if uvloop else "B1.api_conn_per_cycle"
    main = asyncio.wait_for(_api_conn_cycles(url, n, warmup), timeout)
    try:
        tally = _run(main, uvloop)
    except (OSError, ValueError, RpcError, TimeoutError) as exc:
        return _failed(name, n, exc, **extra)
    return record(SYSTEM, name, **tally.fields(n), **extra)


def ref_api_conn_per_cycle(venv: Path, port: int, n: int, warmup: int,
                           timeout: float = 300.0) -> dict:
    """The reference's own client, the same cycles (``bench/ref_client.py`` in its venv)."""
    script = ROOT / "bench" / "ref_client.py"
    cmd = [str(ref._venv_python(venv)), "-I", str(script), "--port", str(port),
           "--n", str(n), "--warmup", str(warmup)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env=ref._child_env(), cwd=str(venv))
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"bench": "B1.api_conn_per_cycle", "system": ref.SYSTEM, "n": n,
                "failures": n, "first_error": ref.describe(exc)}


# ---------------------------------------------------- B2: concurrent sessions


async def _raw_session(url: str, manifest_in_upgrade: bool = False) -> None:
    rpc = await AsyncWs.connect(url, manifest_in_upgrade)
    try:
        if not manifest_in_upgrade:
            await rpc.call("manifest", MANIFEST)
        await rpc.cycle()
    finally:
        await rpc.close()


async def _api_session(url: str) -> None:
    from hud import Client

    client = await Client.connect(url)
    try:
        await client.start(TEMPLATE, {})
        graded = await client.grade(ANSWER)
        if graded.reward != 1.0:
            raise RpcError(f"tasks.grade reward {graded.reward!r} != 1.0")
    finally:
        await client.aclose()


async def _timed_session(session: Callable[[], Awaitable[None]], timeout: float) -> tuple:
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(session(), timeout)
    except Exception as exc:  # every failure is data here
        return None, ref.describe(exc)
    return (time.perf_counter() - t0) * 1000.0, None


async def _launch(session: Callable[[], Awaitable[None]], sessions: int, pid: int,
                  timeout: float) -> tuple:
    """All sessions at once; return (outcomes, wall_s, peak_rss_kb) (cf. ref._run_sessions)."""
    done = asyncio.Event()
    poller = asyncio.ensure_future(ref._poll_rss(pid, done, 0.005))
    begin = time.perf_counter()
    try:
        outcomes = await asyncio.gather(
            *(_timed_session(session, timeout) for _ in range(sessions))
        )
    finally:
        wall_s = time.perf_counter() - begin
        done.set()
        peak = await poller
    return outcomes, wall_s, peak


def bench_concurrent(url: str, pid: int, sessions: int, api: bool = False,
                     timeout: float = 60.0, manifest_in_upgrade: bool = False) -> dict:
    """B2: ``sessions`` connections at once, each manifest+start+grade; server RSS polled.
    ``manifest_in_upgrade``: the raw client's manifest rides in the handshake."""
    bench = "B2.api_concurrent_sessions" if api else "B2.concurrent_sessions"
    bench += "_manifest_in_upgrade" * manifest_in_upgrade
    soft, _hard = ref.raise_nofile_limit()
    idle_kb = ref._proc_status_kb(pid, "VmRSS")
    one = ((lambda: _api_session(url)) if api
           else (lambda: _raw_session(url, manifest_in_upgrade)))
    outcomes, wall_s, peak_kb = asyncio.run(_launch(one, sessions, pid, timeout))
    times = [ms for ms, _err in outcomes if ms is not None]
    errors = [err for _ms, err in outcomes if err is not None]
    time.sleep(1.0)  # let the server finish closing before reading its settled RSS
    return record(
        SYSTEM, bench, n=sessions, **ref.summarize_ms(times),
        wall_s=round(wall_s, 4),
        sessions_per_s=round(len(times) / wall_s, 1),
        ok=len(times), failures=len(errors), first_error=errors[0] if errors else None,
        n_ge_1s=sum(1 for ms in times if ms >= 1000.0),
        **ref._rss_fields(idle_kb, peak_kb, pid, sessions),
        server_after_rss_mb=ref._mb(ref._proc_status_kb(pid, "VmRSS")),
        client="hud.Client" if api else "asyncio streams, minimal WebSocket framing",
        nofile_soft=soft,
    )


async def _held(url: str, sessions: int, batch: int, rate: float, timeout: float) -> dict:
    """Open ``sessions`` (manifest + tasks.start) in waves of ``batch``, hold them all, then
    grade each one at ``rate`` grades per second while every other stays open."""
    held: list[AsyncWs] = []
    open_ms: list[float] = []
    grade_ms: list[float] = []
    errors: list[str] = []

    async def open_one() -> None:
        t0 = time.perf_counter()
        rpc = await AsyncWs.connect(url)
        held.append(rpc)
        await rpc.call("manifest", MANIFEST)
        ref._check_prompt(await rpc.call("tasks.start", START))
        open_ms.append((time.perf_counter() - t0) * 1000.0)

    async def grade_one(rpc: AsyncWs) -> None:
        t0 = time.perf_counter()
        _check_reward(await rpc.call("tasks.grade", GRADE))
        grade_ms.append((time.perf_counter() - t0) * 1000.0)

    async def guarded(step: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(step, timeout)
        except Exception as exc:  # every failure is data here
            errors.append(ref.describe(exc))

    begin = time.perf_counter()
    for start in range(0, sessions, batch):
        await asyncio.gather(*(guarded(open_one())
                               for _ in range(min(batch, sessions - start))))
    open_s = time.perf_counter() - begin
    concurrent = len(held)
    graders = []
    for rpc in list(held):
        graders.append(asyncio.ensure_future(guarded(grade_one(rpc))))
        await asyncio.sleep(1.0 / rate)
    await asyncio.gather(*graders)
    await asyncio.gather(*(rpc.close() for rpc in held))
    return {"open_ms": open_ms, "grade_ms": grade_ms, "errors": errors,
            "open_s": open_s, "concurrent": concurrent}


def bench_held(url: str, pid: int, sessions: int, batch: int = 500, rate: float = 2000.0,
               timeout: float = 60.0) -> dict:
    """B2.held_sessions: ``sessions`` control sessions open at once, each with a task
    started, opened in waves of ``batch``; then each is graded (``rate`` per second) while
    all stay connected. Server RSS with all of them held gives the memory per session."""
    soft, _hard = ref.raise_nofile_limit()
    idle_kb = ref._proc_status_kb(pid, "VmRSS")
    box: dict = {}

    async def run() -> None:
        done = asyncio.Event()
        poller = asyncio.ensure_future(ref._poll_rss(pid, done, 0.05))
        try:
            box.update(await _held(url, sessions, batch, rate, timeout))
        finally:
            done.set()
            box["peak_kb"] = await poller

    asyncio.run(run())
    time.sleep(1.0)
    opened, graded = box["open_ms"], box["grade_ms"]
    return record(
        SYSTEM, "B2.held_sessions", n=sessions, **ref.summarize_ms(graded),
        held_at_once=box["concurrent"], failures=len(box["errors"]),
        first_error=box["errors"][0] if box["errors"] else None,
        open_p50_ms=ref.summarize_ms(opened).get("p50_ms"),
        open_p99_ms=ref.summarize_ms(opened).get("p99_ms"),
        open_wall_s=round(box["open_s"], 3), wave=batch, grade_rate_per_s=rate,
        **ref._rss_fields(idle_kb, box["peak_kb"], pid, sessions),
        client="asyncio streams, minimal WebSocket framing", nofile_soft=soft,
    )


def ref_concurrent(port: int, pid: int, sessions: int) -> dict:
    rec = ref.bench_concurrent(port, sessions, pid)
    time.sleep(1.0)
    rec["server_after_rss_mb"] = ref._mb(ref._proc_status_kb(pid, "VmRSS"))
    rec["loadavg"] = loadavg()
    return rec


# ------------------------------------------------------------------ B5: CLI


def _cli_once(url: str, env: dict, timeout: float) -> tuple[float, float]:
    """``hud task start`` then ``hud task grade``; return (start_ms, grade_ms)."""
    hud = str(OUR_HUD)
    t0 = time.perf_counter()
    prompt = ref._run_cli(
        [hud, "task", "start", TEMPLATE, "--args", "{}", "--url", url], env, timeout
    )
    t1 = time.perf_counter()
    reward = ref._run_cli(
        [hud, "task", "grade", TEMPLATE, "--answer", ANSWER, "--url", url], env, timeout
    )
    t2 = time.perf_counter()
    if "strawberry" not in prompt:
        raise RpcError(f"unexpected prompt: {prompt[:200]!r}")
    if reward.strip() != "1.0":
        raise RpcError(f"unexpected reward output: {reward[:200]!r}")
    return (t1 - t0) * 1000.0, (t2 - t1) * 1000.0


def bench_cli_cycle(url: str, n: int, warmup: int, timeout: float = 120.0) -> dict:
    """B5.cli_cycle: two CLI processes per cycle (cf. ref.bench_cli_cycle).

    With bytecode cached, as an installed hud (and the reference, installed by pip) runs:
    under ``PYTHONDONTWRITEBYTECODE`` an editable checkout compiles every module it imports
    in each process, which measures the source's size, not the CLI. The warmup cycle
    writes the cache."""
    env = ref._child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    tally, starts, grades = ref.cli_cycles(lambda: _cli_once(url, env, timeout), n, warmup)
    return record(
        SYSTEM, "B5.cli_cycle", **tally.fields(n), warmup=warmup,
        start_p50_ms=ref.summarize_ms(starts)["p50_ms"],
        grade_p50_ms=ref.summarize_ms(grades)["p50_ms"],
    )


# ------------------------------------------------------------------- driver


def _parse_args(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small n everywhere (smoke test)")
    parser.add_argument("--n", type=int, default=2000, help="B1 persistent cycles")
    parser.add_argument("--warmup", type=int, default=200, help="B1 persistent warmup")
    parser.add_argument("--conn-n", type=int, default=500, help="B1 conn-per-cycle cycles")
    parser.add_argument("--sessions", type=int, default=1000, help="B2 concurrent sessions")
    parser.add_argument("--held", type=int, default=10000,
                        help="B2 sessions held open at once (0: skip)")
    parser.add_argument("--cli-n", type=int, default=5, help="B5 CLI cycles")
    parser.add_argument("--no-reference", action="store_true", help="measure ours only")
    parser.add_argument("--only", action="append", default=[],
                        help="run only the steps whose name starts with this (repeatable; "
                             "e.g. 'B1 conn', 'B1 api conn', 'B2 raw')")
    parser.add_argument("--ref-venv", default=str(ref.DEFAULT_VENV), help="reference venv")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the steps this many times; then a line of ratios per round")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.warmup, args.conn_n, args.sessions, args.cli_n = 300, 30, 50, 200, 2
        args.held = 1000
    return args


class Servers:
    """Both servers, always stopped on exit; the reference one is optional."""

    def __init__(self, ref_venv: Path | None) -> None:
        self.ref_venv = ref_venv
        self.ours: subprocess.Popen | None = None
        self.url = ""
        self.ref: subprocess.Popen | None = None
        self.port = 0

    def start_ours(self) -> None:
        self.stop_ours()
        self.ours, self.url = start_our_server()

    def stop_ours(self) -> None:
        if self.ours is not None:
            ref.stop_server(self.ours)
            self.ours = None

    def start_ref(self) -> None:
        if self.ref_venv is None:
            return
        try:
            self.ref, self.port = ref.start_ref_server(self.ref_venv)
        except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
            log(f"reference server did not start: {exc}; measuring ours only")
            emit({"bench": "note", "system": ref.SYSTEM,
                  "message": f"reference server did not start ({exc}); measuring ours only"})
            self.ref_venv = None

    def stop_ref(self) -> None:
        if self.ref is not None:
            ref.stop_server(self.ref)
            self.ref = None

    def stop(self) -> None:
        self.stop_ours()
        self.stop_ref()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` from /proc/<pid>/stat (clock-tick resolution)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


ONLY: list[str] = []
"""Prefixes of the step names to run (``--only``); empty: every step."""


RECORDS: list[dict] = []
"""Every record emitted by :func:`_step`, for the ``ratios`` line (``--rounds``)."""
ROUND = [1]
"""The round running now (``--rounds``); each record carries it."""


def _selected(name: str) -> bool:
    return not ONLY or any(name.startswith(prefix) for prefix in ONLY)


def _step(name: str, run: Callable[[], dict], pid: int, ops: int) -> None:
    """Run one bench; add the server's and this process's CPU per operation to its record.

    ``ops`` counts every timed and warmup operation (cycle, session or CLI cycle), so the
    per-op CPU is the server's total CPU over the bench divided by all it served.
    """
    if not _selected(name):
        return
    log(f"running {name}")
    server0, client0, kids0 = cpu_seconds(pid), time.process_time(), _children_cpu()
    rec = run()
    server1, client1, kids1 = cpu_seconds(pid), time.process_time(), _children_cpu()
    if server0 is not None and server1 is not None:
        rec["server_cpu_s"] = round(server1 - server0, 3)
        rec["server_cpu_ms_per_op"] = round((server1 - server0) * 1000.0 / ops, 4)
    rec["client_cpu_ms_per_op"] = round((client1 - client0) * 1000.0 / ops, 4)
    if kids1 - kids0 > 0:  # CLI processes (B5): the servers are reaped only at the end
        rec["cli_cpu_ms_per_op"] = round((kids1 - kids0) * 1000.0 / ops, 1)
    rec["loadavg"] = loadavg()
    rec["round"] = ROUND[0]
    RECORDS.append(rec)
    emit(rec)


RATIO_FIELDS = ("p50_ms", "p99_ms", "wall_s")
COMPARED_WITH = {"B1.raw_conn_per_cycle_manifest_in_upgrade": "B1.raw_conn_per_cycle",
                 "B2.concurrent_sessions_manifest_in_upgrade": "B2.concurrent_sessions"}
"""Our lines with no namesake in the reference's, and the reference's line each is set
against (the reference's ``hello`` is its manifest: a raw client sends it as a request)."""


def ratios(records: list[dict], rounds: int) -> dict:
    """Ours/reference per round, for each line and field both systems have in that round
    (a failed run has no figure to compare), with the median, low and high."""
    found: dict[tuple[str, str, int], dict] = {
        (rec["bench"], rec["system"], rec["round"]): rec
        for rec in records if not rec.get("failures")}
    out: dict[str, dict] = {}
    for (line, system, round_), ours in sorted(found.items()):
        theirs = found.get((COMPARED_WITH.get(line, line), ref.SYSTEM, round_))
        if system != SYSTEM or theirs is None:
            continue
        for field in RATIO_FIELDS:
            if ours.get(field) and theirs.get(field):
                out.setdefault(line, {}).setdefault(field, []).append(
                    round(ours[field] / theirs[field], 3))
    summary = {line: {field: {"per_round": values, "median": round(statistics.median(values), 3),
                              "low": min(values), "high": max(values)}
                      for field, values in fields.items()}
               for line, fields in out.items()}
    return {"bench": "ratios", "system": f"{SYSTEM}/{ref.SYSTEM}", "rounds": rounds,
            "lines": summary, "loadavg": loadavg()}


def run_benches(args: argparse.Namespace, s: Servers) -> None:
    """Ours then the reference per line; B2 last (it leaves the servers' RSS grown)."""
    assert s.ours is not None
    ours = s.ours.pid
    theirs = s.ref.pid if s.ref is not None else None
    n, w = args.n, args.warmup
    cn, cw = args.conn_n, max(1, args.conn_n // 10)
    _step("B1 raw hud", lambda: bench_raw_persistent(s.url, n, w), ours, n + w)
    if theirs:
        _step("B1 raw ref", lambda: ref.bench_cycle_blocking(s.port, n, w), theirs, n + w)
    _step("B1 asyncio hud", lambda: bench_asyncio_persistent(s.url, n, w), ours, n + w)
    if theirs:
        _step("B1 asyncio ref", lambda: ref.bench_cycle(s.port, n, w), theirs, n + w)
    _step("B1 api hud", lambda: bench_api_persistent(s.url, n, w), ours, n + w)
    _step("B1 api hud uvloop", lambda: bench_api_persistent(s.url, n, w, uvloop=True), ours,
          n + w)
    # A fresh server's first thousand connections run slower than its next: the two raw
    # lines take turns at going first, round by round.
    for in_upgrade in (False, True) if ROUND[0] % 2 else (True, False):
        _step("B1 conn hud" + " in upgrade" * in_upgrade,
              lambda in_upgrade=in_upgrade: bench_conn_per_cycle(
                  s.url, cn, cw, manifest_in_upgrade=in_upgrade), ours, cn + cw)
    if theirs:
        _step("B1 conn ref", lambda: ref.bench_conn_per_cycle(s.port, cn, cw), theirs, cn + cw)
    _step("B1 api conn hud", lambda: bench_api_conn_per_cycle(s.url, cn, cw), ours, cn + cw)
    if theirs:
        assert s.ref_venv is not None
        venv = s.ref_venv
        _step("B1 api conn ref", lambda: ref_api_conn_per_cycle(venv, s.port, cn, cw), theirs,
              cn + cw)
    _step("B1 api conn hud uvloop",
          lambda: bench_api_conn_per_cycle(s.url, cn, cw, uvloop=True), ours, cn + cw)
    cli = args.cli_n + 1  # one warmup cycle
    _step("B5 cli hud", lambda: bench_cli_cycle(s.url, args.cli_n, 1), ours, cli)
    if theirs:
        _step("B5 cli ref", lambda: ref.bench_cli_cycle(s.ref_venv, s.port, args.cli_n, 1),
              theirs, cli)
    sessions = args.sessions
    time.sleep(0.5)
    _step("B2 raw hud", lambda: bench_concurrent(s.url, ours, sessions), ours, sessions)
    if theirs:
        time.sleep(0.5)
        _step("B2 raw ref", lambda: ref_concurrent(s.port, theirs, sessions), theirs, sessions)
    if _selected("B2 raw hud in upgrade"):
        s.start_ours()  # a burst on a fresh server, as the first
        assert s.ours is not None
        again = s.ours.pid
        _step("B2 raw hud in upgrade",
              lambda: bench_concurrent(s.url, again, sessions, manifest_in_upgrade=True), again,
              sessions)
    s.start_ours()  # a fresh server, so idle RSS is not the previous run's leftovers
    assert s.ours is not None
    fresh = s.ours.pid
    time.sleep(0.5)
    _step("B2 api hud", lambda: bench_concurrent(s.url, fresh, sessions, api=True), fresh,
          sessions)
    if args.held:
        s.start_ours()
        assert s.ours is not None
        held = s.ours.pid
        time.sleep(0.5)
        _step("B2 held hud", lambda: bench_held(s.url, held, args.held), held, args.held)


def main(argv: list | None = None) -> int:
    args = _parse_args(argv)
    ONLY[:] = args.only
    nofile = ref.raise_nofile_limit()
    ref_venv = None if args.no_reference else ref.ensure_ref_venv(args.ref_venv)
    emit(machine_record(nofile, ref_venv))
    if ref_venv is None and not args.no_reference:
        emit({"bench": "note", "system": ref.SYSTEM,
              "message": "reference venv could not be made; measuring ours only"})
    servers = Servers(ref_venv)
    try:
        for round_ in range(args.rounds):  # both servers fresh in each round
            if args.rounds > 1:
                log(f"round {round_ + 1} of {args.rounds}")
            ROUND[0] = round_ + 1
            servers.start_ours()
            servers.stop_ref()
            servers.start_ref()
            run_benches(args, servers)
    finally:
        servers.stop()
    if args.rounds > 1 and ref_venv is not None:
        emit(ratios(RECORDS, args.rounds))
    log("done; loadavg " + str(loadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
