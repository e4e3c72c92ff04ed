"""Harnesses that attack their own rollout, registered by tests/test_reward_integrity.py."""

from __future__ import annotations

from hud.agents import Agent
from hud.eval.run import Run


class SandboxKiller(Agent):
    """Kills every process in its sandbox, the sandbox's supervisor included, then answers."""

    name = "sandbox_killer"

    async def __call__(self, run: Run) -> None:
        shell = await run.client.open("shell")
        # Its own shell dies with the rest: the command ends by timing out, as a model's
        # tool call would, and the agent answers anyway.
        result = await shell.run("kill -9 -1", timeout=3)
        run.record("tool_result", tool_call_id="1", content=f"timed out: {result.timed_out}")
        run.answer = "done"


ATTACKS = {
    "read the host's secrets": "cat /etc/shadow",
    "read the spawner's environment": "cat /proc/1/environ",
    "take the spawner's socket": (
        "python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True); "
        "p=l.syscall(434,1,0); print(\"pidfd\",p); "
        "print(\"getfd\",l.syscall(438,p,3,0),os.strerror(ctypes.get_errno()))'"),
    "be root": "id -u",
}


class Intruder(Agent):
    """Tries each of :data:`ATTACKS` in its shell, records each as a tool call and result (as
    a model harness does), then answers nothing useful."""

    name = "intruder"

    async def __call__(self, run: Run) -> None:
        shell = await run.client.open("shell")
        for number, (aim, command) in enumerate(ATTACKS.items()):
            run.record("tool_call", id=str(number), name="bash", arguments={"command": command},
                       aim=aim)
            result = await shell.run(command, timeout=10)
            run.record("tool_result", tool_call_id=str(number), exit_status=result.exit_status,
                       stdout=result.stdout, stderr=result.stderr)
        run.answer = "done"
