"""A Harbor task's container: its image (built once per content of ``environment/``), a
container started from it for one task, commands and files in it, and its removal.

Containers carry the container runtime's owner label, so those of a ``hud`` that was
killed are removed by the next container runtime's sweep (:meth:`Engine.sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..runtimes.engine import (
    OWNER_LABEL,
    RUNTIME_LABEL,
    Engine,
    EngineFailed,
    build_environment,
    owner_id,
)
from .task import DOCKERFILE, HarborTask

_building: dict[str, asyncio.Lock] = {}
_tags: dict[Path, str] = {}


def image_tag(task: HarborTask) -> str:
    """``localhost/hud-harbor-NAME:HASH``, HASH over every file of ``environment/``: an
    unchanged environment reuses its image, across runs and processes."""
    digest = hashlib.sha256()
    root = task.path / "environment"
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in task.name.lower())
    return f"localhost/hud-harbor-{name}:{digest.hexdigest()[:12]}"


async def image_for(engine: Engine, task: HarborTask) -> str:
    """The task's image: ``docker_image`` as given, else ``environment/Dockerfile`` built
    (unless an image of the same content exists). Raises :class:`EngineFailed`."""
    if task.docker_image is not None:
        return task.docker_image
    if task.path not in _tags:  # hashing reads environment/: once, and off the event loop
        _tags[task.path] = await asyncio.to_thread(image_tag, task)
    tag = _tags[task.path]
    async with _building.setdefault(tag, asyncio.Lock()):
        with contextlib.suppress(EngineFailed):  # `image exists` is podman's alone
            await engine.run("image", "inspect", "--format={{.Id}}", tag)
            return tag
        await engine.run("build", "--tag", tag, "--file", str(task.path / DOCKERFILE),
                         str(task.path / "environment"), timeout=task.build_timeout,
                         env=await asyncio.to_thread(build_environment, engine.path))
    return tag


@dataclass(frozen=True, slots=True)
class Output:
    """A finished command in the container."""

    exit_status: int
    stdout: str
    stderr: str
    timed_out: bool = False


class TaskContainer:
    """One task's container, idle (``sleep infinity``) until commands are run in it."""

    def __init__(self, engine: Engine, task: HarborTask) -> None:
        self.engine = engine
        self.task = task
        self.name = f"hud-harbor-{owner_id().replace(':', '-')}-{secrets.token_hex(4)}"

    async def start(self, image: str) -> None:
        task = self.task
        flags = [f"--label={RUNTIME_LABEL}=harbor", f"--label={OWNER_LABEL}={owner_id()}"]
        flags += [f"--env={key}={value}" for key, value in task.env.items()]
        if task.cpus is not None:
            flags.append(f"--cpus={task.cpus:g}")
        if task.memory_mb is not None:
            flags.append(f"--memory={task.memory_mb}m")
        if task.workdir is not None:
            flags.append(f"--workdir={task.workdir}")
        await self.engine.run("run", "--detach", f"--name={self.name}", "--stop-timeout=1",
                              "--entrypoint=sleep", *flags, image, "infinity")

    def exec_argv(self, argv: list[str], *, env: dict[str, str] | None = None,
                  interactive: bool = True, user: str | None = None) -> list[str]:
        """``ENGINE exec`` of ``argv`` in this container, as a command line for the host."""
        flags = ["--interactive"] if interactive else []
        flags += [f"--env={key}={value}" for key, value in (env or {}).items()]
        if user is not None:
            flags.append(f"--user={user}")
        return [self.engine.path, "exec", *flags, self.name, *argv]

    async def run(self, script: str, *, timeout: float, env: dict[str, str] | None = None,
                  user: str | None = None) -> Output:
        """``bash -c script`` in the container, killed after ``timeout`` seconds."""
        proc = await asyncio.create_subprocess_exec(
            *self.exec_argv(["bash", "-c", script], env=env, interactive=False, user=user),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            # Killing the exec client leaves the command running (and holding its pipes):
            # end every process in the container but its idle PID 1, then the client.
            await self.run("kill -9 -1 2>/dev/null; true", timeout=30, user="root")
            with contextlib.suppress(ProcessLookupError):  # it may have ended with them
                proc.kill()
            out, err = await proc.communicate()
            return Output(-1, out.decode(errors="replace"), err.decode(errors="replace"), True)
        return Output(proc.returncode or 0, out.decode(errors="replace"),
                      err.decode(errors="replace"))

    async def copy_in(self, source: Path, target: str) -> None:
        """Copy the directory ``source`` to ``target`` in the container (made if missing)."""
        await self.engine.run("exec", self.name, "mkdir", "-p", target)
        await self.engine.run("cp", f"{source}/.", f"{self.name}:{target}")

    async def remove(self) -> None:
        await self.engine.remove(self.name)
