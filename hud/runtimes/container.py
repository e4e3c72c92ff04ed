"""``container:IMAGE``: a fresh container per rollout, from an image ``hud build`` made (or
any image whose command is ``hud serve ... --host 0.0.0.0 --port 8765``).

Each container gets its own token (``HUD_TOKEN``) and publishes its control port on
127.0.0.1 only; capabilities reach the host through that one port, as with any served
environment (never at a daemon's own address: a container's network is its own, so its
clients tunnel everything). Each container also gets a host directory of its own, mounted
at :data:`LOCAL_DIR`, for the server's local-tunnel socket: a client of this runtime hands
its connections over there (one relay, in the container) and hud's openers get the
daemon's connection itself (no relay), where the engine maps the container's user to this
one (podman, rootless or as root; a container whose server runs as another user keeps to
bare tunnels, as do the containers of an engine that refuses the mount). When a rollout
ends (graded, failed or cancelled), its container is removed.
Containers hud could not remove itself (it was killed) are removed by a reaper process the
moment hud is gone (:mod:`hud.runtimes.reaper`), and, failing that, by the next container
runtime started on the same host (:meth:`~hud.runtimes.engine.Engine.sweep`).

Admission: rollouts at once are bounded by the caller (``hud eval --max-concurrent``); at
most ``max_starting`` containers start at once, and ``warm`` started ones wait ready, so a
rollout that finds one skips the start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from ..capabilities.sandbox import leftovers
from ..client import Client
from ..errors import HudConnectionError
from ..localtunnel import DIR_ENV, short_temp_dir
from .base import Runtime, RuntimeOptions, end_session
from .engine import OWNER_LABEL, RUNTIME_LABEL, Engine, EngineFailed, find_engine, owner_id

if TYPE_CHECKING:
    from ..environment import Task

log = logging.getLogger(__name__)

CONTROL_PORT = 8765
"""The port ``hud serve`` listens on inside the container (``Dockerfile.hud``'s EXPOSE)."""
POLL = 0.025
LOCAL_DIR = "/run/hud-local"
"""Where each container sees a host directory of its own for the server's local-tunnel
socket (:mod:`hud.localtunnel`): a client here then opens local tunnels (one relay) and
hud's openers get the daemon's connection itself (none) instead of bare tunnels (two)."""
START_TRIES = 3
MOUNT_REFUSED = re.compile(r"mounts denied|is not shared|bind source path does not exist",
                           re.IGNORECASE)
"""What an engine says when it will not mount the host directory (Docker Desktop and Colima
share only some host paths): the runtime then starts its containers without it."""
PORT_TAKEN = "address already in use"
"""What the engine says when another process bound the host port it picked for the control
port between its pick and its bind (seen with rootless podman and docker's API alike)."""


_MOUNT_ROOM = len("/hud-mounts-4194304-12345678/999999/hud-local-12345678/tunnels")
"""What a server's socket adds to the temp dir's path, on this side of its mount."""


def _new_mount_root() -> str:
    """A fresh directory (0700) for the containers' mounts, named with this process's pid
    (:mod:`hud.capabilities.sandbox.leftovers` removes it once that process is gone), where
    the servers' socket paths fit a Unix socket's (:func:`~hud.localtunnel.short_temp_dir`)."""
    return tempfile.mkdtemp(prefix=leftovers.prefix("mounts"),
                            dir=short_temp_dir(_MOUNT_ROOM))


@dataclass(frozen=True, slots=True)
class Container:
    """A started container and the control session connected to it."""

    name: str
    client: Client


class ContainerRuntime(Runtime):
    """A fresh container of ``image`` per rollout (see the module's docstring)."""

    name = "container"
    usage = "container:IMAGE"

    def __init__(self, image: str, *, engine: str | None = None, solutions: bool = False,
                 warm: int = 0, max_starting: int = 4, ready_timeout: float = 60.0) -> None:
        super().__init__(solutions=solutions)
        if warm < 0 or max_starting < 1:
            raise ValueError(f"warm must be at least 0 (not {warm}) and max_starting at "
                             f"least 1 (not {max_starting})")
        self.image = image
        self.engine = Engine(find_engine(engine))
        self.warm = warm
        self.ready_timeout = ready_timeout
        self.owner = owner_id()
        self._starting = asyncio.Semaphore(max_starting)
        self._ready: asyncio.Queue[Container] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()  # warm-ups and removals: owned here
        self._numbers = itertools.count(1)
        self._reaper: subprocess.Popen[bytes] | None = None
        self._mount_root: str | None = None  # the containers' socket directories, made at need
        self.mounts = True
        """Mount a socket directory into each container (:data:`LOCAL_DIR`); turned off
        when the engine refuses."""
        self._begun = False

    @classmethod
    def from_spec(cls, argument: str | None, options: RuntimeOptions) -> ContainerRuntime:
        """``container:IMAGE``; the engine is ``HUD_CONTAINER_ENGINE``, else podman or docker,
        whichever is on ``PATH``. Raises ``ValueError`` without an image or engine."""
        if argument is None:
            raise ValueError(f"the container runtime wants an image: {cls.usage}")
        try:
            return cls(argument, solutions=options.solutions, warm=options.warm,
                       max_starting=options.max_starting)
        except LookupError as exc:
            raise ValueError(str(exc)) from None

    # -- lifecycle ------------------------------------------------------------------------

    async def _begin(self) -> None:
        """Once, before the first container: sweep leftovers, start the reaper, warm up."""
        if self._begun:
            return
        self._begun = True
        # before the first await: a rollout that arrives meanwhile goes on to start its own
        if self._mount_root is None:
            self._mount_root = _new_mount_root()
        try:  # a hud killed with its reaper left its mounts' directory
            await asyncio.to_thread(leftovers.sweep_once)
        except Exception as exc:  # what others left must not stop this runtime
            log.warning("could not sweep what a killed hud left: %s", exc)
        with contextlib.suppress(EngineFailed, OSError):
            stale = await self.engine.sweep()
            if stale:
                log.warning("removed %d container(s) left by a hud that was killed: %s",
                            len(stale), ", ".join(stale))
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "hud.runtimes.reaper", self.engine.path, self.owner,
             self._mount_root],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        for _ in range(self.warm):
            self._spawn(self._warm_one())

    async def aclose(self) -> None:
        """Remove every container this runtime started (warm ones too), then stop the reaper.
        The runtime stays usable: its next rollout starts them again."""
        while self._tasks:
            for task in list(self._tasks):
                if not task.done() and task.get_name() == "hud-container-warm":
                    task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._ready.empty():
            await self._discard(self._ready.get_nowait())
        if self._reaper is not None:
            assert self._reaper.stdin is not None
            self._reaper.stdin.close()  # end-of-file: it removes what is left, then exits
            await asyncio.to_thread(self._reaper.wait)
            self._reaper = None
        if self._mount_root is not None:
            shutil.rmtree(self._mount_root, ignore_errors=True)
            self._mount_root = None
        self._begun = False  # a later rollout begins again: sweep, reaper, warm containers

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str = "hud-container-warm") -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one rollout ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open(self, task: Task) -> AsyncIterator[Client]:
        await self._begin()
        container = await self._take()
        try:
            yield container.client
        finally:
            # Removal is the runtime's task, not the rollout's: it completes even when the
            # rollout is cancelled, and aclose waits for it.
            self._spawn(self._discard(container), "hud-container-remove")

    async def _take(self) -> Container:
        if not self._ready.empty():
            container = self._ready.get_nowait()
            self._spawn(self._warm_one())
            return container
        return await self._start()

    async def _warm_one(self) -> None:
        try:
            self._ready.put_nowait(await self._start())
        except HudConnectionError as exc:
            log.warning("a warm container did not start: %s", exc)

    async def _discard(self, container: Container) -> None:
        await end_session(container.client)
        await self._remove(container.name)

    def _mount(self, name: str) -> str:
        """A fresh directory for container ``name``'s local-tunnel socket (0700, this
        user's), under this runtime's own."""
        if self._mount_root is None:  # closed meanwhile (aclose) and used again: made anew
            self._mount_root = _new_mount_root()
        path = self._mount_path(self._mount_root, name)
        os.mkdir(path, 0o700)
        return path

    @staticmethod
    def _mount_path(root: str, name: str) -> str:
        """Container ``name``'s directory under ``root``: by its number alone, as a Unix
        socket's path has 107 bytes at most."""
        return os.path.join(root, name.rsplit("-", 1)[-1])

    async def _remove(self, name: str) -> None:
        await self.engine.remove(name)
        if self._mount_root is not None:
            shutil.rmtree(self._mount_path(self._mount_root, name), ignore_errors=True)

    async def _start(self) -> Container:
        """Start a container and connect to it (at most ``max_starting`` at once). A start
        whose published port another process took first is tried again (up to
        :data:`START_TRIES` times in all), under a new name."""
        token = secrets.token_urlsafe(24)
        env = {"HUD_TOKEN": token, DIR_ENV: LOCAL_DIR}
        if self.solutions:
            env["HUD_ENABLE_SOLUTIONS"] = "1"
        labels = {RUNTIME_LABEL: "container", OWNER_LABEL: self.owner}
        async with self._starting:
            tried = 0
            while True:
                tried += 1
                name = f"hud-{self.owner.replace(':', '-')}-{next(self._numbers)}"
                mount = self._mount(name) if self.mounts else None
                try:
                    await self.engine.start(
                        self.image, name=name, port=CONTROL_PORT,
                        env=env if mount else {k: v for k, v in env.items() if k != DIR_ENV},
                        labels=labels, mounts={mount: LOCAL_DIR} if mount else None)
                    port = await self.engine.host_port(name, CONTROL_PORT)
                    if port is None:
                        await self._exited(name)
                    client = await self._connect(name, f"ws://127.0.0.1:{port}", token)
                    client.tunnel_all = True  # its network is the container's, never ours
                    client.local_mount = (LOCAL_DIR, mount) if mount else None
                except BaseException as exc:
                    await asyncio.shield(self._remove(name))
                    if isinstance(exc, EngineFailed):
                        if PORT_TAKEN in exc.output and tried < START_TRIES:
                            log.info("container %s: its port was taken as it started (%s); "
                                     "starting another", name, exc.output.strip()[-200:])
                            continue
                        if mount and MOUNT_REFUSED.search(exc.output) and tried < START_TRIES:
                            log.warning("%s refuses to mount %s (%s): containers get bare "
                                        "tunnels only", self.engine.name, mount,
                                        exc.output.strip()[-200:])
                            self.mounts = False
                            continue
                        raise HudConnectionError(f"container of {self.image}: {exc}") from None
                    raise
                return Container(name, client)

    async def _connect(self, name: str, url: str, token: str) -> Client:
        """Connect once the server in ``name`` listens (tried every ``POLL`` seconds; its
        start-up is a few hundred ms); fail as soon as the container is seen to have exited."""
        deadline = time.monotonic() + self.ready_timeout
        checked = time.monotonic()
        while True:
            try:
                return await Client.connect(url, token=token)
            except HudConnectionError:
                if time.monotonic() > deadline:
                    raise HudConnectionError(f"container of {self.image}: no environment "
                                             f"ready after {self.ready_timeout:g} s") from None
            # Asking the engine costs a process; once a second is enough to notice a crash.
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                state = await self.engine.run("inspect", "--format={{.State.Running}}", name)
                if state != "true":
                    await self._exited(name)
            await asyncio.sleep(POLL)

    async def _exited(self, name: str) -> NoReturn:
        logs = await self.engine.logs(name)
        raise HudConnectionError(f"container of {self.image} exited before serving:\n{logs}")
