"""Per-session sandboxes: bubblewrap isolation over a copy-on-write view of a workspace.

>>> sandboxes = Sandboxes(SandboxConfig(root="/srv/repo"))
>>> sandbox = await sandboxes.open()          # a pristine view, its own namespaces
>>> (await sandbox.run("pytest -q", timeout=60, user="grader")).exit_status
>>> await sandboxes.aclose()                  # every sandbox, then the scratch dirs

Every process inside is started by one small spawner (see :mod:`.inside`), which receives
the host's pipe or pty fds, so a command costs a fork and an exec, not a new sandbox.
"""

from .pool import Sandboxes
from .process import CommandFailed, ProcessResult, SandboxProcess
from .sandbox import Isolation, Sandbox, SandboxConfig, User, bwrap_path

__all__ = [
    "CommandFailed",
    "Isolation",
    "ProcessResult",
    "Sandbox",
    "SandboxConfig",
    "SandboxProcess",
    "Sandboxes",
    "User",
    "bwrap_path",
]
