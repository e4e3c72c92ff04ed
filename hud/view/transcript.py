"""A stored trace document as the run page shows it: transcript entries, the timing waterfall
and the workspace edits. Pure functions of the document; text is cut here (views truncate,
the store never does)."""

from __future__ import annotations

import difflib
import json
from typing import Any

TEXT_LIMIT = 4000
"""Characters of one text shown before it is cut (the raw JSON has all of it)."""

_EDIT_KEYS = ("old_str", "new_str", "file_text")
_WIRE = ("request", "response")  # a model call's provider-side detail: shown folded


def text(value: Any, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    """``{"text", "cut"}``: ``value`` as text (JSON when not a string), cut at ``limit``."""
    shown = value if isinstance(value, str) else json.dumps(value, default=repr)
    if len(shown) > 80 and not isinstance(value, str):  # long JSON reads better indented
        shown = json.dumps(value, indent=1, default=repr)
    cut = max(len(shown) - limit, 0)
    return {"text": shown[:limit] if cut else shown, "cut": cut}


def entries(document: dict[str, Any], trace_id: str) -> list[dict[str, Any]]:
    """One entry per step: ``kind``, ``offset`` (seconds since the run began), ``duration``,
    ``parts`` (text and images, in order), ``calls`` (a model turn's tool calls), ``usage``,
    ``wire`` (a model call's request summary and response), ``fields`` (other data as short
    texts) and ``files`` (the step's own files, by URL)."""
    start = document.get("started_at") or 0.0
    out = []
    for step in document.get("steps", []):
        data = dict(step.get("data") or {})
        entry: dict[str, Any] = {"kind": step.get("kind"), "index": step.get("index"),
                                 "offset": (step.get("time") or start) - start,
                                 "duration": step.get("duration"), "parts": [], "calls": []}
        for key in ("prompt", "content"):
            if key in data:
                entry["parts"] += parts(data.pop(key))
        for turn in data.pop("messages", None) or []:
            entry["parts"] += parts(turn.get("content") if isinstance(turn, dict) else turn)
        for call in data.pop("tool_calls", None) or []:
            entry["calls"].append({"id": call.get("id"), "name": call.get("name"),
                                   "arguments": text(_arguments(call.get("arguments")))})
        entry["is_error"] = bool(data.pop("is_error", False))
        usage = data.pop("usage", None)
        entry["usage"] = usage if isinstance(usage, dict) else {}
        entry["wire"] = {key: text(data.pop(key)) for key in _WIRE if key in data}
        entry["fields"] = {key: text(value, 600) for key, value in data.items()
                           if value not in (None, [], {})}
        entry["files"] = [{"name": name, "url": f"/runs/{trace_id}/files/{path}",
                           "image": path.lower().endswith((".png", ".jpg", ".jpeg", ".webp"))}
                          for name, path in (step.get("files") or {}).items()]
        out.append(entry)
    return out


def parts(content: Any) -> list[dict[str, Any]]:
    """Content (a string or typed blocks) as ``{"type": "text", ...}`` and
    ``{"type": "image", "src"}`` parts; a stored image is a URL, an inline one a data URL."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", **text(content)}]
    if not isinstance(content, list):
        return [{"type": "text", **text(content)}]
    out: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") in ("image", "base64"):
            out.append({"type": "image", "src": image_src(block)})
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            if block["text"]:  # a tool's empty text beside its screenshot: nothing to show
                out.append({"type": "text", **text(block["text"])})
        else:
            out.append({"type": "text", **text(block)})
    return out


def image_src(block: dict[str, Any]) -> str:
    stored = block.get("file")
    if isinstance(stored, str):
        return "/" + stored
    mime = block.get("mime_type") or block.get("media_type") or "image/png"
    return f"data:{mime};base64,{block.get('data', '')}"


def waterfall(document: dict[str, Any]) -> dict[str, Any]:
    """Bars for the run's phases and its timed steps: each ``{"label", "kind", "left",
    "width"}`` in percent of the run's span, and ``total`` (seconds)."""
    start = document.get("started_at") or 0.0
    steps = document.get("steps", [])
    end = document.get("ended_at") or max([s.get("time", start) for s in steps] + [start])
    total = max(end - start, 1e-6)
    bars = []
    for phase in document.get("phases", []):
        stop = phase.get("ended_at") or end
        bars.append(_bar(phase["phase"], "phase", phase["started_at"] - start,
                         stop - phase["started_at"], total))
    for step in steps:
        took = step.get("duration")
        if took:
            label = step["kind"] + (f" {step['data'].get('name')}"
                                    if step.get("data", {}).get("name") else "")
            bars.append(_bar(label, step["kind"], step["time"] - took - start, took, total))
    return {"total": total, "bars": bars}


def _bar(label: str, kind: str, offset: float, took: float, total: float) -> dict[str, Any]:
    left = min(max(offset / total * 100, 0.0), 100.0)
    return {"label": label, "kind": kind, "seconds": took, "left": left,
            "width": min(max(took / total * 100, 0.3), 100.0 - left)}


def edits(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The workspace edits the model's tool calls made, as diffs: a text editor's
    ``str_replace``/``create`` (``path``, ``old_str``, ``new_str``, ``file_text``) or a patch
    (``patch``/``diff``/``input`` text). Each ``{"path", "lines": [(sign, text)]}``."""
    out = []
    for step in document.get("steps", []):
        if step.get("kind") != "model":
            continue
        for call in step.get("data", {}).get("tool_calls") or []:
            diff = _diff(_arguments(call.get("arguments")))
            if diff is not None:
                out.append(diff)
    return out


def _diff(arguments: Any) -> dict[str, Any] | None:
    if not isinstance(arguments, dict):
        return None
    path = str(arguments.get("path") or arguments.get("file") or "")
    if any(key in arguments for key in _EDIT_KEYS):
        old = str(arguments.get("old_str") or "").splitlines()
        new = str(arguments.get("new_str") or arguments.get("file_text") or "").splitlines()
        lines = list(difflib.unified_diff(old, new, lineterm="", n=2))[2:]
        return {"path": path, "lines": [_line(line) for line in lines]}
    for key in ("patch", "diff", "input"):
        value = arguments.get(key)
        if isinstance(value, str) and ("\n+" in value or "\n-" in value):
            return {"path": path, "lines": [_line(line) for line in value.splitlines()]}
    return None


def _line(line: str) -> tuple[str, str]:
    sign = line[:1] if line[:1] in "+-@" else " "
    return sign, line


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
