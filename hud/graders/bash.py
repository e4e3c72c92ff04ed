"""``BashGrader``: a shell command's exit status as a score."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from .commands import CommandRunner, get_command_runner
from .grade import Grader

__all__ = ["BashGrader"]

# Characters of each stream kept in a score's info.
INFO_TAIL = 4000


class BashGrader(Grader):
    """1.0 iff ``command`` exits 0.

    ``BashGrader.grade(command="pytest -q", weight=0.7, cwd=None, timeout=600)``. The command
    runs through the current command runner (:mod:`hud.graders.commands`): inside the
    rollout's sandbox when the workspace installed one (as its ``grader`` user, once the
    answer is in), else ``bash -c`` on this host in ``cwd``. ``runner=`` overrides both.
    Info: ``command``, ``exit_code``, and the last 4,000 characters of ``stdout`` and
    ``stderr``, with ``output_truncated: True`` when either was longer (runners keep 64 KiB
    tails); a timeout scores 0.0 with ``timed_out: True`` and ``exit_code: None``. A
    command that cannot be started at all (no bash, no such ``cwd``, a ``cwd`` the grader
    may not enter) raises: a broken grader or a workspace it cannot read, not a pass.
    """

    default_name: ClassVar[str] = "bash"

    @classmethod
    async def compute(  # type: ignore[override]
        cls,
        *,
        command: str,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = 600,
        runner: CommandRunner | None = None,
    ) -> tuple[float, dict[str, Any]]:
        run = runner or get_command_runner()
        result = await run(command, cwd=cwd, timeout=timeout)
        info: dict[str, Any] = {
            "command": command,
            "exit_code": result.exit_code,
            "stdout": result.stdout[-INFO_TAIL:],
            "stderr": result.stderr[-INFO_TAIL:],
        }
        if result.truncated or max(len(result.stdout), len(result.stderr)) > INFO_TAIL:
            info["output_truncated"] = True
        if result.timed_out:
            info["timed_out"] = True
        passed = result.exit_code == 0 and not result.timed_out
        return (1.0 if passed else 0.0), info
