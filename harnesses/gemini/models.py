"""Which Gemini model gets which computer-use tool: the whole mapping as data, one row per
model family, read by :func:`spec_for`.

Sources (each row's ``doc``): the computer-use guide,
https://ai.google.dev/gemini-api/docs/computer-use (models, environments, supported actions),
and Google's reference loop, https://github.com/google-gemini/computer-use-preview
(``agent.py``: the legacy and current predefined function sets, and which models use which).

A row says which predefined function set the model calls (:data:`FUNCTION_SETS`), which
environments its ``computer_use`` tool accepts (none: the model has no computer use), and
whether every request must carry that tool (the computer-use preview model refuses any
request without it). An unknown model gets the newest row's spec and a warning naming this
table; ``--config tool_version=...`` picks a function set by name over the row's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ..provider import check_choice

log = logging.getLogger(__name__)

TABLE = "hud.harnesses.gemini.models.MODELS"
DOC = "https://ai.google.dev/gemini-api/docs/computer-use"

# The predefined functions each generation of computer-use models calls, by tool version.
FUNCTION_SETS: dict[str, tuple[str, ...]] = {
    # gemini-2.5-computer-use-preview-10-2025, gemini-3-flash-preview, gemini-3.1-pro-preview
    "2025-10": ("open_web_browser", "wait_5_seconds", "go_back", "go_forward", "search",
                "navigate", "click_at", "hover_at", "type_text_at", "key_combination",
                "scroll_document", "scroll_at", "drag_and_drop"),
    # gemini-3.5-flash and later: twenty actions, each call may carry an ``intent``
    "2026-06": ("click", "double_click", "triple_click", "middle_click", "right_click",
                "mouse_down", "mouse_up", "move", "type", "drag_and_drop", "wait",
                "press_key", "key_down", "key_up", "hotkey", "take_screenshot", "scroll",
                "go_back", "navigate", "go_forward"),
}
BROWSER, DESKTOP = "ENVIRONMENT_BROWSER", "ENVIRONMENT_DESKTOP"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model family's computer-use tool: ``prefix`` matches model names (the longest
    matching prefix wins); ``tool_version`` names its :data:`FUNCTION_SETS` entry."""

    prefix: str
    tool_version: str | None
    environments: tuple[str, ...]
    requires_computer_use: bool = False

    @property
    def functions(self) -> tuple[str, ...]:
        return FUNCTION_SETS[self.tool_version] if self.tool_version else ()


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("gemini-2.5-computer-use-preview", "2025-10", (BROWSER,),
              requires_computer_use=True),
    ModelSpec("gemini-3-flash", "2025-10", (BROWSER,)),
    ModelSpec("gemini-3-pro", "2025-10", (BROWSER,)),
    ModelSpec("gemini-3.1-pro", "2025-10", (BROWSER,)),
    ModelSpec("gemini-3.5-flash", "2026-06", (BROWSER, DESKTOP)),
    # the 2.x general models have no computer use: function declarations only
    ModelSpec("gemini-2.5-pro", None, ()),
    ModelSpec("gemini-2.5-flash", None, ()),
    ModelSpec("gemini-2.0-flash", None, ()),
)
NEWEST = next(row for row in MODELS if row.prefix == "gemini-3.5-flash")  # the newest family


def spec_for(model: str, tool_version: str | None = None) -> ModelSpec:
    """The row for ``model`` (``models/`` prefix ignored), with ``tool_version`` over its
    function set; an unknown model gets the newest spec and a warning naming the table."""
    name = model.removeprefix("models/")
    rows = [row for row in MODELS if name.startswith(row.prefix)]
    if rows:
        spec = max(rows, key=lambda row: len(row.prefix))
    else:
        log.warning("gemini: model %r is not in %s; using the newest spec (%s: tool version "
                    "%s, environments %s)", model, TABLE, NEWEST.prefix, NEWEST.tool_version,
                    ", ".join(NEWEST.environments))
        spec = NEWEST
    if tool_version is None:
        return spec
    check_choice("gemini", "tool_version", tool_version, tuple(FUNCTION_SETS))
    return replace(spec, tool_version=tool_version,
                   environments=spec.environments or NEWEST.environments)
