"""The host's end of a pty that lives in a sandbox.

The spawner opens the pty in the sandbox's own ``/dev/pts`` and sends its master back on a
console socket (:mod:`.inside`); :func:`receive_master` takes it. :class:`PtyTransport` then
reads and writes the master. It exists because asyncio offers no transport that does both on
a character device, and two pipe transports on one master do not mix: uvloop's write-pipe
transport reads its fd (to notice a closed reader) and throws away what it reads, which on a
pty is the child's output.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import termios
from typing import Any

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024  # a pty holds less than this
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


def receive_master(console: socket.socket) -> int:
    """The pty master the spawner sent on ``console`` before it answered the spawn.

    Whatever arrives comes from the sandbox, so anything but exactly one terminal is closed
    and refused with ``OSError``."""
    fds = array.array("i")
    try:  # not socket.recv_fds: before Python 3.12 it drops the flags
        _, ancillary, _, _ = console.recvmsg(16, socket.CMSG_SPACE(4 * fds.itemsize),
                                             socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    except BlockingIOError:
        ancillary = []
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    if len(fds) == 1 and os.isatty(fds[0]):
        return fds[0]
    for fd in fds:
        os.close(fd)
    raise OSError(errno.ENOTTY, "the sandbox sent no terminal for the command")


class PtyTransport(asyncio.Transport):
    """Reads and writes a pty master (which it owns and closes) with ``os.read`` and
    ``os.write`` when the loop says it is ready: one transport for both directions, on any
    loop with ``add_reader`` and ``add_writer`` (asyncio's and uvloop's).

    The protocol gets ``eof_received`` when the child's side has gone (``EIO`` once no
    slave is open) and ``connection_lost`` only after :meth:`close`, or after a read error.
    Input for a terminal that fails it (``EIO`` once its program has gone) is dropped.
    """

    def __init__(self, fd: int, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._protocol: Any = protocol
        self._buffer = bytearray()
        self._reading = self._eof = self._closing = self._paused = self._broken = False
        os.set_blocking(fd, False)
        protocol.connection_made(self)
        self.resume_reading()

    def set_window_size(self, cols: int, rows: int) -> None:
        """Give the terminal a new size (its foreground job gets ``SIGWINCH``); a no-op
        once the master is closed."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    # -- reading ----------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not (self._reading or self._eof or self._closing):
            self._loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    def _read_ready(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                self._finish(exc)
                return
            data = b""  # the last slave has closed: the child's output is over
        if data:
            self._protocol.data_received(data)
            return
        self.pause_reading()
        self._eof = True
        self._protocol.eof_received()

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._broken or not data:
            return
        if not self._buffer:
            data = data[self._write_some(data):]
            if not data or self._broken:
                return
            self._loop.add_writer(self._fd, self._write_ready)
        self._buffer += data
        if not self._paused and len(self._buffer) > HIGH_WATER:
            self._paused = True
            self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def can_write_eof(self) -> bool:
        return False  # a terminal has no end of input: the line discipline's ^D is one

    def _write_some(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the master takes now; on an error, stop writing for good."""
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            log.debug("dropping input for a terminal nobody reads: %s", exc)
            self._broken = True
            self._buffer.clear()
            return len(data)

    def _write_ready(self) -> None:
        del self._buffer[:self._write_some(self._buffer)]
        if self._paused and len(self._buffer) <= LOW_WATER:
            self._paused = False
            self._protocol.resume_writing()
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._finish(None)

    # -- closing ----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close the master once what was written has gone."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if not self._buffer:
            self._loop.call_soon(self._finish, None)

    def abort(self) -> None:
        self._buffer.clear()
        self._closing = True
        self._loop.call_soon(self._finish, None)

    def _finish(self, exc: Exception | None) -> None:
        if self._fd < 0:
            return
        self._closing = True
        self.pause_reading()
        self._loop.remove_writer(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._protocol.connection_lost(exc)
