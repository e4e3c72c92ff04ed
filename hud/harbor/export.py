"""Our tasks as Harbor task directories (``hud export-tasks tasks.py --format harbor DIR``).

Harbor runs a task's image idle (``sleep infinity``), lets its agent work in it, then runs
``tests/test.sh`` there. An exported task therefore brings hud along: its image is the
environment's own (``FROM`` the image ``hud build`` makes), and ``tests/test.sh`` serves
the environment, starts the task and grades the answer the agent wrote to
:data:`ANSWER_PATH`, turning hud's reward and subscores into ``reward.json``.
``instruction.md`` is the prompt the task's setup gives (rendered here, in process), and
``solution/solve.sh`` writes the reference solution's answer. Tasks graded on the answer
carry over exactly; a task graded on a workspace hud sets up is graded on a fresh one.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

ANSWER_PATH = "/logs/agent/answer.txt"
PORT = 8765

TEST_SH = """\
#!/bin/bash
# Grades hud task {slug!r}: serve the environment, start the task, grade the agent's
# answer ({answer}); hud's reward and subscores become /logs/verifier/reward.json.
set -u
mkdir -p /logs/verifier
hud serve "$HUD_ENV_PATH" --port {port} > /logs/verifier/hud-serve.log 2>&1 &
url=ws://127.0.0.1:{port}
for _ in $(seq 300); do hud task list --url "$url" > /dev/null 2>&1 && break; sleep 0.1; done
hud task start {template} --args {args} --url "$url" > /dev/null
touch {answer}
hud task grade {template} --answer-file {answer} --url "$url" --json \\
  > /logs/verifier/grade.json
python3 - <<'PY'
import json
grade = json.load(open("/logs/verifier/grade.json"))
rewards = {{"reward": grade["reward"]}}
rewards.update({{s["name"]: s["score"] for s in grade.get("subscores") or []}})
json.dump(rewards, open("/logs/verifier/reward.json", "w"))
PY
"""


def harbor_toml(task: Any, image: str, timeout: float | None) -> str:
    """task.toml: hud's task row in ``[metadata]``, the image, the timeouts: the agent's
    is the template's own ``agent_timeout`` where it has one (so a Harbor task read in and
    exported again keeps it), else ``timeout``; the verifier's is ``timeout``."""
    lines = ['schema_version = "1.4"', "", "[metadata]",
             f"hud_env = {json.dumps(task.env)}", f"hud_template = {json.dumps(task.id)}",
             f"hud_args = {json.dumps(json.dumps(task.args, sort_keys=True))}", "",
             "[environment]", f"docker_image = {json.dumps(image)}"]
    template = getattr(task, "template", None)
    agent = getattr(template, "agent_timeout", None) or timeout
    if agent is not None:
        lines += ["", "[agent]", f"timeout_sec = {agent:g}"]
    if timeout is not None:
        lines += ["", "[verifier]", f"timeout_sec = {timeout:g}"]
    return "\n".join(lines) + "\n"


async def render(task: Any, runtime: Any) -> tuple[str, str | None]:
    """The prompt of ``task`` as text, and its reference answer (None without a solution)."""
    from ..cli.common import prompt_text

    async with runtime.open(task) as client:
        started = await client.start(task.id, task.args)
        prompt = prompt_text(started.prompt)
        answer = None
        if task.template is not None and task.template.solution_func is not None:
            answer = await client.solve()
        await client.cancel()
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, indent=2)
    return text, None if answer is None else str(answer)


def write_task(target: Path, task: Any, image: str, prompt: str, answer: str | None,
               timeout: float | None) -> None:
    """One Harbor task directory at ``target``."""
    (target / "environment").mkdir(parents=True, exist_ok=True)
    (target / "tests").mkdir(exist_ok=True)
    (target / "task.toml").write_text(harbor_toml(task, image, timeout))
    (target / "instruction.md").write_text(
        f"{prompt.rstrip()}\n\nWhen you are done, write your final answer (the answer "
        f"alone) to `{ANSWER_PATH}`.\n")
    (target / "environment" / "Dockerfile").write_text(f"FROM {image}\n")
    script = TEST_SH.format(slug=task.slug, template=shlex.quote(task.id), port=PORT,
                            args=shlex.quote(json.dumps(task.args)), answer=ANSWER_PATH)
    (target / "tests" / "test.sh").write_text(script)
    if answer is not None:
        (target / "solution").mkdir(exist_ok=True)
        (target / "solution" / "solve.sh").write_text(
            f"#!/bin/bash\nmkdir -p {Path(ANSWER_PATH).parent}\n"
            f"printf '%s' {shlex.quote(answer)} > {ANSWER_PATH}\n")


async def export_harbor(tasks: list[Any], directory: Path, image: str,
                        timeout: float | None = None) -> list[Path]:
    """Write every task as ``directory/SLUG/``; returns the directories written."""
    from ..runtimes.inprocess import InProcessRuntime

    written = []
    async with InProcessRuntime(solutions=True) as runtime:
        for task in tasks:
            prompt, answer = await render(task, runtime)
            target = directory / task.slug
            await asyncio.to_thread(write_task, target, task, image, prompt, answer, timeout)
            written.append(target)
    return written
