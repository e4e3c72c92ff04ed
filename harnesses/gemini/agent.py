"""``gemini``: Google's Gemini API (``google-genai``) with Gemini's native tools.

Tools, by capability and model (the table in :mod:`.models`): ``cdp`` and ``rfb`` get native
computer use (the model's predefined function set; 0-999 grid coordinates converted to
pixels; environment ``ENVIRONMENT_BROWSER`` for a browser, ``ENVIRONMENT_DESKTOP`` for a
desktop on the models that accept it, else the browser environment with a warning; a
``switch_screen`` function with several screens; a screenshot in the first turn). The
computer-use preview model refuses any request without its tool, so it gets one on every
task, screen or not (without a screen its functions answer an error). ``ssh`` shells and
``mcp`` tools are function declarations (``bash``, ``read_file``, ``write_file``,
``edit_file``; qualified by capability with several shells). Finish reasons and safety
decisions: see :mod:`.outcomes`; each is recorded in the trace.

Settings (``--config key=value``): ``api_key`` (else ``$GEMINI_API_KEY``, else
``$GOOGLE_API_KEY``), ``base_url`` (else ``$GOOGLE_GEMINI_BASE_URL``), ``model``
(``gemini-2.5-computer-use-preview-10-2025``), ``tool_version`` (a function set of
:data:`.models.FUNCTION_SETS`, over the model's), ``safety`` (``acknowledge`` or ``stop``),
``max_steps``, ``system_prompt``, ``tool_timeout`` (120 s), ``agent_timeout``,
``keep_screenshots`` (3), ``display_width``/``display_height`` (1440 x 900, Google's
recommendation), ``excluded_functions`` (predefined functions to leave out), ``extra``
(generation config fields), and the retry policy (:mod:`..retry`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from ..computer import switch_screen
from ..provider import SAFETY_POLICIES, ProviderAgent, ProviderSettings, check_choice
from ..shell_tools import shell_tools
from ..toolbox import ToolBox
from ..workbench import Workbench
from . import wire
from .actions import computer_tools
from .dialect import GeminiDialect
from .models import BROWSER, DESKTOP, FUNCTION_SETS, TABLE, ModelSpec, spec_for

if TYPE_CHECKING:
    from hud.eval.run import Run

log = logging.getLogger(__name__)
DEFAULT_MODEL = "gemini-2.5-computer-use-preview-10-2025"


@dataclasses.dataclass(kw_only=True)
class Settings(ProviderSettings):
    model: str = DEFAULT_MODEL
    display_width: int = 1440
    display_height: int = 900
    excluded_functions: list[str] | None = None
    tool_version: str | None = None
    safety: str = "acknowledge"

    def __post_init__(self) -> None:
        check_choice("gemini", "safety", self.safety, SAFETY_POLICIES)
        if self.tool_version is not None:
            check_choice("gemini", "tool_version", self.tool_version, tuple(FUNCTION_SETS))


class GeminiAgent(ProviderAgent):
    """Gemini on its native tools; see the module doc."""

    name: ClassVar[str] = "gemini"
    settings_type = Settings
    key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    base_env = ("GOOGLE_GEMINI_BASE_URL",)
    settings: Settings

    def request_fields(self) -> frozenset[str]:
        from google.genai import types

        return frozenset(set(types.GenerateContentConfig.model_fields)
                         - {"system_instruction", "tools", "http_options"})

    def open_client(self, stack: contextlib.AsyncExitStack) -> Any:
        from google import genai
        from google.genai import types

        # attempts=1: the SDK never retries on its own (ours are bounded and recorded)
        options = types.HttpOptions(base_url=self.settings.base_url or None,
                                    retry_options=types.HttpRetryOptions(attempts=1))
        client = genai.Client(api_key=self.settings.api_key, http_options=options)
        stack.push_async_callback(client.aio.aclose)
        return client

    def start(self, run: Run, client: Any, bench: Workbench
              ) -> tuple[GeminiDialect, ToolBox, list[Any]]:
        settings = self.settings
        spec = spec_for(settings.model, settings.tool_version)
        toolbox, tools = gemini_tools(bench, spec, settings.excluded_functions)
        computer = next((t["computer_use"] for t in tools if "computer_use" in t), None)
        run.record("tools", model=settings.model, tool_version=spec.tool_version,
                   environment=computer["environment"] if computer else None,
                   functions=[tool.spec.name for tool in toolbox])
        system, contents = wire.prompt_contents(run.prompt, run.messages)
        system = "\n\n".join(s for s in (settings.system_prompt, system) if s) or None
        screen = bench.screens[0][1] if bench.screens and computer else None
        dialect = GeminiDialect(client, settings, tools, system, spec.functions, screen)
        return dialect, toolbox, contents


def gemini_tools(bench: Workbench, spec: ModelSpec, excluded: list[str] | None = None
                 ) -> tuple[ToolBox, list[dict[str, Any]]]:
    """The tools for ``bench`` on a model of ``spec``: a box that runs them, and the
    request's ``tools``. A screen on a model without computer use is a ``ValueError``."""
    toolbox, tools, declared = ToolBox(), [], []
    for name, shell in bench.shells:
        for tool in shell_tools(shell, prefix=name if len(bench.shells) > 1 else None):
            declared.append(toolbox.add(tool).spec)
    if bench.screens and not spec.environments:
        raise ValueError(f"gemini: model family {spec.prefix!r} has no computer use, and this "
                         f"task has a screen; pick a computer-use model ({TABLE})")
    if bench.screens or spec.requires_computer_use:
        current = {"screen": bench.screens[0][1] if bench.screens else None}
        functions = tuple(f for f in spec.functions if f not in (excluded or []))
        for tool in computer_tools(current, functions):
            toolbox.add(tool)
        tools.append(wire.computer_use(environment(spec, current["screen"]), excluded))
        if len(bench.screens) > 1:
            declared.append(toolbox.add(switch_screen(current, dict(bench.screens))).spec)
    for tool in bench.functions:
        declared.append(toolbox.add(tool).spec)
    if declared:
        tools.append(wire.function_declarations(declared))
    return toolbox, tools


def environment(spec: ModelSpec, screen: Any) -> str:
    """The ``computer_use`` environment for ``screen`` (None: no screen) on ``spec``: a
    desktop's, where the model accepts it, else the browser's."""
    wanted = DESKTOP if screen is not None and screen.display.kind == "desktop" else BROWSER
    if wanted in spec.environments:
        return wanted
    log.warning("gemini: %s does not accept %s (%s); using %s", spec.prefix, wanted, TABLE,
                spec.environments[0])
    return spec.environments[0]
