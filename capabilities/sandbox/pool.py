"""The sandboxes of one workspace: built to one config, optionally started ahead of need."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import leftovers
from .sandbox import ETC, Isolation, Sandbox, SandboxConfig, bwrap_path, sandbox_python
from .users import AGENT_HOST_ID, Users, open_users
from .views import OverlayView, View, default_views_dir, open_view, overlay_supported

log = logging.getLogger(__name__)


class Sandboxes:
    """Probes isolation once, owns the scratch directories (synthetic ``/etc`` files, view
    mount points), every sandbox it handed out (:attr:`live`) and its spares.

    With ``config.spares`` > 0, that many sandboxes are kept started (each over its own
    pristine view) by one owned task, so :meth:`open` usually costs a list pop; the task
    starts with :meth:`start_spares` and after every :meth:`open`.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.bwrap = bwrap_path() if config.isolation == "bwrap" else None
        self.python = sandbox_python() or sys.executable
        if self.bwrap and sandbox_python() is None:
            log.warning("no python3 under /usr to run inside the sandbox: isolation is off")
            self.bwrap = None
        self.isolation: Isolation = "bwrap" if self.bwrap else "none"
        self.config.isolation = self.isolation
        self.overlay = self.isolation == "bwrap" and overlay_supported(config.root)
        leftovers.sweep_once()  # a server killed before us may have left its own
        self.scratch = tempfile.mkdtemp(prefix=leftovers.prefix("sandbox"))
        for name, text in ETC.items():
            Path(self.scratch, name).write_text(text)
        self.views_dir = default_views_dir()
        self.users: Users | None = None
        if self.isolation == "bwrap":
            self.users = open_users(config.root, self.views_dir)
        if self.users is not None:  # bubblewrap runs as the sandbox's user: let it reach in
            for path in (self.scratch, self.views_dir):
                os.chmod(path, 0o711)
        if self.users is not None and self.users.idmap is None:
            self.overlay = False  # an overlay would show the agent files it cannot change
        self.live: set[Sandbox] = set()
        self.spares: list[Sandbox] = []
        self._refill: asyncio.Task[None] | None = None
        self.closed = False

    def for_branch(self) -> Sandboxes:
        """For a branch made by ``tasks.fork`` (a copy of this process): the same probe
        results, users and directories, which stay this process's to remove (a branch never
        outlives it), and none of its sandboxes or spares, whose spawners it cannot reach."""
        branch = copy.copy(self)
        branch.live, branch.spares, branch._refill = set(), [], None
        branch.config = dataclasses.replace(self.config, spares=0)  # it serves one task
        return branch

    async def open(self) -> Sandbox:
        """A started sandbox with a pristine view of the workspace, now in :attr:`live`."""
        if self.closed:
            raise RuntimeError("the sandboxes are closed")
        sandbox = None
        while self.spares and sandbox is None:
            spare = self.spares.pop(0)
            if spare.spawner is not None and spare.spawner.alive:
                sandbox = spare
            else:
                await spare.aclose()
        if sandbox is None:
            sandbox = await self._new()
        self.live.add(sandbox)
        self.start_spares()
        return sandbox

    def start_spares(self) -> None:
        """Top the spares up in the background (no-op without ``config.spares``)."""
        if self.config.spares > len(self.spares) and not self.closed and (
            self._refill is None or self._refill.done()
        ):
            self._refill = asyncio.create_task(self._fill(), name="hud-sandbox-spares")

    async def _fill(self) -> None:
        while len(self.spares) < self.config.spares and not self.closed:
            try:
                self.spares.append(await self._new())
            except Exception as exc:
                log.warning("could not start a spare sandbox: %s", exc)
                return

    async def _new(self) -> Sandbox:
        sandbox = Sandbox(self.config, await self._open_view())
        try:
            await sandbox.start(self.bwrap, self.python, self.scratch, self.users)
        except BaseException:
            await sandbox.aclose()
            raise
        return sandbox

    async def _open_view(self) -> View:
        owner = None if self.users is None else AGENT_HOST_ID
        size = self.config.view_bytes()
        if not self.overlay:
            return await asyncio.to_thread(open_view, self.config.root, self.views_dir,
                                           size=size, overlay=False, owner=owner)
        view = open_view(self.config.root, self.views_dir, size=size, overlay=True,
                         owner=owner, idmap=None if self.users is None else self.users.idmap)
        self.overlay = isinstance(view, OverlayView)  # after one failure, copy from now on
        return view

    async def close(self, sandbox: Sandbox) -> None:
        self.live.discard(sandbox)
        await sandbox.aclose()

    async def aclose(self) -> None:
        """Stop topping up; close the spares and every live sandbox; remove the scratch."""
        self.closed = True
        if self._refill is not None:
            self._refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill
        spares, self.spares = self.spares, []
        for sandbox in [*spares, *self.live]:
            await self.close(sandbox)
        if self.users is not None:
            self.users.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.views_dir, ignore_errors=True)
