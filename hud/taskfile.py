"""MCP task files, the original HUD SDK's v5 rows: ``hud eval tasks.json AGENT``.

A row (a JSON list, ``{"tasks": [...]}``, or one object per line of ``.jsonl``)::

    {"id": "reach-10",                           # optional: the task's slug
     "prompt": "Increment the counter to 10",
     "mcp_config": {"local": {"command": "python", "args": ["server.py"], "env": {...}}},
                 # or {"remote": {"url": "https://…/mcp", "headers": {"Authorization": …}}}
     "setup_tool": {"name": "setup", "arguments": {}},        # or a list of calls; optional
     "evaluate_tool": {"name": "evaluate", "arguments": {"target": 10}},
     "agent_config": {"allowed_tools": [...], "disallowed_tools": [...],
                      "system_prompt": "...", "append_setup_output": true},
     "metadata": {...}}

:func:`parse_row` checks a row and raises :class:`~hud.errors.LoadError` naming the row and
the field. ``${VAR}`` in any string of ``mcp_config`` is replaced from the environment of the
process that starts the server (:func:`substitute`), so secrets stay out of the task rows and
the traces. :mod:`hud.taskfile_env` turns the rows into an environment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LoadError

ROW_FIELDS = ("id", "prompt", "mcp_config", "setup_tool", "evaluate_tool", "agent_config",
              "metadata")
AGENT_FIELDS = ("allowed_tools", "disallowed_tools", "system_prompt", "append_setup_output")
SERVER_FIELDS = {"command": ("command", "args", "env", "cwd"), "url": ("url", "headers")}
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_task_file(rows: list[Any]) -> bool:
    """Whether decoded rows are MCP task rows (they carry ``prompt`` or ``mcp_config``) rather
    than hud's own ``{"id", "args"}`` rows."""
    return any(isinstance(r, dict) and ("mcp_config" in r or "prompt" in r) for r in rows)


