"""The container engine's command line (docker or podman), as the container runtime and
``hud build`` use it: one subprocess per operation, the same flags for both engines.

Which engine: ``HUD_CONTAINER_ENGINE`` (or an explicit name), else ``podman`` when it is on
``PATH`` (it needs no daemon), else ``docker``. Every container hud starts carries the labels
:data:`OWNER_LABEL` (who started it, ``HOST:PID``) and :data:`RUNTIME_LABEL`, so leftovers
of a killed ``hud`` can be found and removed (:meth:`Engine.sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from ..capabilities.sandbox.leftovers import alive

ENGINES = ("podman", "docker")
RUNTIME_LABEL = "org.hud.runtime"
OWNER_LABEL = "org.hud.owner"
JOB_LABEL = "org.hud.job"


class EngineMissing(LookupError):
    """Neither docker nor podman (nor the engine asked for) is on ``PATH``."""


class EngineFailed(RuntimeError):
    """An engine command exited non-zero; :attr:`output` is what it wrote on stderr."""

    def __init__(self, argv: Sequence[str], code: int, output: str) -> None:
        super().__init__(f"`{' '.join(argv[:3])} …` exited with code {code}: "
                         f"{output.strip()[-2000:] or '(no output)'}")
        self.code = code
        self.output = output


def find_engine(name: str | None = None) -> str:
    """The engine's executable: ``name`` (or ``HUD_CONTAINER_ENGINE``) if given, else the
    first of podman and docker on ``PATH``. Raises :class:`EngineMissing`."""
    wanted = name or os.environ.get("HUD_CONTAINER_ENGINE") or None
    if wanted is not None and wanted not in ENGINES:
        raise EngineMissing(f"unknown container engine {wanted!r}: choose docker or podman")
    for candidate in (wanted,) if wanted else ENGINES:
        path = shutil.which(candidate)
        if path is not None:
            return path
    if wanted:
        raise EngineMissing(f"{wanted} is not installed (not found on PATH)")
    raise EngineMissing("no container engine found: install podman or docker "
                        "(neither is on PATH)")


@functools.cache
def dialect(path: str) -> str:
    """``podman`` or ``docker``: which command line the engine at ``path`` speaks, by its
    ``--version`` (podman-docker installs a ``docker`` that is podman). One short process
    per path, the first time."""
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        version = os.path.basename(path)
    return "podman" if version.lower().startswith("podman") else "docker"


def build_environment(path: str) -> dict[str, str]:
    """The environment to run ``ENGINE build`` in: this process's, plus ``DOCKER_BUILDKIT=0``
    for a docker CLI without the buildx plugin."""
    env = dict(os.environ)
    if dialect(path) == "docker" and not _has_buildx(path):
        # docker >= 23 hands BuildKit builds to buildx. Without the plugin it falls back to
        # the legacy builder on its own, unless BuildKit is asked for (DOCKER_BUILDKIT=1, or
        # the config's features): then it fails ("BuildKit is enabled but the buildx
        # component is missing"). The legacy builder is all this CLI has, so ask for it.
        env["DOCKER_BUILDKIT"] = "0"
    return env


@functools.cache
def _has_buildx(path: str) -> bool:
    try:
        return subprocess.run([path, "buildx", "version"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def owner_id(pid: int | None = None) -> str:
    """The owner label's value for process ``pid`` (default: this one) on this host."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


