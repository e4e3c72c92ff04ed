"""``hud task list|start|grade``: drive one task by hand against a served environment."""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from .common import (
    EXIT_ENVIRONMENT,
    emit,
    fail,
    parse_args_json,
    prompt_text,
    user_prints_to_stderr,
)


def _client(url: str, token: str | None, session_id: str | None = None) -> Any:
    from ..client import open_client

    return open_client(url, token=token, session_id=session_id)


async def list_served(url: str, token: str | None, as_json: bool) -> None:
    async with _client(url, token) as client:
        templates = client.templates
    if as_json:
        emit(msgspec.to_builtins(templates))
        return
    for tpl in templates:
        emit(f"{tpl.id}\t{tpl.description}")


async def describe(url: str, token: str | None, as_json: bool) -> None:
    """The served environment's manifest: who it is, its templates, and its capabilities
    with every binding parameter (an ssh capability's host key among them)."""
    async with _client(url, token) as client:
        manifest = client.manifest
    if as_json:
        emit({"environment": msgspec.to_builtins(manifest.environment),
              "protocol_version": manifest.protocol_version,
              "templates": msgspec.to_builtins(manifest.templates),
              "capabilities": msgspec.to_builtins(manifest.capabilities)})
        return
    env = manifest.environment
    emit(f"environment\t{env.name} {env.version} (protocol {manifest.protocol_version})")
    for tpl in manifest.templates:
        emit(f"template\t{tpl.id}\t{tpl.description}")
    for cap in manifest.capabilities:
        params = msgspec.json.encode(cap.params).decode()
        emit(f"capability\t{cap.name}\t{cap.protocol}\ttunnel /v1/tunnel/{cap.name}\t{params}")


def list_source(source: str, as_json: bool) -> None:
    from ..errors import LoadError
    from ..loader import load_environment, load_tasks

    user_prints_to_stderr()
    try:
        tasks = load_tasks(source)
        templates = [] if tasks else list(load_environment(source).templates.values())
    except LoadError as exc:
        fail(str(exc), EXIT_ENVIRONMENT)
    for task in tasks:  # the task rows, else (a bare env.py) its templates
        emit(task.to_dict() if as_json
             else f"{task.slug}\t{task.id}\t{msgspec.json.encode(task.args).decode()}")
    for info in (template.info() for template in templates):
        emit(msgspec.to_builtins(info) if as_json else f"{info.id}\t{info.description}")


def _resolve_slug(task: str, source: str) -> tuple[str, dict[str, Any]]:
    from ..errors import LoadError
    from ..loader import load_tasks

    user_prints_to_stderr()
    try:
        rows = load_tasks(source)
    except LoadError as exc:
        fail(str(exc), EXIT_ENVIRONMENT)
    for row in rows:
        if row.slug == task:
            return row.id, row.args
    return task, {}


async def start(
    task: str, raw_args: str, source: str | None, url: str, token: str | None, as_json: bool
) -> None:
    args = parse_args_json(raw_args)
    if source is not None:
        task, row_args = _resolve_slug(task, source)
        args = {**row_args, **args}
    async with _client(url, token) as client:
        result = await client.start(task, args)
    sys.stderr.write(f"session: {result.session_id}\n")
    emit(msgspec.to_builtins(result) if as_json else prompt_text(result.prompt))


async def grade(
    task: str, answer: str, session: str | None, url: str, token: str | None, as_json: bool
) -> None:
    async with _client(url, token, session) as client:
        result = await client.grade(answer, template=task)
    if as_json:
        emit(msgspec.to_builtins(result))
    else:
        emit(repr(result.reward))


async def status(url: str, token: str | None, as_json: bool) -> None:
    """One line a task: session, template, state (running or parked, with the seconds left
    before it expires), age in seconds, arguments. The monitor's own session is left out."""
    async with _client(url, token) as client:
        result = await client.status()
    if as_json:
        emit(msgspec.to_builtins(result))
        return
    for task in result.tasks:
        state = "running" if task.attached else f"parked({task.expires_in:.0f}s left)"
        if not task.started:
            state = "starting"
        args = msgspec.json.encode(task.task.args).decode()
        emit(f"{task.session_id}\t{task.task.template}\t{state}\t{task.age:.1f}s\t{args}")
    sys.stderr.write(f"{len(result.tasks)} task(s), {result.sessions - 1} other session(s)\n")


__all__ = ["grade", "list_served", "list_source", "start", "status"]
