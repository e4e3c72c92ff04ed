"""Graders: turn what an agent did into a reward with named subscores.

Answer checks are plain functions returning a float in [0, 1]: :func:`exact_match`,
:func:`contains`, :func:`contains_any`, :func:`contains_all`, :func:`numeric_match` (which
number it takes is the caller's choice: ``pick="last"`` by default, ``"first"``, ``"only"``)
and :func:`f1_score`. Graders are classes whose ``grade(weight=1.0, name=None, **kwargs)``
returns an awaitable :class:`Score`: :class:`BashGrader` (a command's exit status) and
:class:`LLMJudgeGrader` (rubric criteria judged by any OpenAI-compatible model).
:meth:`Grade.gather` runs graders concurrently and combines them into a :class:`Grade`,
which a template yields as its reward::

    @env.template()
    async def fix_tests():
        answer = yield "Make the checkout tests pass"
        yield await Grade.gather(
            BashGrader.grade(weight=0.7, command="pytest tests/test_checkout.py -q"),
            BashGrader.grade(weight=0.3, command="ruff check ."),
            Score(name="said-done", score=contains(answer, "done"), weight=0.1),
        )

A check's float joins a grade as a ``Score`` (third line above). Weights: positive ones are
normalized into a weighted mean, negative ones are penalties, 0 reports without counting
(details on :class:`Grade`). A grader that cannot grade raises (:class:`GraderError`, or the
underlying error): a failure to grade is an error of the rollout, never a reward of 0.

Where ``BashGrader`` commands run is pluggable (:mod:`hud.graders.commands`): by default
``bash -c`` on the environment's host, in ``cwd``, in its own process group that is killed on
timeout. A sandboxed workspace installs its own runner with :func:`set_command_runner` (or
:func:`using_command_runner`; :func:`sandbox_runner` adapts a sandbox object), a ``ContextVar``
hook, so that graders run inside the rollout's sandbox and see exactly what the agent left
behind, as a user of their own that no process the agent left running can reach.
"""

from __future__ import annotations

from ..errors import GraderError
from .bash import BashGrader
from .commands import (
    CommandResult,
    CommandRunner,
    get_command_runner,
    reset_command_runner,
    run_subprocess,
    sandbox_runner,
    set_command_runner,
    using_command_runner,
)
from .grade import Grade, Grader, Score
from .judge import Criterion, LLMJudgeGrader, parse_verdict
from .text import (
    contains,
    contains_all,
    contains_any,
    exact_match,
    f1_score,
    find_numbers,
    normalize_text,
    numeric_match,
)

__all__ = [
    "BashGrader",
    "CommandResult",
    "CommandRunner",
    "Criterion",
    "Grade",
    "Grader",
    "GraderError",
    "LLMJudgeGrader",
    "Score",
    "contains",
    "contains_all",
    "contains_any",
    "exact_match",
    "f1_score",
    "find_numbers",
    "get_command_runner",
    "normalize_text",
    "numeric_match",
    "parse_verdict",
    "reset_command_runner",
    "run_subprocess",
    "sandbox_runner",
    "set_command_runner",
    "using_command_runner",
]