@dataclass(frozen=True, slots=True)
class Engine:
    """One engine's command line (``path`` from :func:`find_engine`)."""

    path: str

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def dialect(self) -> str:
        """``podman`` or ``docker``: the command line ``path`` speaks (see :func:`dialect`)."""
        return dialect(self.path)

    async def run(self, *args: str, timeout: float = 120.0,
                  env: dict[str, str] | None = None) -> str:
        """Run ``ENGINE args...`` (in ``env``, default this process's environment); its
        stdout, stripped. Raises :class:`EngineFailed`."""
        argv = [self.path, *args]
        # Files, not pipes: ``run --detach`` leaves conmon (or containerd-shim) holding the
        # engine's stdout and stderr, so a pipe would never reach end-of-file.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err, env=env)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            out.seek(0)
            err.seek(0)
            if proc.returncode != 0:
                raise EngineFailed(argv, proc.returncode or 1, err.read().decode(errors="replace"))
            return out.read().decode().strip()

    async def start(self, image: str, *, name: str, port: int, env: dict[str, str],
                    labels: dict[str, str], mounts: dict[str, str] | None = None) -> None:
        """Start ``image`` detached as ``name``, container port ``port`` published on a free
        port of 127.0.0.1 only (never on other interfaces); ``mounts``: host directory →
        where it appears in the container."""
        flags = [f"--label={key}={value}" for key, value in labels.items()]
        flags += [f"--env={key}={value}" for key, value in env.items()]
        flags += [f"--volume={host}:{inside}:Z" for host, inside in (mounts or {}).items()]
        await self.run("run", "--detach", f"--name={name}", "--stop-timeout=2",
                       f"--publish=127.0.0.1::{port}", *flags, image)

    async def host_port(self, name: str, port: int) -> int | None:
        """The port of 127.0.0.1 that container port ``port`` of ``name`` is published on;
        ``None`` when it has none (podman: once the container has stopped; docker may go on
        naming the port of a stopped container, so callers still check that it runs)."""
        out = await self.run("port", name, str(port))
        # One line per binding (127.0.0.1:40123); docker adds [::]:40123 for a port published
        # on every interface. Only the 127.0.0.1 one is ours to use.
        for line in out.splitlines():
            host, _, host_port = line.rpartition(":")
            if host == "127.0.0.1" and host_port.isdigit():
                return int(host_port)
        return None

    async def logs(self, name: str) -> str:
        with contextlib.suppress(EngineFailed, TimeoutError, OSError):
            return await self.run("logs", "--tail=20", name, timeout=30)
        return "(no logs)"

    async def remove(self, *names: str) -> None:
        """Remove containers, running or not; never raises (one already gone is fine)."""
        # podman 4.3 stops at the first name already gone (and exits 0) unless --ignore;
        # docker has no --ignore and goes on past a missing name.
        ignore = ["--ignore"] if self.dialect == "podman" else []
        if names:
            with contextlib.suppress(EngineFailed, TimeoutError, OSError):
                await self.run("rm", "--force", *ignore, *names, timeout=60)

    async def labelled(self, label: str) -> dict[str, str]:
        """Every container (running or not) carrying ``label`` (``KEY`` or ``KEY=VALUE``):
        its name → the label's value."""
        key = label.partition("=")[0]
        # The value itself, not the list of labels: the list is "k=v,k2=v2" (docker) or
        # "map[k:v k2:v2]" (podman), ambiguous once any label holds a comma or a space.
        # Each engine has its own template for it: podman 4 has no .Label, docker's
        # .Labels is a string, not a map.
        template = (f'{{{{index .Labels "{key}"}}}}' if self.dialect == "podman"
                    else f'{{{{.Label "{key}"}}}}')
        out = await self.run("ps", "--all", f"--filter=label={label}",
                             f"--format={{{{.Names}}}} {template}", timeout=60)
        return {name: value for name, _, value in (line.partition(" ")
                                                   for line in out.splitlines())}

    async def sweep(self) -> list[str]:
        """Remove containers that a ``hud`` on this host started and that outlived it (it
        was killed before it could remove them). Returns their names."""
        host = socket.gethostname()
        stale = []
        for name, owner in (await self.labelled(OWNER_LABEL)).items():
            owner_host, _, pid = owner.rpartition(":")
            if owner_host == host and pid.isdigit() and not alive(int(pid)):
                stale.append(name)
        await self.remove(*stale)
        return stale

