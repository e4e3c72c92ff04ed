"""Per-sandbox resource limits: a control group capping processes and memory.

Each sandbox gets its own group (``hud-<pid>-<n>``, ``<pid>`` the server's, see
:mod:`.leftovers`) nested under the server's own group, so a limit on the server (a
container's) holds its sandboxes too. The sandbox's first process joins it before it runs
(:meth:`Limits.wrap`), so everything it ever starts is counted, with no window in which a
child could escape. A fork bomb then meets ``pids.max``, a memory hog the group's memory
limit (the kernel's OOM killer acts inside the group only). Works with cgroup v2 (a ``hud``
group under the server's, controllers delegated to it; v2 allows that only where the
server's group holds no process, else the groups go under the root, with one warning) and
with v1 (the server's groups in the ``pids`` and ``memory`` hierarchies). Where neither is
writable (no root, a read-only ``/sys/fs/cgroup``), sandboxes run without these limits and
one warning says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
_names = itertools.count()
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(size: str | int) -> int:
    """``"512m"``, ``"4g"`` or a number of bytes → bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", size.lower())
    if match is None:
        raise ValueError(f"not a size: {size!r} (use bytes, or a number with k, m, g or t)")
    return int(match[1]) * _UNITS[match[2]]


def own_group(controller: str) -> str | None:
    """This process's group (a path from the hierarchy's root) in the v1 hierarchy of
    ``controller``, or in the unified v2 one for ``""``; None where it has none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):  # "" matches only the unified line's ""
            return path
    return None


def _under_own(base: Path, controller: str) -> Path:
    """``base`` joined with this process's group, so that sandbox groups are nested in
    it (and count against any limit a container running the server has)."""
    path = own_group(controller)
    return base / path.lstrip("/") if path else base


@cache
def _layout() -> tuple[str, list[Path]] | None:
    """("v2", [parent]) or ("v1", [pids parent, memory parent]) where groups can be made:
    under this process's own group(s) where possible, else (one warning) under the root."""
    unified = ROOT / "cgroup.controllers"
    try:
        controllers = set(unified.read_text().split()) if unified.exists() else set()
    except OSError:
        controllers = set()
    if controllers and {"pids", "memory"} <= controllers:
        return _layout_v2()
    v1 = [ROOT / "pids", ROOT / "memory"]
    if all((root / "cgroup.procs").exists() and os.access(root, os.W_OK) for root in v1):
        own = [_under_own(v1[0], "pids"), _under_own(v1[1], "memory")]
        if all(os.access(group, os.W_OK) for group in own):
            return "v1", own
        _warn_outside(f"{own} is not writable")
        return "v1", v1
    log.warning("no writable cgroup hierarchy with pids and memory controllers: sandboxes "
                "run without process and memory limits")
    return None


def _layout_v2() -> tuple[str, list[Path]] | None:
    """A delegated ``hud`` group under this process's own, with ``pids`` and ``memory``
    enabled for its children; under the root where the own group cannot delegate (v2
    refuses controllers below a group that holds processes, the server's own usually)."""
    own = _under_own(ROOT, "")
    if own != ROOT:
        try:
            _delegate(own)
            return "v2", [own / "hud"]
        except OSError as exc:
            _warn_outside(f"cannot delegate pids and memory below {own}: {exc}")
            with contextlib.suppress(OSError):
                (own / "hud").rmdir()
    try:
        _delegate(ROOT)
    except OSError as exc:
        log.warning("cgroup v2 is not writable (%s): sandboxes run without process "
                    "and memory limits", exc)
        return None
    return "v2", [ROOT / "hud"]


def _delegate(parent: Path) -> None:
    (parent / "cgroup.subtree_control").write_text("+pids +memory")
    (parent / "hud").mkdir(exist_ok=True)
    (parent / "hud" / "cgroup.subtree_control").write_text("+pids +memory")


def _warn_outside(why: str) -> None:
    log.warning("%s: sandbox groups go under the cgroup root, outside any limit on this "
                "server's own group", why)


def available() -> bool:
    return _layout() is not None


class Limits:
    """One sandbox's group: :meth:`wrap` a command to start it inside; :meth:`close`
    removes the group once its processes are gone."""

    def __init__(self, max_processes: int | None, max_memory: str | int | None) -> None:
        self.dirs: list[Path] = []
        layout = _layout()
        if layout is None or (max_processes is None and max_memory is None):
            return
        kind, roots = layout
        name = f"hud-{os.getpid()}-{next(_names)}"
        memory = None if max_memory is None else parse_size(max_memory)
        try:
            if kind == "v2":
                group = roots[0] / name
                group.mkdir()
                self.dirs = [group]
                if max_processes is not None:
                    (group / "pids.max").write_text(str(max_processes))
                if memory is not None:
                    (group / "memory.max").write_text(str(memory))
                    (group / "memory.swap.max").write_text("0")
            else:
                pids, mem = roots[0] / name, roots[1] / name
                for group in (pids, mem):
                    group.mkdir()
                    self.dirs.append(group)
                if max_processes is not None:
                    (pids / "pids.max").write_text(str(max_processes))
                if memory is not None:
                    (mem / "memory.limit_in_bytes").write_text(str(memory))
                    with contextlib.suppress(OSError):  # absent without swap accounting
                        (mem / "memory.memsw.limit_in_bytes").write_text(str(memory))
        except OSError as exc:
            log.warning("could not set up sandbox limits (%s); running without them", exc)
            self.close()

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started inside the group: a shell joins it, then becomes ``argv`` (exec,
        same pid), so everything the command starts is counted from its first instruction.
        This keeps ``posix_spawn`` for the start, where a Python ``preexec_fn`` would fork
        the whole server (tens of ms)."""
        if not self.dirs:
            return argv
        joins = " && ".join(f"echo 0 > {group / 'cgroup.procs'}" for group in self.dirs)
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *argv]

    def close(self) -> bool:
        """Remove the group; False while processes are still in it (the kernel may take a
        moment to reap them: call again)."""
        remaining = []
        for group in self.dirs:
            try:
                group.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                remaining.append(group)
        self.dirs = remaining
        return not remaining

    async def aclose(self) -> None:
        """:meth:`close`, retried for up to a second."""
        for _ in range(100):
            if self.close():
                return
            await asyncio.sleep(0.01)
        log.warning("could not remove %s: processes are still inside", self.dirs)


def sweep(alive: Callable[[int], bool]) -> None:
    """Remove the empty groups left by servers that are gone (``alive(pid)`` false), where
    groups are made now and where they were made before they nested in the server's."""
    layout = _layout()
    if layout is None:
        return
    old = [ROOT / "hud"] if layout[0] == "v2" else [ROOT / "pids", ROOT / "memory"]
    for parent in {*layout[1], *old}:
        for group in parent.glob("hud-*-*"):
            pid = group.name.split("-")[1]
            if pid.isascii() and pid.isdigit() and not alive(int(pid)):
                with contextlib.suppress(OSError):  # still holds processes: keep it
                    group.rmdir()
