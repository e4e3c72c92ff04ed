"""Stored runs as ATIF trajectories: Harbor's Agent Trajectory Interchange Format.

One JSON file per run (``<trace id>.json``), valid against ``harbor.models.trajectories.
Trajectory`` at :data:`ATIF_VERSION`. The mapping from a trace's steps:

``prompt``       user steps (the template's whole conversation when it gave one).
``message``      a step of its role (``assistant`` turns are ``agent`` steps).
``model``        an ``agent`` step: text, ``reasoning_content``, ``tool_calls``, ``metrics``
                 (prompt, completion and cached tokens, cost; the rest in ``metrics.extra``),
                 stop reason and latency in ``extra``.
``tool_result``  an ``observation`` result on the agent step that made the call.
``error``        a ``system`` step saying which phase failed.

The run's answer closes the trajectory as an agent step of its own (``llm_call_count`` 0)
unless the last model turn said it already. The grade (reward, subscores, info) and the run's
status go in ``final_metrics.extra``; the task, job and phase timings in the root ``extra``.
Images are copied next to the trajectories (``images/<sha256>.<ext>``) and referenced by that
relative path, as ATIF's ``ImageSource`` allows.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .blobs import write_json

if TYPE_CHECKING:
    from .store import TraceStore

ATIF_VERSION = "ATIF-v1.8"
"""The newest version harbor's ``Trajectory`` model accepts (a test checks it still is)."""

IMAGES = "images"
_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif",
                "image/webp": "webp"}
_ROLES = {"system": "system", "user": "user", "assistant": "agent"}
_METRICS = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens",
            "cached_input_tokens": "cached_tokens", "cost_usd": "cost_usd"}
_TOKEN_FIELDS = ("prompt_token_ids", "completion_token_ids", "logprobs")


def write_trajectories(store: TraceStore, job_id: str, directory: Path) -> list[Path]:
    """Write every run of a job (an id or unique prefix) as ``directory/<trace id>.json``,
    its images under ``directory/images``; the paths written, in the job's order."""
    full = store.find_job(job_id)
    rows = store.query("SELECT trace_id FROM runs WHERE job_id = ? "
                       "ORDER BY slug, group_id, started_at", (full,))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for row in rows:
        images = _Images(store.root, directory)
        document = trajectory(store.run(row["trace_id"])["trace"], images)
        path = directory / f"{row['trace_id']}.json"
        write_json(path, document)
        written.append(path)
    return written


def trajectory(trace: dict[str, Any], images: _Images) -> dict[str, Any]:
    """A stored trace document (:meth:`TraceStore.run`'s ``trace``) as an ATIF trajectory."""
    agent = trace.get("agent") or {}
    steps = _Steps(images, agent.get("model"))
    for step in trace.get("steps", []):
        steps.add(step)
    steps.close(trace.get("answer"))
    if not steps.steps:  # ATIF wants one step at least
        status = trace.get("status", "pending")
        steps.steps.append({"step_id": 1, "source": "system",
                            "message": f"the run recorded no steps (status {status})"})
    usage = trace.get("usage") or {}
    final = {"total_prompt_tokens": usage.get("input_tokens"),
             "total_completion_tokens": usage.get("output_tokens"),
             "total_cached_tokens": usage.get("cached_input_tokens"),
             "total_cost_usd": usage.get("cost_usd"), "total_steps": len(steps.steps),
             "extra": _grade(trace)}
    return _present({
        "schema_version": ATIF_VERSION, "session_id": trace.get("id"),
        "trajectory_id": trace.get("id"), "agent": _agent(agent, trace.get("tools") or []),
        "steps": steps.steps, "final_metrics": _present(final), "extra": {"hud": _run(trace)},
    })


