"""One virtual X display with a VNC server on it, reachable only from this host.

Two stacks, both in Debian:

* ``tigervnc`` (package ``tigervnc-standalone-server``): ``Xtigervnc`` is the X server and the
  VNC server in one process. Its VNC side listens on a Unix socket in a private directory
  (``-rfbunixpath``, no TCP at all), so nothing but this host's processes can reach it.
* ``xvfb`` (packages ``xvfb``, ``x11vnc``): ``Xvfb`` and then ``x11vnc`` on a loopback port.

The display number is the X server's own choice (``-displayfd``), so displays never clash.
Neither VNC server has a password: the desktop's proxy in front of them checks the task's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Literal

from ..daemons import bound_to_us, exit_status, stop_group

Backend = Literal["auto", "tigervnc", "xvfb"]
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class DisplayNotFound(FileNotFoundError):
    """Neither X/VNC stack is installed: the message says what to install."""


class DisplayFailed(RuntimeError):
    """The X or VNC server would not start, or it exited; the message says how."""


def pick_backend(backend: Backend = "auto") -> Literal["tigervnc", "xvfb"]:
    has_tiger = shutil.which("Xtigervnc") is not None
    has_xvfb = shutil.which("Xvfb") is not None and shutil.which("x11vnc") is not None
    if backend in ("tigervnc", "auto") and has_tiger:
        return "tigervnc"
    if backend in ("xvfb", "auto") and has_xvfb:
        return "xvfb"
    raise DisplayNotFound(
        "no virtual display server found: install Debian's tigervnc-standalone-server "
        "(apt-get install tigervnc-standalone-server), or xvfb and x11vnc"
        + (f" (backend={backend!r} was asked for)" if backend != "auto" else "")
    )


class VirtualDisplay:
    """A running display. Start one with :meth:`launch`; :meth:`aclose` stops it and removes
    its directory. ``display`` is the X name (``:3``); :meth:`open_rfb` dials its VNC server."""

    def __init__(self, workdir: Path, width: int, height: int) -> None:
        self.workdir = workdir
        self.width, self.height = width, height
        self.display = ""
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []
        self.rfb_socket: str | None = None
        self.rfb_port: int | None = None
        self.closed = False

    @classmethod
    async def launch(cls, width: int = 1280, height: int = 800, *, depth: int = 24,
                     backend: Backend = "auto", timeout: float = START_TIMEOUT) -> VirtualDisplay:
        kind = pick_backend(backend)
        self = cls(Path(tempfile.mkdtemp(prefix="hud-display-")), width, height)
        try:
            async with asyncio.timeout(timeout):
                if kind == "tigervnc":
                    await self._start_tigervnc(depth)
                else:
                    await self._start_xvfb(depth)
        except TimeoutError:
            await self.aclose()
            raise DisplayFailed(f"the display did not start within {timeout:.0f} s "
                                f"({self.log_tail()})") from None
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _start_tigervnc(self, depth: int) -> None:
        self.rfb_socket = str(self.workdir / "rfb.sock")
        self.display = await self._start_x([
            "Xtigervnc", "-rfbunixpath", self.rfb_socket, "-rfbport", "-1",
            "-SecurityTypes", "None", "-AlwaysShared", "-desktop", "hud",
            "-geometry", f"{self.width}x{self.height}", "-depth", str(depth),
            "-nolisten", "tcp", "-ZlibLevel", "1",
        ])
        while not os.path.exists(self.rfb_socket):  # created before -displayfd is written
            await self._check_running()

    async def _start_xvfb(self, depth: int) -> None:
        self.display = await self._start_x([
            "Xvfb", "-screen", "0", f"{self.width}x{self.height}x{depth}", "-nolisten", "tcp",
        ])
        self.rfb_port = _free_port()
        await self._spawn([
            "x11vnc", "-display", self.display, "-rfbport", str(self.rfb_port), "-localhost",
            "-nopw", "-forever", "-shared", "-quiet", "-noxdamage",
        ], "x11vnc.log")
        while not await _accepts(self.rfb_port):
            await self._check_running()

    async def _start_x(self, argv: list[str]) -> str:
        """Start an X server that picks its display number and reports it on a pipe."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        try:
            await self._spawn([argv[0], "-displayfd", str(write_fd), *argv[1:]],
                              "x.log", pass_fds=(write_fd,))
            os.close(write_fd)
            write_fd = -1
            number = b""
            while not number.endswith(b"\n"):
                with contextlib.suppress(BlockingIOError):
                    number += os.read(read_fd, 16)
                if not number.endswith(b"\n"):
                    await self._check_running()
            return ":" + number.decode().strip()
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)

    async def _spawn(self, argv: list[str], log_name: str, pass_fds: tuple[int, ...] = ()) -> None:
        with open(self.workdir / log_name, "wb") as log:
            self.procs.append((argv[0], await asyncio.create_subprocess_exec(
                *bound_to_us(argv), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=pass_fds, start_new_session=True, cwd=self.workdir,
            )))

    async def _check_running(self) -> None:
        """Fail when a server of this display has exited; otherwise wait a moment."""
        if not self.alive:
            raise DisplayFailed(f"the display exited at start ({self.exit_reason()})")
        await asyncio.sleep(0.01)

    @property
    def alive(self) -> bool:
        return not self.closed and all(p.returncode is None for _, p in self.procs)

    def exit_reason(self) -> str:
        for name, proc in self.procs:
            if proc.returncode is not None:
                how = f"{name} {exit_status(proc.returncode)}"
                tail = self.log_tail()
                return f"{how}; {tail}" if tail else how
        return "stopped" if self.closed else "running"

    def log_tail(self, lines: int = 3) -> str:
        kept: list[str] = []
        for log in sorted(self.workdir.glob("*.log")):
            with contextlib.suppress(OSError):
                kept += [ln.strip() for ln in log.read_text(errors="replace").splitlines()
                         if ln.strip()]
        return " | ".join(kept[-lines:])

    async def open_rfb(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to this display's VNC server (no password)."""
        if self.rfb_socket is not None:
            return await asyncio.open_unix_connection(self.rfb_socket)
        return await asyncio.open_connection("127.0.0.1", self.rfb_port)

    def environ(self) -> dict[str, str]:
        """This process's environment with ``DISPLAY`` set to this display."""
        return {**os.environ, "DISPLAY": self.display}

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for _, proc in reversed(self.procs):
            await stop_group(proc, STOP_TIMEOUT)
        await asyncio.to_thread(shutil.rmtree, self.workdir, True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _accepts(port: int | None) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True

