"""Per-session views of a pristine workspace: a copy-on-write overlay, or a copy.

* :class:`OverlayView` (root only, Linux): a size-capped tmpfs holding the overlay's upper
  and work directories, and a kernel overlay with the pristine tree as its lower layer. Two
  ``mount(2)`` calls (about 0.2 ms) whatever the workspace's size. Once the sandbox has
  bound the view, :meth:`View.detach` lazily unmounts both from the host: the view then
  lives only in the sandbox's mount namespace and vanishes with it.
* :class:`CopyView`: a full copy (on ``/dev/shm`` when there is one). Slower (it copies
  every byte) but needs no privilege.

The pristine tree must not change while views of it exist (overlayfs leaves that undefined).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from . import leftovers
from .users import idmapped_mount

log = logging.getLogger(__name__)

MNT_DETACH = 2
_libc: ctypes.CDLL | None = None


def _mount(source: str, target: str, fstype: str, data: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), 0, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def _detach(target: str) -> None:
    assert _libc is not None
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            log.warning("cannot detach %s: %s", target, os.strerror(err))


class View:
    """A private, writable tree for one session; :attr:`path` is its host path."""

    path: str

    def detach(self) -> None:
        """The sandbox has bound :attr:`path`; the host lets go of it (if it can)."""

    def close(self) -> None:
        """Free the view; safe to call twice."""


class OverlayView(View):
    """``owner`` (a host uid and gid) owns the view's root; with ``idmap`` (see
    :mod:`.users`) the lower layer is ``pristine`` seen through it, in which the tree's
    owner is ``owner`` too."""

    def __init__(
        self, pristine: str, views_dir: str, size: int, owner: int | None, idmap: int | None
    ) -> None:
        self.base = tempfile.mkdtemp(prefix="v", dir=views_dir)
        self.path = os.path.join(self.base, "m")
        self.mounted: list[str] = []
        try:
            _mount("tmpfs", self.base, "tmpfs", f"size={size},mode=0755")
            self.mounted.append(self.base)
            for sub in ("u", "w", "m"):
                os.mkdir(os.path.join(self.base, sub))
            if owner is not None:  # the upper root is the view's root
                os.chown(os.path.join(self.base, "u"), owner, owner)
            lower = pristine
            if idmap is not None:
                lower = os.path.join(self.base, "l")
                os.mkdir(lower)
                idmapped_mount(pristine, lower, idmap)
                self.mounted.append(lower)
            options = (f"lowerdir={lower},upperdir={self.base}/u,workdir={self.base}/w,"
                       "redirect_dir=on")
            _mount("overlay", self.path, "overlay", options)
            self.mounted.append(self.path)
            if idmap is not None:  # the overlay holds its own reference to the lower layer
                _detach(lower)
                self.mounted.remove(lower)
        except BaseException:
            self.close()
            raise

    def detach(self) -> None:
        for target in reversed(self.mounted):
            _detach(target)
        self.mounted.clear()

    def close(self) -> None:
        self.detach()
        try:
            os.rmdir(self.base)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove view %s: %s", self.base, exc)


class CopyView(View):
    """A copy, every file of it owned by ``owner`` (a host uid and gid) when given."""

    def __init__(self, pristine: str, views_dir: str, owner: int | None) -> None:
        self.path = tempfile.mkdtemp(prefix="c", dir=views_dir)
        shutil.copytree(pristine, self.path, symlinks=True, dirs_exist_ok=True)
        if owner is not None:
            os.chmod(self.path, 0o755)  # mkdtemp's 0700 would keep bubblewrap out
            for folder, dirs, files in os.walk(self.path):
                for name in (folder, *(os.path.join(folder, n) for n in dirs + files)):
                    os.lchown(name, owner, owner)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def overlay_supported(pristine: str) -> bool:
    """Whether this process can mount overlays of ``pristine`` (root on Linux, a plain path)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    return not any(c in pristine for c in ",:\\\n")  # would need escaping in mount options


def open_view(
    pristine: str, views_dir: str, *, size: int, overlay: bool, owner: int | None = None,
    idmap: int | None = None,
) -> View:
    """A fresh view of ``pristine``: an overlay (its writes capped at ``size`` bytes) when
    allowed and possible, else a copy; ``owner`` owns it (``idmap``: see :class:`OverlayView`)."""
    if overlay:
        try:
            return OverlayView(pristine, views_dir, size, owner, idmap)
        except OSError as exc:
            log.warning("overlay view failed (%s); copying the workspace instead", exc)
    return CopyView(pristine, views_dir, owner)


def default_views_dir() -> str:
    """Where view mount points and copies go: tmpfs ``/dev/shm`` if present, else temp."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return tempfile.mkdtemp(prefix=leftovers.prefix("views"), dir=base)
