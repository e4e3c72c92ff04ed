"""``env.workspace(root)``: a sandboxed shell per task, served as an ``ssh/2`` capability.

Lifecycle, as :meth:`Workspace.attach` wires it into an environment:

* **initialize**: probe isolation (bubblewrap), start the SSH daemon on 127.0.0.1:0 with a
  fresh host key, and publish the binding. Its params hold ``user``, ``host_pubkey`` (the
  client checks the server against it), ``isolation`` (``bwrap`` or ``none``), ``cwd``,
  ``shell`` and ``credentials: "per-task"``; never a private key.
* **every task** (a task hook): a new sandbox over a pristine copy-on-write view of ``root``
  and a new one-time client key for it, handed to that session alone in the bindings of
  ``tasks.start`` (``client_key``, ``cwd``, ``task``). When the task ends (graded,
  cancelled, replaced, expired, or the server stops) the key is revoked, its connections
  are closed and the sandbox with everything in it is destroyed.
* **shutdown**: close the daemon and whatever sandboxes are left.

Setup and grading code runs commands in the task's own sandbox, seeing exactly what the
agent left: ``await ws.run("pytest -q")``, ``await ws.read_file(...)``. While a task runs,
``BashGrader`` (``hud.graders``) runs there too. Grader files stay on the host, where the
sandbox cannot see them, and the reward is computed by the template on the host. If the
agent killed its sandbox (``kill -9 -1`` takes the spawner too), these calls raise
:class:`~hud.errors.CapabilityLost`, which scores the task 0 with the cause.

Who runs them: during setup, the user ``agent`` (what setup writes is the agent's to
change); once the answer is in (grading, cleanup), the user ``grader``, whose processes the
agent's cannot signal, trace, or read (``/proc/PID/mem``, ``environ``), whatever the agent
left running (see :mod:`hud.capabilities.sandbox.users`). ``user=`` chooses otherwise.
The grader reads the workspace as others may (the agent's files are typically 0644) and
writes only in its own home (``HOME`` and ``TMPDIR``, private to it): a build that writes
into the workspace must copy it there first, or run as ``user="agent"`` and trust no more
than the agent. A file or directory the agent made unreadable fails the command (or, for
the working directory, raises): an error or a failing test, never a pass. ``write_file``
writes as the agent by default: the workspace's files are the agent's. Without root there
is one user for both, and the server's log warns that graders are then unprotected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hud.capability import Service
from hud.errors import CapabilityLost
from hud.protocol.messages import Binding
from hud.runner import Bindings, TaskScope, current_scope

from ..sandbox import Isolation, ProcessResult, Sandbox, SandboxConfig, Sandboxes, User
from ..sandbox.copies import copy_changes, files_of
from ..sandbox.spawner import SpawnerGone

if TYPE_CHECKING:
    from hud.environment import Environment

    from .server import ShellDaemon

log = logging.getLogger(__name__)

PROTOCOL = "ssh/2"


class Workspace(Service):
    """A shell on ``root`` for every task, isolated and copy-on-write.

    ``network``: whether sandboxes may use the host's network (default: loopback only).
    ``require_isolation``: refuse to start without bubblewrap instead of warning.
    ``isolation="none"`` turns isolation off on purpose. ``size`` caps what one task may
    write (overlay views), ``tmp_size`` each of its ``/``, ``/tmp`` and ``/dev/shm`` (both
    held in memory; by default a quarter and an eighth of ``max_memory``). ``env`` adds
    variables to every command. ``spares`` sandboxes are kept started ahead of need, so a
    new task does not wait for one. ``max_processes`` and ``max_memory`` cap one task's
    sandbox as a whole (``None`` lifts a cap).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        name: str = "shell",
        network: bool = False,
        require_isolation: bool = False,
        guest_path: str = "/workspace",
        user: str = "agent",
        shell: str = "bash",
        size: str | None = None,
        tmp_size: str | None = None,
        env: Mapping[str, str] | None = None,
        isolation: Isolation = "bwrap",
        spares: int = 1,
        max_processes: int | None = 512,
        max_memory: str | None = "4g",
    ) -> None:
        self.root = Path(root)
        self.name = name
        self.user = user
        self.shell = shell
        self.require_isolation = require_isolation
        self.requested = isolation
        self.config = SandboxConfig(root=str(root), guest_path=guest_path, network=network,
                                    isolation=isolation, size=size, tmp_size=tmp_size,
                                    env=dict(env or {}),
                                    spares=spares, max_processes=max_processes,
                                    max_memory=max_memory)
        self.sandboxes: Sandboxes | None = None
        self.daemon: ShellDaemon | None = None

    @property
    def isolation(self) -> Isolation:
        assert self.sandboxes is not None, "the workspace is not started"
        return self.sandboxes.isolation

    async def start(self) -> None:
        """Probe isolation, start the daemon, publish the binding."""
        from .server import ShellDaemon

        if not self.root.is_dir():
            raise FileNotFoundError(f"workspace root {str(self.root)!r} is not a directory")
        self.config.root = str(self.root.resolve())
        self.sandboxes = Sandboxes(self.config)
        if self.sandboxes.isolation == "none":
            await self._unisolated()
        self.daemon = ShellDaemon(self.user, self.shell)
        await self.daemon.start()
        self.sandboxes.start_spares()
        self.publish(Binding(
            name=self.name, protocol=PROTOCOL, url=f"ssh://127.0.0.1:{self.daemon.port}",
            params={"user": self.user, "host_pubkey": self.daemon.host_pubkey,
                    "isolation": self.isolation, "cwd": self.config.guest_path,
                    "shell": self.shell, "sftp": self.daemon.sftp is not None,
                    "credentials": "per-task"},
        ))

    async def _unisolated(self) -> None:
        why = ("isolation='none' was asked for" if self.requested == "none"
               else "bubblewrap is missing or unusable here")
        if self.require_isolation:
            assert self.sandboxes is not None
            await self.sandboxes.aclose()
            raise RuntimeError(f"workspace {self.name!r} requires isolation, but {why} "
                               "(install Debian's bubblewrap)")
        log.warning("WORKSPACE %r IS NOT ISOLATED (%s): agents' commands run on this host as "
                    "this user, in a copy of %s; the manifest says isolation: none",
                    self.name, why, self.config.root)

    async def stop(self) -> None:
        if self.daemon is not None:
            await self.daemon.aclose()
        if self.sandboxes is not None:
            await self.sandboxes.aclose()
        self.daemon = self.sandboxes = None

    @contextlib.asynccontextmanager
    async def task(self, scope: TaskScope) -> AsyncIterator[Bindings]:
        """The task hook: a sandbox and a one-time key for the task, gone when it ends."""
        assert self.sandboxes is not None, "not started"
        async with self._hold(await self.sandboxes.open(), scope) as bindings:
            yield bindings

    # -- branches (tasks.fork; see hud.forks.Branchable) -----------------------------------

    def attach(self, env: Environment) -> Workspace:
        super().attach(env)
        env.branching[self.name] = self  # a branch gets a sandbox with a copy of the files
        return self

    async def rehome(self) -> None:
        """In a branch: a daemon of its own (a new host key), and sandboxes without the
        parent's (see :meth:`Sandboxes.for_branch`); the copied daemon is never touched."""
        from .server import ShellDaemon

        assert self.sandboxes is not None and self.binding is not None, "not started"
        self.sandboxes = self.sandboxes.for_branch()
        self.daemon = ShellDaemon(self.user, self.shell)
        await self.daemon.start()
        self.publish(Binding(
            name=self.name, protocol=PROTOCOL, url=f"ssh://127.0.0.1:{self.daemon.port}",
            params={**self.binding.params, "host_pubkey": self.daemon.host_pubkey}))

    @contextlib.asynccontextmanager
    async def branch(self, scope: TaskScope) -> AsyncIterator[Bindings]:
        """In a branch, in place of :meth:`task`: a new sandbox holding a copy of the files
        the task's sandbox holds now (its running processes stay behind), and a new key."""
        assert self.sandboxes is not None, "not started"
        source: Sandbox = scope.state.pop(self)
        sandbox = await self.sandboxes.open()
        try:
            await asyncio.to_thread(copy_changes, files_of(source), files_of(sandbox),
                                    self.config.root)
        except BaseException:
            await self.sandboxes.close(sandbox)
            raise
        async with self._hold(sandbox, scope) as bindings:
            yield bindings

    @contextlib.asynccontextmanager
    async def _hold(self, sandbox: Sandbox, scope: TaskScope) -> AsyncIterator[Bindings]:
        """``sandbox`` is the task's, with a one-time key, until the task ends."""
        assert self.sandboxes is not None and self.daemon is not None, "not started"
        key = self.daemon.admit(sandbox)
        scope.state[self] = sandbox
        scope.during_steps(lambda: _graders_run_in(self.name, sandbox, scope))
        try:
            yield {self.name: {"client_key": key.export_private_key().decode(),
                               "cwd": sandbox.cwd, "task": scope.id}}
        finally:
            self.daemon.revoke(key)
            scope.state.pop(self, None)
            await self.sandboxes.close(sandbox)

    # -- the template's side --------------------------------------------------------------

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox of the task whose code is running now."""
        scope = current_scope()
        sandbox: Sandbox | None = scope.state.get(self) if scope is not None else None
        if sandbox is None:
            raise RuntimeError(f"workspace {self.name!r}: no task is running here; call this "
                               "from a template's setup or grading code")
        return sandbox

    async def run(
        self, command: str | list[str], *, user: User | None = None, **options: Any
    ) -> ProcessResult:
        """Run ``command`` in the current task's sandbox as ``user`` (by default the agent
        during setup, the grader once the answer is in: see the module's docstring; see
        :meth:`~hud.capabilities.sandbox.Sandbox.run` for ``timeout``, ``input``,
        ``check``, ``cwd`` and ``env``). Raises :class:`~hud.errors.CapabilityLost` if
        the sandbox died (the agent can kill it)."""
        with _lost(self.name):
            return await self.sandbox.run(command, user=user or _user_now(), **options)

    async def read_file(self, path: str, *, user: User | None = None) -> bytes:
        """``path``'s bytes, read as ``user`` (by default as :meth:`run` would)."""
        with _lost(self.name):
            return await self.sandbox.read_file(path, user or _user_now())

    async def write_file(self, path: str, data: bytes | str, *, user: User = "agent") -> None:
        """Write ``path`` as ``user``: the agent by default, the workspace's owner."""
        with _lost(self.name):
            await self.sandbox.write_file(path, data, user)


