#!/usr/bin/env python3
"""Memory of ``hud serve`` under a client that pipelines requests and never reads a reply.

Run it with the project's venv::

    .venv/bin/python bench/unread_flood.py [--megabytes 260] [--answer-kib 64]

It serves ``bench/bench_env.py`` in its own process, opens one raw WebSocket whose socket
is never read after the handshake, starts a task, then sends pipelined ``tasks.grade``
frames (each with an answer of ``--answer-kib`` KiB) for as long as the server takes them,
up to ``--megabytes``, then disconnects; ``--rounds`` times. Stdout: one JSON line a round
with the server's RSS before, at the peak while the peer is connected and after it left
(growth from round to round would be memory kept after disconnect), what was sent, and
whether the server dropped the peer (once replies sit unread ``hud.control.UNREAD_LIMIT``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def frame(rid: int, method: str, params: dict) -> bytes:
    data = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                       "params": params}).encode()
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0xFF, n)
    return head + b"\0\0\0\0" + data


def deaf_socket(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /v1/control HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    return sock


def flood(sock: socket.socket, megabytes: float, answer_kib: int, pid: int) -> dict:
    manifest = {"client": {"name": "flood", "version": "0"}, "protocol_versions": ["1"]}
    sock.sendall(frame(1, "manifest", manifest))
    sock.sendall(frame(2, "tasks.start", {"template": "count_letter"}))
    one = frame(3, "tasks.grade", {"answer": "x" * (answer_kib * 1024)})
    sock.settimeout(2.0)  # a send blocked this long: the server has stopped reading
    sent, peak, dropped = 0, 0.0, False
    try:
        while sent < megabytes * 2**20:
            sock.sendall(one)
            sent += len(one)
            peak = max(peak, rss_mib(pid))
    except TimeoutError:
        pass
    except OSError:
        dropped = True
    return {"sent_mib": round(sent / 2**20, 1), "peak_rss_mib": round(peak, 1),
            "dropped_while_sending": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=260)
    parser.add_argument("--answer-kib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hold", type=float, default=5.0,
                        help="seconds to stay connected after the server stops reading")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "hud", "serve", str(HERE / "bench_env.py"), "--port", "0",
         "--quiet"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        time.sleep(0.5)
        before = rss_mib(server.pid)
        for round_ in range(1, args.rounds + 1):  # memory kept after a round shows as growth
            sock = deaf_socket(url)
            result = flood(sock, args.megabytes, args.answer_kib, server.pid)
            held_until = time.monotonic() + args.hold
            while time.monotonic() < held_until:
                result["peak_rss_mib"] = round(max(result["peak_rss_mib"], rss_mib(server.pid)), 1)
                time.sleep(0.1)
            sock.close()
            time.sleep(2.0)
            result.update(bench="unread_flood", round=round_, answer_kib=args.answer_kib,
                          rss_before_mib=round(before, 1),
                          rss_after_disconnect_mib=round(rss_mib(server.pid), 1))
            print(json.dumps(result), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
