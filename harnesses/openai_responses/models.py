"""Which native tools an OpenAI model takes: one row of ``models.json`` per model family.

The table is data, so a new model family is one new row (and one more case in its test). A
model matches the row with the longest prefix of its name; a model no row matches gets the
first row, the newest documented spec, and a warning that names the table.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..provider import check_choice

log = logging.getLogger(__name__)
TABLE = "harnesses/openai_responses/models.json"
COMPUTER_TYPES = ("computer", "computer_use_preview")


@dataclass(frozen=True, slots=True)
class ModelTools:
    """The tools of one model family: the computer tool's type (``tool_version``), whether
    the native ``shell`` and ``apply_patch`` tools exist, and the computer tool's
    ``environment`` value for each kind of screen (``browser``, ``desktop``)."""

    family: str
    computer: str
    shell: bool
    apply_patch: bool
    environments: dict[str, str]

    @property
    def truncation(self) -> str | None:
        """``auto`` for ``computer_use_preview``, which the API refuses without it."""
        return "auto" if self.computer == "computer_use_preview" else None


@functools.cache
def families() -> tuple[ModelTools, ...]:
    """The table's rows, newest first."""
    text = resources.files(__package__).joinpath("models.json").read_text()
    return tuple(ModelTools(family=row["prefix"], computer=row["computer"],
                            shell=row["shell"], apply_patch=row["apply_patch"],
                            environments=dict(row["environments"]))
                 for row in json.loads(text)["families"])


def model_tools(model: str, tool_version: str | None = None) -> ModelTools:
    """The tools for ``model``; ``tool_version`` (``computer`` or ``computer_use_preview``)
    overrides the computer tool's type. A ``ValueError`` names the types it takes."""
    rows = families()
    matches = [row for row in rows if model.startswith(row.family)]
    if matches:
        found = max(matches, key=lambda row: len(row.family))
    else:
        found = rows[0]
        log.warning("openai: model %r is not in %s; using the newest documented spec (%s's "
                    "tools). Add a row, or pass --config tool_version=...", model, TABLE,
                    found.family)
    if tool_version is None:
        return found
    check_choice("openai", "tool_version", tool_version, COMPUTER_TYPES)
    return ModelTools(family=found.family, computer=tool_version, shell=found.shell,
                      apply_patch=found.apply_patch, environments=found.environments)


def computer_tool(tools: ModelTools, screen_kind: str, size: tuple[int, int]
                  ) -> dict[str, Any] | None:
    """The computer tool for a screen of ``screen_kind``, or None when the family drives no
    such screen. The GA tool takes no fields; the preview one its display and environment."""
    environment = tools.environments.get(screen_kind)
    if environment is None:
        return None
    if tools.computer == "computer":
        return {"type": "computer"}
    return {"type": "computer_use_preview", "display_width": size[0],
            "display_height": size[1], "environment": environment}
