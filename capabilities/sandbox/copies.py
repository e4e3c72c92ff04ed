"""A task's files carried into another sandbox (``tasks.fork``): what differs from the
pristine workspace, and nothing else.

The source is a live sandbox's view. An overlay view lives only in the sandbox's mount
namespace (the host detached it), so it is reached as ``/proc/<pid 1>/root/<guest path>``
(root can); a copy view is a host directory. The target is a fresh sandbox's view of the
same pristine tree, reached the same way. Only entries whose type, size, mode, owner or
modification time differ from the pristine tree's are copied (on a copy-on-write overlay:
the upper layer, in effect), and entries the source no longer has are removed, so a 50 MB
workspace in which the agent changed two files costs two files and a walk of ``stat`` calls.
Processes running in the source stay there.
"""

from __future__ import annotations

import os
import shutil
import stat

from .sandbox import Sandbox


def files_of(sandbox: Sandbox) -> str:
    """The host path at which ``sandbox``'s workspace can be read and written now."""
    if sandbox.isolation == "bwrap" and sandbox.pid1 is not None:
        return f"/proc/{sandbox.pid1}/root{sandbox.config.guest_path}"
    return sandbox.view.path


def copy_changes(source: str, target: str, pristine: str) -> int:
    """Make ``target`` (a fresh view of ``pristine``) hold what ``source`` holds; returns
    the bytes copied. Raises ``OSError`` (``ENOSPC`` when the target's view is full)."""
    copied = 0
    for folder, dirs, files in os.walk(source):
        relative = os.path.relpath(folder, source)
        for name in dirs + files:
            path = os.path.normpath(os.path.join(relative, name))
            info = os.lstat(os.path.join(source, path))
            if not _same(info, os.path.join(pristine, path)):
                copied += _copy_entry(os.path.join(source, path), os.path.join(target, path),
                                      info)
    for folder, dirs, files in os.walk(pristine):
        relative = os.path.relpath(folder, pristine)
        for name in dirs + files:
            if not os.path.lexists(os.path.join(source, relative, name)):
                _remove(os.path.join(target, relative, name))
        dirs[:] = [d for d in dirs if os.path.isdir(os.path.join(source, relative, d))]
    return copied


def _same(info: os.stat_result, pristine: str) -> bool:
    try:
        old = os.lstat(pristine)
    except FileNotFoundError:
        return False
    if (info.st_mode, info.st_uid, info.st_gid) != (old.st_mode, old.st_uid, old.st_gid):
        return False
    if stat.S_ISDIR(info.st_mode):
        return True  # its entries are compared one by one
    return (info.st_size, info.st_mtime_ns) == (old.st_size, old.st_mtime_ns)


def _copy_entry(source: str, target: str, info: os.stat_result) -> int:
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        if not os.path.isdir(target) or os.path.islink(target):
            _remove(target)
            os.mkdir(target)
    elif stat.S_ISLNK(mode):
        _remove(target)
        os.symlink(os.readlink(source), target)
    elif stat.S_ISREG(mode):
        if os.path.isdir(target) and not os.path.islink(target):
            _remove(target)
        shutil.copyfile(source, target, follow_symlinks=False)
    else:
        return 0  # sockets, fifos, devices: they belong to processes, which stay behind
    os.lchown(target, info.st_uid, info.st_gid)
    if not stat.S_ISLNK(mode):
        os.chmod(target, stat.S_IMODE(mode))
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    return info.st_size if stat.S_ISREG(mode) else 0


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