def read_rows(path: Path) -> list[Any]:
    """The decoded rows of a ``.json`` or ``.jsonl`` file; a line that is not JSON is named."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise LoadError(f"{path}: line {number} is not JSON: {exc}") from None
        return rows
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"{path} is not JSON: {exc}") from None
    if isinstance(loaded, dict) and "tasks" in loaded:
        loaded = loaded["tasks"]
    return loaded if isinstance(loaded, list) else [loaded]


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class McpServer:
    """One server of ``mcp_config``: a stdio ``command`` or a streamable-HTTP ``url``."""

    name: str
    command: list[str] | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class McpTask:
    """A checked row. ``server`` still holds the ``${VAR}`` references: see :func:`substitute`."""

    prompt: str
    server: McpServer
    evaluate: ToolCall
    setup: tuple[ToolCall, ...] = ()
    allowed_tools: tuple[str, ...] | None = None
    disallowed_tools: tuple[str, ...] = ()
    system_prompt: str | None = None
    append_setup_output: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def visible(self, tool: str) -> bool:
        """Whether the agent may see and call ``tool``: never the setup or evaluate tools,
        then as ``allowed_tools`` and ``disallowed_tools`` say."""
        if tool in {call.name for call in (*self.setup, self.evaluate)}:
            return False
        if self.allowed_tools is not None and tool not in self.allowed_tools:
            return False
        return tool not in self.disallowed_tools


def parse_row(row: Any, where: str) -> McpTask:
    """Check one row; ``where`` (``tasks.json: row 3``) starts every error message."""
    if not isinstance(row, dict):
        raise LoadError(f"{where}: a row must be a JSON object, not {_kind(row)}")
    unknown = sorted(set(row) - set(ROW_FIELDS))
    if unknown:
        raise LoadError(f"{where}: unknown field {unknown[0]!r} (a row has "
                        f"{', '.join(ROW_FIELDS)})")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise LoadError(f"{where}: prompt must be a non-empty string, not {_kind(prompt)}")
    if "evaluate_tool" not in row:
        raise LoadError(f"{where}: evaluate_tool is missing (the reward comes from it)")
    setup = row.get("setup_tool")
    calls = setup if isinstance(setup, list) else [] if setup is None else [setup]
    agent = _object(row.get("agent_config", {}), f"{where}: agent_config")
    for key in agent:
        if key not in AGENT_FIELDS:
            raise LoadError(f"{where}: agent_config.{key} is not supported (supported: "
                            f"{', '.join(AGENT_FIELDS)})")
    allowed = agent.get("allowed_tools")
    return McpTask(
        prompt=prompt,
        server=_server(row.get("mcp_config"), f"{where}: mcp_config"),
        evaluate=_call(row["evaluate_tool"], f"{where}: evaluate_tool"),
        setup=tuple(_call(c, f"{where}: setup_tool") for c in calls),
        allowed_tools=None if allowed is None else _names(allowed, f"{where}: agent_config"
                                                                   ".allowed_tools"),
        disallowed_tools=_names(agent.get("disallowed_tools", []),
                                f"{where}: agent_config.disallowed_tools"),
        system_prompt=_optional_str(agent.get("system_prompt"),
                                    f"{where}: agent_config.system_prompt"),
        append_setup_output=bool(agent.get("append_setup_output", False)),
        metadata=_object(row.get("metadata", {}), f"{where}: metadata"),
    )


def substitute(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """``value`` with every ``${VAR}`` in its strings replaced from ``environ`` (default:
    ``os.environ``); an unset variable raises ``LookupError`` naming it."""
    names = os.environ if environ is None else environ

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            raise LookupError(f"${{{name}}} is used in mcp_config but not set in the "
                              "environment")
        return names[name]

    if isinstance(value, str):
        return _VARIABLE.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


def _server(config: Any, where: str) -> McpServer:
    config = _object(config, where)
    if len(config) != 1:
        raise LoadError(f"{where}: names {len(config)} servers; a task here takes exactly one "
                        '({"NAME": {"command": ...}} or {"NAME": {"url": ...}})')
    (name, spec), = config.items()
    spec = _object(spec, f"{where}.{name}")
    kinds = [kind for kind in SERVER_FIELDS if kind in spec]
    if len(kinds) != 1:
        raise LoadError(f"{where}.{name}: needs exactly one of command or url")
    for key in spec:
        if key not in SERVER_FIELDS[kinds[0]]:
            raise LoadError(f"{where}.{name}.{key}: not a field of a {kinds[0]} server "
                            f"(fields: {', '.join(SERVER_FIELDS[kinds[0]])})")
    if kinds[0] == "url":
        url = spec["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise LoadError(f"{where}.{name}.url: must be an http(s) URL, not {url!r}")
        return McpServer(name, url=url, headers=_strings(spec.get("headers", {}),
                                                         f"{where}.{name}.headers"))
    command = spec["command"]
    if not isinstance(command, str) or not command:
        raise LoadError(f"{where}.{name}.command: must be a program name, not {_kind(command)}")
    args = _names(spec.get("args", []), f"{where}.{name}.args")
    env = spec.get("env")
    return McpServer(name, command=[command, *args],
                     env=None if env is None else _strings(env, f"{where}.{name}.env"),
                     cwd=_optional_str(spec.get("cwd"), f"{where}.{name}.cwd"))


def _call(value: Any, where: str) -> ToolCall:
    value = _object(value, where)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise LoadError(f"{where}.name: must be a tool name, not {_kind(name)}")
    extra = sorted(set(value) - {"name", "arguments"})
    if extra:
        raise LoadError(f"{where}.{extra[0]}: not a field of a tool call (name, arguments)")
    return ToolCall(name, _object(value.get("arguments", {}), f"{where}.arguments"))


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LoadError(f"{where}: must be a JSON object, not {_kind(value)}")
    return value


def _strings(value: Any, where: str) -> dict[str, str]:
    value = _object(value, where)
    for key, item in value.items():
        if not isinstance(item, str):
            raise LoadError(f"{where}.{key}: must be a string, not {_kind(item)}")
    strings: dict[str, str] = value
    return strings


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LoadError(f"{where}: must be a list of strings, not {_kind(value)}")
    return tuple(value)


def _optional_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise LoadError(f"{where}: must be a string, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value == "":
        return "an empty string"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), f"a {type(value).__name__}")