def _user_now(scope: TaskScope | None = None) -> User:
    """Who runs a command by default: the agent during setup (or outside any task), the
    grader once the answer is in."""
    scope = scope or current_scope()
    return "agent" if scope is None or scope.phase == "setup" else "grader"


@contextlib.contextmanager
def _lost(name: str) -> Iterator[None]:
    """Translate the sandbox's death into :class:`CapabilityLost`, naming the workspace."""
    try:
        yield
    except SpawnerGone as exc:
        raise CapabilityLost(f"workspace {name!r}: the sandbox is gone; something inside "
                             "killed it (its process supervisor exited)") from exc


@contextlib.contextmanager
def _graders_run_in(name: str, sandbox: Sandbox, scope: TaskScope) -> Iterator[None]:
    """While a step runs, ``BashGrader`` commands run in ``sandbox`` (when hud.graders is
    there to use it), as the grader once the answer is in."""
    try:
        from hud.graders.commands import TAIL_BYTES, CommandResult, using_command_runner
    except ImportError:
        yield
        return

    async def run_in_sandbox(
        command: str, *, cwd: str | os.PathLike[str] | None, timeout: float | None
    ) -> CommandResult:
        # the agent decides what graders print: keep tails, as the local runner does
        with _lost(name):
            result = await sandbox.run(command, cwd=cwd, timeout=timeout,
                                       max_output=TAIL_BYTES, user=_user_now(scope))
        return CommandResult(exit_code=None if result.timed_out else result.exit_status,
                             stdout=result.stdout, stderr=result.stderr,
                             timed_out=result.timed_out,
                             stdout_dropped=result.stdout_dropped,
                             stderr_dropped=result.stderr_dropped)

    with using_command_runner(run_in_sandbox):
        yield