def _agent(agent: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    from .. import __version__

    definitions = [{"type": "function", "function": {
        "name": tool.get("name"), "description": tool.get("description", ""),
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}}
        for tool in tools]
    return _present({"name": agent.get("name") or "hud", "version": __version__,
                     "model_name": agent.get("model"), "tool_definitions": definitions or None,
                     "extra": {"settings": agent["settings"]} if agent.get("settings") else None})


def _grade(trace: dict[str, Any]) -> dict[str, Any]:
    return _present({"reward": trace.get("reward"), "subscores": trace.get("subscores") or None,
                     "info": trace.get("info") or None, "status": trace.get("status", "pending"),
                     "error": trace.get("error")})


def _run(trace: dict[str, Any]) -> dict[str, Any]:
    return _present({key: trace.get(key) for key in (
        "id", "job_id", "group_id", "task", "status", "attempt", "parent_id", "branch_step",
        "phases", "started_at", "ended_at")})


class _Steps:
    """The ATIF steps of one trace, built in order (step ids from 1)."""

    def __init__(self, images: _Images, model: str | None) -> None:
        self.images, self.model = images, model
        self.steps: list[dict[str, Any]] = []
        self.calls: dict[str, dict[str, Any]] = {}  # tool call id → the agent step making it
        self.answered_at: str | None = None

    def add(self, step: dict[str, Any]) -> None:
        kind, data = step.get("kind"), step.get("data") or {}
        when = _timestamp(step.get("time"))
        if kind == "prompt":
            turns = data.get("messages") or [{"role": "user", "content": data.get("prompt")}]
            for turn in turns:
                self._append(_ROLES.get(str(turn.get("role")), "user"), turn.get("content"),
                             when)
        elif kind == "message":
            step = self._append(_ROLES.get(str(data.get("role")), "user"), data.get("content"),
                                when)
            if step["source"] == "system":  # a harness's system prompt: first, as it was sent
                leading = next((i for i, other in enumerate(self.steps)
                                if other["source"] != "system"), len(self.steps))
                self.steps.insert(leading, self.steps.pop())
        elif kind == "model":
            self._model(data, step.get("duration"), when)
        elif kind == "tool_result":
            self._observe(data)
        elif kind == "answer":  # the oracle's: when the answer was given
            self.answered_at = when
        elif kind == "error":
            self._append("system", f"the run failed during {data.get('phase')}: "
                         f"{data.get('type')}: {data.get('message')}", when)

    def close(self, answer: Any) -> None:
        """End with the answer, unless the last agent turn said it (or there is none), and
        number the steps."""
        self._close(answer)
        for number, step in enumerate(self.steps, 1):
            step["step_id"] = number

    def _close(self, answer: Any) -> None:
        if answer is None:
            return
        text = answer if isinstance(answer, str) else msgspec.json.encode(answer).decode()
        agents = [step for step in self.steps if step["source"] == "agent"]
        if agents and agents[-1]["message"] == text:
            return
        self._append("agent", text, self.answered_at, llm_call_count=0,
                     extra={"hud_kind": "answer"})

    def _append(self, source: str, content: Any, when: str | None, **fields: Any
                ) -> dict[str, Any]:
        step = _present({"step_id": 0, "timestamp": when, "source": source,
                         "message": self._message(content), **fields})
        self.steps.append(step)
        return step

    def _model(self, data: dict[str, Any], latency: float | None, when: str | None) -> None:
        calls = [_tool_call(call, f"call_{len(self.steps) + 1}_{i}")
                 for i, call in enumerate(data.get("tool_calls") or [])]
        model = (data.get("request") or {}).get("model")
        reasoning = data.get("reasoning")
        step = self._append(
            "agent", data.get("content"), when, llm_call_count=1,
            model_name=model if model and model != self.model else None,
            reasoning_content=reasoning if isinstance(reasoning, str) else None,
            tool_calls=calls or None, metrics=_metrics(data) or None,
            extra=_present({"stop_reason": data.get("stop_reason"), "latency_s": latency})
            or None)
        for call in calls:
            self.calls[call["tool_call_id"]] = step

    def _observe(self, data: dict[str, Any]) -> None:
        call_id = data.get("tool_call_id")
        step = self.calls.get(call_id) if isinstance(call_id, str) else None
        result = _present({"source_call_id": call_id if step else None,
                           "content": self._message(data.get("content")),
                           "extra": {"is_error": True} if data.get("is_error") else None})
        if step is None:  # a result no recorded call asked for: a system event
            step = self._append("system", "", None)
        step.setdefault("observation", {"results": []})["results"].append(result)

    def _message(self, content: Any) -> str | list[dict[str, Any]]:
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return [self._part(block) for block in content]
        return msgspec.json.encode(content).decode()

    def _part(self, block: Any) -> dict[str, Any]:
        if isinstance(block, str):
            return {"type": "text", "text": block}
        if isinstance(block, dict) and block.get("type") == "text":
            return {"type": "text", "text": str(block.get("text", ""))}
        if isinstance(block, dict) and block.get("type") == "image":
            source = self.images.copy(block)
            if source is not None:
                return {"type": "image", "source": source}
        return {"type": "text", "text": msgspec.json.encode(block).decode()}


def _tool_call(call: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(msgspec.DecodeError):
            arguments = msgspec.json.decode(arguments)
    if not isinstance(arguments, dict):  # ATIF wants an object: keep the raw value inside
        arguments = {} if arguments is None else {"input": arguments}
    return {"tool_call_id": call.get("id") or fallback_id,
            "function_name": str(call.get("name")), "arguments": arguments}


def _metrics(data: dict[str, Any]) -> dict[str, Any]:
    usage = dict(data.get("usage") or {})
    metrics: dict[str, Any] = {name: usage.pop(key) for key, name in _METRICS.items()
                               if usage.get(key) is not None}
    for name in _TOKEN_FIELDS:  # token ids and logprobs, where a harness recorded them
        if isinstance(data.get(name), list):
            metrics[name] = data[name]
    if "cost_usd" not in metrics and isinstance(data.get("cost_usd"), int | float):
        metrics["cost_usd"] = data["cost_usd"]
    if usage:
        metrics["extra"] = usage
    return metrics


class _Images:
    """Copies a trace's images next to its trajectory; ``copy`` gives the ATIF source."""

    def __init__(self, root: Path, directory: Path) -> None:
        self.root, self.directory = root, directory

    def copy(self, block: dict[str, Any]) -> dict[str, str] | None:
        """``{"media_type", "path"}`` for an image block (stored file or inline base64);
        ``None`` for one ATIF cannot carry (another media type, unreadable data)."""
        media_type = str(block.get("mime_type") or block.get("media_type") or "image/png")
        if media_type not in _IMAGE_TYPES:
            return None
        if isinstance(block.get("file"), str):
            source = self.root / block["file"]
            relative = f"{IMAGES}/{source.name}"
            if not (self.directory / relative).exists():
                (self.directory / IMAGES).mkdir(exist_ok=True)
                shutil.copyfile(source, self.directory / relative)
            return {"media_type": media_type, "path": relative}
        try:
            payload = base64.b64decode(str(block.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            return None
        relative = (f"{IMAGES}/{hashlib.sha256(payload).hexdigest()}."
                    f"{_IMAGE_TYPES[media_type]}")
        (self.directory / IMAGES).mkdir(exist_ok=True)
        (self.directory / relative).write_bytes(payload)
        return {"media_type": media_type, "path": relative}


def _timestamp(seconds: Any) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the ones that are ``None`` (ATIF omits what is unknown)."""
    return {key: value for key, value in fields.items() if value is not None}
