"""The browser's sandbox: Chromium in bubblewrap, as an unprivileged uid, seeing only what
it needs to run.

The agent drives its browser over DevTools, so whatever Chromium can read, the agent can
read (``file://``, ``DOM.setFileInputFiles``, downloads). Confinement is therefore the
filesystem Chromium sees, not the URLs it is asked for:

* **files**: read-only ``/usr`` (and the ``/lib*``, ``/bin`` links into it), fonts, and
  Chromium's own configuration; a private ``/tmp``, ``/dev`` and ``/proc``; the profile, the
  only writable host directory. No ``/root``, ``/home``, ``/etc/passwd`` or environment
  source: those paths do not exist inside.
* **uid**: :data:`UID`, not root, so even a file bound by mistake is read with a stranger's
  rights; bubblewrap drops every capability, and Chromium keeps its own sandbox (zygote,
  seccomp) for the renderers inside this one.
* **network**: a namespace of its own when this process is root (see :mod:`.egress`);
  the host's otherwise.
* **URLs**: Chromium's managed policy, bound at ``/etc/chromium/policies/managed``, blocks
  ``file://`` and the schemes that show files (``view-source:``, ``filesystem:``), so a page
  shows the block page instead of what little the sandbox holds; it also turns off file
  pickers and downloads, and names the proxy.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..sandbox import leftovers

# Not nobody (65534), which other daemons share: files this uid owns are our profiles only.
UID = 64000  # and the group of the same number
PROFILE = "/tmp/profile"  # where the profile appears inside
SHM_SIZE = 1 << 30
"""Bytes of ``/dev/shm`` in the jail: Chromium's shared memory (tabs, the GPU process)."""
TMP_SIZE = 256 << 20
"""Bytes of the jail's own ``/tmp`` (the profile is a separate directory of the host)."""
POLICY_DIR = "/etc/chromium/policies/managed"
READ_ONLY = ("/usr", "/etc/fonts", "/etc/chromium.d", "/etc/alternatives",
             "/etc/ld.so.cache", "/etc/ssl/certs", "/var/cache/fontconfig", "/etc/localtime")
LINKS = ("lib", "lib64", "bin", "sbin")
# Blocking every chrome:// page breaks Chromium itself (a headless tab that loaded a site
# was sent back to about:blank); none of them lists files, and the sandbox has none of the
# host's to list. The two blocked here write files or open them.
BLOCKED = ("file://*", "view-source:*", "filesystem:*", "devtools://*",
           "chrome://net-export", "chrome://downloads")


def policy(proxy: str) -> dict[str, object]:
    """Chromium's managed policy: no local files, no file pickers, no downloads, and
    every connection through ``proxy`` (``host:port``), loopback included."""
    return {
        "URLBlocklist": list(BLOCKED),
        "AllowFileSelectionDialogs": False,
        "DownloadRestrictions": 3,
        "ProxySettings": {"ProxyMode": "fixed_servers", "ProxyServer": f"http://{proxy}",
                          "ProxyBypassList": "<-loopback>"},
        "WebRtcIPHandling": "disable_non_proxied_udp",
    }


@dataclass
class Jail:
    """The host side of one browser's sandbox, in a directory of its own (``root``, mode
    0711): ``profile/`` (owned by :data:`UID`, bound at :data:`PROFILE`), ``policy/``,
    and Chromium's log, which stays outside the sandbox. Removing ``root`` removes all."""

    root: Path

    @classmethod
    def create(cls, proxy: str) -> Jail:
        leftovers.sweep_once()  # a server killed before us may have left its jails
        jail = cls(Path(tempfile.mkdtemp(prefix=leftovers.prefix("chromium"))))
        jail.root.chmod(0o711)  # the sandbox's uid must reach profile/ and policy/
        (jail.root / "policy").mkdir(mode=0o755)
        (jail.root / "policy" / "hud.json").write_text(json.dumps(policy(proxy)))
        (jail.root / "profile").mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(jail.profile, UID, UID)
        return jail

    @property
    def profile(self) -> Path:
        return self.root / "profile"

    @property
    def log(self) -> Path:
        return self.root / "chromium.log"

    def argv(self, bwrap: str, chromium: list[str], *, private_network: bool,
             display: str | None, info_fd: int) -> list[str]:
        """``chromium`` (its argv, naming :data:`PROFILE`) wrapped in ``bwrap``, which
        writes the sandbox's pid to ``info_fd``. With ``display`` (``:N``), that X
        display's socket is bound in and ``DISPLAY`` set. An executable outside ``/usr``
        (a Chrome in ``/opt``) has its directory bound read-only."""
        argv = [bwrap, "--info-fd", str(info_fd), "--unshare-user", "--unshare-ipc",
                "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent",
                "--new-session", "--cap-drop", "ALL", "--hostname", "browser"]
        if private_network:
            argv.append("--unshare-net")
        for path in READ_ONLY:
            argv += ["--ro-bind-try", path, path]
        home = os.path.dirname(os.path.realpath(chromium[0]))
        if not home.startswith("/usr/"):
            argv += ["--ro-bind", home, home]
        for link in LINKS:
            argv += ["--symlink", f"usr/{link}", f"/{link}"]
        # tmpfs is memory: capped, so a page cannot fill the host's (bwrap's --size)
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm",
                 "--size", str(TMP_SIZE), "--tmpfs", "/tmp",
                 "--ro-bind", str(self.root / "policy"), POLICY_DIR,
                 "--bind", str(self.profile), PROFILE,
                 "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
                 "--setenv", "PATH", "/usr/bin:/bin"]
        if display is not None:
            socket = f"/tmp/.X11-unix/X{display.lstrip(':').split('.')[0]}"
            argv += ["--bind", socket, socket, "--setenv", "DISPLAY", display]
        return [*argv, "--", *chromium]
