"""What the real Messages API refuses, checked on every request the fake Anthropic receives.

:func:`refusal` answers ``(status, message)`` for the first broken rule, as the API would,
or ``None``. Each rule cites the page that documents it. The request's shape is checked
against the installed ``anthropic`` SDK's own request types (the beta ones when an
``anthropic-beta`` header is sent), so a field the SDK does not know is refused as the API
refuses it.
"""

from __future__ import annotations

import re
from typing import Any

import typing_extensions as te
from anthropic.types import Model
from anthropic.types import message_create_params as ga
from anthropic.types.beta import message_create_params as beta

from .sdk_types import violation

# https://platform.claude.com/docs/en/about-claude/models/overview: the model ids the API
# serves; the installed SDK lists the current ones.
MODELS = tuple(a for a in te.get_args(te.get_args(Model)[0]) if isinstance(a, str))

# https://platform.claude.com/docs/en/agents-and-tools/tool-use/computer-use-tool: which model
# takes which computer tool. Claude 5.5 and later (and Fable/Mythos 5.2) take only the GA
# toolset on the Claude API and answer 400 to computer_20251124 and computer_20250124.
COMPUTER = {
    "computer_toolset_20260801": (
        "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-2",
        "claude-mythos-5-2", "claude-fable-5-1", "claude-mythos-5-1", "claude-fable-5",
        "claude-mythos-5", "claude-opus-5", "claude-sonnet-5", "claude-opus-4-8"),
    "computer_20251124": (
        "claude-fable-5-1", "claude-mythos-5-1", "claude-fable-5", "claude-mythos-5",
        "claude-opus-5", "claude-sonnet-5", "claude-opus-4-8", "claude-opus-4-7",
        "claude-mythos-preview", "claude-opus-4-6", "claude-sonnet-4-6", "claude-opus-4-5"),
    "computer_20250124": ("claude-haiku-4-5",),
}
# The same page: the beta tool versions need their beta flag; the toolset is GA.
BETA = {"computer_20251124": "computer-use-2025-11-24",
        "computer_20250124": "computer-use-2025-01-24"}
# https://platform.claude.com/docs/en/agents-and-tools/tool-use/text-editor-tool:
# text_editor_20250124 (str_replace_editor) is Claude Sonnet 3.7's, which is retired.
RETIRED_TOOLS = ("text_editor_20250124",)


def refusal(body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
    """The API's answer to a request it refuses (see the module doc), else ``None``."""
    model = str(body.get("model"))
    if model not in MODELS:
        return 404, f"model: {model}"
    betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()]
    # https://platform.claude.com/docs/en/api/messages (and /api/beta/messages with a beta
    # header): the request body's fields; an unknown one is refused, not ignored.
    shape = violation(body, (beta if betas else ga).MessageCreateParamsNonStreaming)
    if shape:
        return 400, _in_anthropic_words(*shape)
    for rule in (_tool_versions, _tool_pairs):
        found = rule(body, model, betas)
        if found:
            return 400, found
    return None


def _in_anthropic_words(code: str, param: str, message: str) -> str:
    """A request-type violation as the Messages API words it (``messages.1.content.0.x:
    Extra inputs are not permitted``)."""
    where = re.sub(r"\[(\d+)\]", r".\1", param)
    what = {"unknown_parameter": "Extra inputs are not permitted",
            "missing_required_parameter": "Field required"}.get(code, message)
    return f"{where}: {what}"


def _family(model: str) -> str:
    """A dated id's family (claude-haiku-4-5-20251001: claude-haiku-4-5)."""
    families = {f for models in COMPUTER.values() for f in models}
    return max((f for f in families if model == f or model.startswith(f + "-2")), key=len,
               default=model)


def _tool_versions(body: dict[str, Any], model: str, betas: list[str]) -> str | None:
    family = _family(model)
    for index, tool in enumerate(body.get("tools") or []):
        kind = tool.get("type")
        if kind in COMPUTER and family not in COMPUTER[kind]:
            takes = [k for k, models in COMPUTER.items() if family in models]
            return (f"tools.{index}: '{kind}' is not supported on {model}; this model "
                    f"supports {', '.join(takes) or 'no computer use tool'}")
        if kind in BETA and BETA[kind] not in betas:
            return (f"tools.{index}: '{kind}' requires the beta header "
                    f"'anthropic-beta: {BETA[kind]}'")
        if kind in RETIRED_TOOLS:
            return f"tools.{index}: '{kind}' is not supported on {model}"
    return None


def _tool_pairs(body: dict[str, Any], model: str, betas: list[str]) -> str | None:
    """https://platform.claude.com/docs/en/agents-and-tools/tool-use/handle-tool-calls: every
    ``tool_use`` is answered by a ``tool_result`` in the very next (user) message, and the
    results come first in its content; no result without its call."""
    messages = body.get("messages") or []
    for index, message in enumerate(messages):
        calls = [b["id"] for b in _blocks(message) if b.get("type") == "tool_use"]
        after = messages[index + 1] if index + 1 < len(messages) else None
        if message.get("role") != "assistant" or not calls or after is None:
            continue  # a final assistant turn is a prefill: nothing to answer yet
        blocks = _blocks(after)
        leading = []
        for block in blocks:
            if block.get("type") != "tool_result":
                break
            leading.append(block["tool_use_id"])
        missing = [c for c in calls if c not in leading]
        if after.get("role") != "user" or missing:
            return (f"messages.{index}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {', '.join(missing or calls)}. Each `tool_use` "
                    "block must have a corresponding `tool_result` block in the next message.")
    for index, message in enumerate(messages):
        before = messages[index - 1] if index else {}
        calls = {b["id"] for b in _blocks(before) if b.get("type") == "tool_use"}
        for position, block in enumerate(_blocks(message)):
            if block.get("type") == "tool_result" and block["tool_use_id"] not in calls:
                return (f"messages.{index}.content.{position}: unexpected `tool_use_id` found "
                        f"in `tool_result` blocks: {block['tool_use_id']}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous "
                        "message.")
    return None


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []
