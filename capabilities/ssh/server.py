"""The workspace's SSH daemon: asyncssh on 127.0.0.1, one sandbox per credential.

Authentication is by public key only, and the only keys accepted are the per-task ones the
workspace registers (:meth:`ShellDaemon.admit`) and revokes (:meth:`ShellDaemon.revoke`).
A key leads to its task's sandbox: every channel of that connection (``exec``, ``shell``
with or without a pty, the ``sftp`` subsystem) runs a process inside that sandbox, with the
channel's data spliced to the process's pipes or pty. No port forwarding, agent or X11
forwarding is offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR
from asyncssh.stream import SSHReader, SSHWriter

from hud import ports

from ..sandbox import Sandbox, SandboxProcess
from ..sandbox.spawner import SpawnerGone

log = logging.getLogger(__name__)

SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                "/usr/lib/sftp-server")
# After a command exits, how long its output may still trail in (a background job that kept
# its stdout open would otherwise hold the channel open forever).
OUTPUT_GRACE = 0.2
# What a channel of a dead sandbox says on stderr before it exits with 255 (as ssh does when
# the connection fails), instead of leaving the client to wait out its own timeout.
SANDBOX_GONE = ("hud: the sandbox of this task is gone (its processes were killed, or it "
                "ran out of memory); nothing more can run in it: start a new task")


def sftp_server() -> str | None:
    """OpenSSH's ``sftp-server`` under ``/usr`` (bound into every sandbox), if installed."""
    return next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None)


@dataclass(eq=False)
class Admission:
    """One task's right to the shell: its key and its sandbox, and the live connections."""

    key: asyncssh.SSHKey
    sandbox: Sandbox
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)


class ShellDaemon:
    """The SSH server. ``await start()``, then :attr:`port`; :meth:`aclose` at the end."""

    def __init__(self, user: str, shell: str = "bash") -> None:
        self.user = user
        self.shell = shell
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.sftp = sftp_server()
        self._admitted: dict[bytes, Admission] = {}
        self._server: asyncssh.SSHAcceptor | None = None
        self._claimed = 0  # the port registered in hud.ports
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def host_pubkey(self) -> str:
        return self.host_key.export_public_key().decode().strip()

    @property
    def port(self) -> int:
        assert self._server is not None, "the daemon is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncssh.create_server(
            lambda: _Connection(self), "127.0.0.1", 0,
            server_host_keys=[self.host_key], encoding=None, line_editor=False, allow_pty=True,
            agent_forwarding=False, x11_forwarding=False, allow_scp=False, keepalive_interval=30,
        )
        self._claimed = ports.claim(self.port)

    def admit(self, sandbox: Sandbox) -> asyncssh.SSHKey:
        """A fresh client key that opens ``sandbox``, valid until :meth:`revoke`."""
        key = asyncssh.generate_private_key("ssh-ed25519")
        self._admitted[key.public_data] = Admission(key, sandbox)
        return key

    def revoke(self, key: asyncssh.SSHKey) -> None:
        """Refuse ``key`` from now on and close every connection made with it."""
        admission = self._admitted.pop(key.public_data, None)
        for conn in list(admission.connections if admission else ()):
            conn.close()

    def admission(self, key: asyncssh.SSHKey) -> Admission | None:
        return self._admitted.get(key.public_data)

    async def aclose(self) -> None:
        for admission in list(self._admitted.values()):
            self.revoke(admission.key)
        if self._server is not None:
            ports.release(self._claimed)
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- channels -------------------------------------------------------------------------

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            owner = process.channel.get_connection().get_owner()
            admission = owner.admission if isinstance(owner, _Connection) else None
            if admission is None or admission.sandbox.closed:
                process.exit(255)
                return
            if not _alive(admission.sandbox):
                raise SpawnerGone("its spawner is not running")
            await self._serve(process, admission.sandbox)
        except SpawnerGone as exc:  # the agent killed it, or the kernel did (memory)
            log.warning("shell channel ended: the sandbox is gone (%s)", exc)
            with contextlib.suppress(Exception):
                process.stderr.write(f"{SANDBOX_GONE}\n".encode())
                process.exit(255)
        except Exception as exc:  # one failing channel must not take the daemon down
            log.warning("shell channel failed: %r", exc)
            with contextlib.suppress(Exception):
                process.stderr.write(f"hud: {exc}\n".encode())
                process.exit(255)
        finally:
            self._handlers.discard(task)

    def _argv(self, process: asyncssh.SSHServerProcess[bytes], pty: bool) -> list[str] | None:
        if process.subsystem == "sftp" and self.sftp:
            return [self.sftp]
        if process.subsystem:
            return None
        if process.command is None:
            return [self.shell, "-i"] if pty else [self.shell]
        return [self.shell, "-c", process.command]

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes], sandbox: Sandbox) -> None:
        term = process.term_type
        argv = self._argv(process, term is not None)
        if argv is None:
            process.stderr.write(f"no subsystem {process.subsystem!r}\n".encode())
            process.exit(1)
            return
        env = {_text(k): _text(v) for k, v in process.env.items()}
        size = None
        if term is not None:
            env["TERM"] = term
            width, height, _, _ = process.term_size
            size = (width or 80, height or 24)
        child = await sandbox.spawn(argv, env=env, pty=size)
        try:
            await _Splice(process, child).run()
        finally:
            child.close()


