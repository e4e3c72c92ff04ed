"""The harness side of ``ssh/2``: :class:`Shell`, from ``await client.open("shell")``.

It connects with the task's one-time key (``client_key`` from the bindings of
``tasks.start``) and accepts only the host key the binding publishes (``host_pubkey``).
File operations use SFTP (one request per operation, never a shell round trip per line) when
the binding says the workspace serves it, else ``cat``/``ls`` over exec.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
from typing import Any
from urllib.parse import urlsplit

import asyncssh

from hud.forward import Handed, connect_direct
from hud.protocol.messages import Binding

from ..sandbox.process import CommandFailed, ProcessResult

CONNECT_TIMEOUT = 15.0


class Shell:
    """An SSH session on a workspace. Build it with :meth:`connect`; :meth:`aclose` it."""

    def __init__(self, conn: asyncssh.SSHClientConnection, binding: Binding,
                 handed: Handed | None = None) -> None:
        self.conn = conn
        self.binding = binding
        self.handed = handed
        """The daemon's connection handed over by a local server (no tunnel), if so."""
        self.cwd: str = binding.params.get("cwd", ".")
        self._sftp: asyncssh.SFTPClient | None = None

    @classmethod
    async def connect(cls, binding: Binding) -> Shell:
        params = binding.params
        if "client_key" not in params:
            raise PermissionError(
                f"capability {binding.name!r} hands out keys per task: start a task first "
                "(its bindings carry the key)"
            )
        parts = urlsplit(binding.url)
        host_key = asyncssh.import_public_key(params["host_pubkey"])
        # a local server hands over the daemon's connection itself: no tunnel in between
        conn, handed = await connect_direct(binding, lambda sock: asyncssh.connect(
            parts.hostname or "127.0.0.1", parts.port or 22, username=params.get("user"),
            client_keys=[asyncssh.import_private_key(params["client_key"])],
            known_hosts=([host_key], [], []), agent_path=None, config=None,
            connect_timeout=CONNECT_TIMEOUT, keepalive_interval=15, sock=sock,
        ))
        return cls(conn, binding, handed)

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        input: str | bytes | None = None,
        check: bool = False,
    ) -> ProcessResult:
        """Run ``command`` (a ``bash -c`` string, in the workspace directory). On timeout the
        command and everything it started is killed and ``timed_out`` is set."""
        try:
            done = await self.conn.run(command, input=input, timeout=timeout, encoding="utf-8",
                                       errors="replace", check=False)
        except asyncssh.TimeoutError as exc:
            result = ProcessResult(-signal.SIGKILL, _text(exc.stdout), _text(exc.stderr),
                                   timed_out=True)
        else:
            status = done.exit_status
            if status is None or status < 0:
                name = done.exit_signal[0] if done.exit_signal else "KILL"
                status = -getattr(signal, f"SIG{name}", signal.SIGKILL)
            result = ProcessResult(status, _text(done.stdout), _text(done.stderr))
        if check and not result.ok:
            raise CommandFailed(command, result)
        return result

    async def create_process(
        self,
        command: str | None = None,
        *,
        term_type: str | None = None,
        term_size: tuple[int, int] | None = None,
        **options: Any,
    ) -> asyncssh.SSHClientProcess[Any]:
        """An interactive process: a shell when ``command`` is None, with a pty when
        ``term_type`` is given (e.g. ``"xterm"``, ``term_size=(cols, rows)``)."""
        return await self.conn.create_process(command, term_type=term_type,
                                              term_size=term_size, **options)

    # -- files ----------------------------------------------------------------------------

    async def read_file(self, path: str) -> bytes:
        """The bytes of ``path`` (relative paths start at the workspace)."""
        if self.binding.params.get("sftp"):
            async with (await self.sftp()).open(path, "rb") as f:
                return await f.read()
        done = await self.conn.run(f"cat -- {shlex.quote(path)}", encoding=None, check=False)
        if done.exit_status != 0:
            raise FileNotFoundError(_text(done.stderr).strip() or path)
        return done.stdout or b""  # type: ignore[return-value]

    async def read_text(self, path: str) -> str:
        return (await self.read_file(path)).decode(errors="replace")

    async def write_file(self, path: str, data: bytes | str) -> None:
        """Write ``path``, replacing it (its directory must exist)."""
        payload = data.encode() if isinstance(data, str) else data
        if self.binding.params.get("sftp"):
            async with (await self.sftp()).open(path, "wb") as f:
                await f.write(payload)
            return
        # bytes in, so no text encoding (``run`` encodes its input as UTF-8 text)
        command = f"cat > {shlex.quote(path)}"
        done = await self.conn.run(command, input=payload, encoding=None, check=False)
        if done.exit_status != 0:
            raise CommandFailed(command, ProcessResult(done.exit_status or -1, "",
                                                       _text(done.stderr)))

    async def list(self, path: str = ".") -> list[str]:
        """The names in directory ``path``, sorted, without ``.`` and ``..``."""
        if self.binding.params.get("sftp"):
            names = await (await self.sftp()).listdir(path)
            return sorted(n for n in names if n not in (".", ".."))
        done = await self.run(f"ls -A1 -- {shlex.quote(path)}", check=True)
        return sorted(done.stdout.splitlines())

    async def sftp(self) -> asyncssh.SFTPClient:
        """The SFTP session (opened on first use)."""
        if self._sftp is None:
            self._sftp = await self.conn.start_sftp_client()
        return self._sftp

    async def aclose(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()
        try:
            await self.conn.wait_closed()
        finally:
            if self.handed is not None:
                self.handed.close()  # the lifeline: the server lets go of the connection


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


async def open_shell(binding: Binding) -> Shell:
    """The ``hud.capabilities`` entry point for ``ssh``: see :meth:`Shell.connect`."""
    return await asyncio.wait_for(Shell.connect(binding), CONNECT_TIMEOUT + 5)
