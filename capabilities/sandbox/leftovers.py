"""What a server killed without cleanup (SIGKILL, the OOM killer) leaves on the host, and
its removal when the next server starts.

Everything a server creates on the host names its pid: scratch directories
``hud-sandbox-<pid>-*``, view directories ``hud-views-<pid>-*`` (with tmpfs and overlay
mounts inside), browser jails ``hud-chromium-<pid>-*`` (in the temp directory or
``/dev/shm``), the container runtime's directories of its containers' mounts
``hud-mounts-<pid>-*`` (:mod:`hud.runtimes.container`: its reaper removes them, unless
it was killed too) and control groups ``hud-<pid>-<n>`` (:mod:`.limits`). :func:`sweep` removes
those whose pid is no live process, so a live server's are never touched. A dead server's
pid taken by a new process only delays its removal to a later sweep.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from . import limits

log = logging.getLogger(__name__)

KINDS = ("sandbox", "views", "chromium", "mounts")
MNT_DETACH = 2


def prefix(kind: str) -> str:
    """The name prefix of a ``kind`` directory (one of :data:`KINDS`) this process makes."""
    return f"hud-{kind}-{os.getpid()}-"


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another's; or past any pid: left alone
        return True
    return True


@cache
def sweep_once() -> None:
    """:func:`sweep`, the first time only (each pool and browser start calls this)."""
    sweep()


def sweep() -> None:
    """Remove every leftover of a server that is gone: directories (unmounting what is
    mounted inside them first) and empty control groups."""
    bases = {Path(tempfile.gettempdir()), Path("/tmp"), Path("/dev/shm")}
    for base in bases:
        for entry in base.glob("hud-*-*-*") if base.is_dir() else []:
            _, kind, pid, _ = entry.name.split("-", 3)
            if kind in KINDS and pid.isascii() and pid.isdigit() and not alive(int(pid)) \
                    and entry.is_dir() and not entry.is_symlink():
                _remove(entry)
    limits.sweep(alive)


def _remove(path: Path) -> None:
    mounts = _mounts_under(path)
    for target in sorted(mounts, key=len, reverse=True):  # the innermost first
        _detach(target)
    if _mounts_under(path):  # never delete through a mount (an overlay's lower layer)
        log.warning("left %s: it still holds mounts", path)
        return
    log.info("removing %s, left by a server that is gone", path)
    shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, from ``/proc/self/mountinfo``."""
    found: list[str] = []
    root = str(path)
    mountinfo = Path("/proc/self/mountinfo")
    if not mountinfo.exists():  # no /proc (not Linux): nothing is mounted by hud there
        return found
    with mountinfo.open(encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            point = _unescape(line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo`` octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def _detach(target: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            log.warning("cannot unmount %s: %s", target, os.strerror(err))