def _alive(sandbox: Sandbox) -> bool:
    return sandbox.spawner is not None and sandbox.spawner.alive


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _Connection(asyncssh.SSHServer):
    """One SSH connection: public-key authentication against the admitted keys."""

    def __init__(self, daemon: ShellDaemon) -> None:
        self.daemon = daemon
        self.conn: asyncssh.SSHServerConnection | None = None
        self.admission: Admission | None = None
        self._offered: Admission | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admission is not None and self.conn is not None:
            self.admission.connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Session(self.daemon._handle)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._offered = self.daemon.admission(key) if username == self.daemon.user else None
        return self._offered is not None

    def auth_completed(self) -> None:
        self.admission = self._offered
        if self.admission is not None and self.conn is not None:
            self.admission.connections.add(self.conn)


class _Session(asyncssh.SSHServerProcess[bytes]):
    """A session whose ``sftp`` subsystem is a process like any other (OpenSSH's
    ``sftp-server``, started inside the sandbox), not asyncssh's in-process SFTP server,
    which would touch the sandbox's files with the daemon's own rights."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler, None, 3, False)

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        if self.channel.get_subsystem() != "sftp":
            super().session_started()
            return
        stdin = SSHReader[bytes](self, self.channel)
        stdout = SSHWriter[bytes](self, self.channel)
        stderr = SSHWriter[bytes](self, self.channel, EXTENDED_DATA_STDERR)
        handler = self._start_process(stdin, stdout, stderr)
        if inspect.isawaitable(handler):
            self.channel.get_connection().create_task(handler, stdin.logger)


class _Splice:
    """Data between one SSH channel and one sandbox process, until both are done."""

    def __init__(self, process: asyncssh.SSHServerProcess[bytes], child: SandboxProcess) -> None:
        self.process = process
        self.child = child

    async def run(self) -> None:
        outputs = [asyncio.create_task(self._output(self.child.stdout, self.process.stdout))]
        if self.child.stderr is not None:
            outputs.append(asyncio.create_task(self._output(self.child.stderr,
                                                            self.process.stderr)))
        feeding = asyncio.create_task(self._input())
        exited = asyncio.create_task(self.child.wait())
        closed = asyncio.create_task(self.process.wait_closed())
        try:
            await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():  # the client went away: end the command, whatever it does
                await self.child.kill(signal.SIGKILL)
                return
            await asyncio.wait(outputs, timeout=OUTPUT_GRACE)
            self._exit(exited.result())
        finally:
            for task in (*outputs, feeding, exited, closed):
                task.cancel()
            await asyncio.gather(*outputs, feeding, exited, closed, return_exceptions=True)

    async def _output(self, source: asyncio.StreamReader, sink: Any) -> None:
        while data := await self.child.read(source):
            sink.write(data)
            await sink.drain()

    async def _input(self) -> None:
        stdin = self.child.stdin
        assert stdin is not None
        while True:
            try:
                data = await self.process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as change:
                self.child.resize(change.width, change.height)
                continue
            except asyncssh.SignalReceived as received:
                number = getattr(signal, f"SIG{received.signal}", None)
                if number is not None:
                    await self.child.kill(number)
                continue
            except asyncssh.BreakReceived:
                continue
            if not data:
                break
            stdin.write(data)
            await stdin.drain()
        self.child.close_stdin()

    def _exit(self, status: int) -> None:
        if status >= 0:
            self.process.exit(status)
            return
        name = signal.Signals(-status).name.removeprefix("SIG")
        self.process.exit_with_signal(name)
