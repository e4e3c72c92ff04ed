"""Tools an environment serves over MCP: plain functions with hooks.

>>> @env.tool()
... def count_letter(text: str, letter: str) -> int:
...     '''Count occurrences of a letter in text.'''
...     return text.lower().count(letter.lower())
>>> @count_letter.before
... def no_empty(text: str = "", **_):
...     if not text:
...         raise ToolError("text is empty")

The docstring is the description the model sees and the type hints are the input schema (the
MCP SDK derives it). ``@tool.before`` hooks run in order before each call: they receive the
arguments as keywords, may return a dict that replaces them, and may raise
:class:`~hud.errors.ToolError` to block the call; the model then sees the message as a tool
error. ``@tool.after`` hooks receive the result first (then the arguments they ask for) and
may return a replacement. A hook or tool may be sync or async; sync tools run in a worker
thread.

Nothing here imports the MCP SDK: that happens when the environment starts serving.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hud.protocol.messages import Binding

if TYPE_CHECKING:
    from hud.environment import Environment

    from .server import ToolServer

PROTOCOL = "mcp/2025-11-25"
Hook = Callable[..., Any]


class Tool:
    """A function served as an MCP tool, with ``before`` and ``after`` hooks."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        title: str | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description if description is not None else inspect.getdoc(fn) or ""
        self.title = title
        self.hooks_before: list[Hook] = []
        self.hooks_after: list[Hook] = []
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def before(self, hook: Hook) -> Hook:
        """``@tool.before``: ``hook(**arguments)`` → None, or a dict of new arguments; raise
        :class:`~hud.errors.ToolError` to block the call."""
        self.hooks_before.append(hook)
        return hook

    def after(self, hook: Hook) -> Hook:
        """``@tool.after``: ``hook(result, **arguments)`` → None, or a new result."""
        self.hooks_after.append(hook)
        return hook

    async def __call__(self, **arguments: Any) -> Any:
        """Run the hooks and the function, as a call from a client would."""
        for hook in self.hooks_before:
            changed = await _invoke(hook, (), arguments)
            if changed is not None:
                arguments = dict(changed)
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**arguments)
        else:
            result = await asyncio.to_thread(functools.partial(self.fn, **arguments))
        for hook in self.hooks_after:
            changed = await _invoke(hook, (result,), arguments)
            if changed is not None:
                result = changed
        return result

    def signed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` (which forwards to this tool) dressed with the tool's name, description
        and signature, annotations resolved: what the SDK derives the schema from."""
        call.__name__ = self.name
        call.__doc__ = self.description
        call.__signature__ = inspect.signature(self.fn, eval_str=True)  # type: ignore[attr-defined]
        call.__annotations__ = typing.get_type_hints(self.fn)
        return call


async def _invoke(hook: Hook, positional: tuple[Any, ...], arguments: dict[str, Any]) -> Any:
    """Call ``hook`` with the arguments it accepts (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(hook).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        arguments = {k: v for k, v in arguments.items() if k in names}
    result = hook(*positional, **arguments)
    return await result if inspect.isawaitable(result) else result


class Toolbox:
    """An environment's tools, served as one MCP capability (``tools``) once it starts."""

    def __init__(self, env: Environment, name: str = "tools") -> None:
        self.env = env
        self.name = name
        self.tools: dict[str, Tool] = {}
        self.server: ToolServer | None = None
        env.initialize(self.start)
        env.shutdown(self.stop)
        env.branching[name] = self  # tools keep their state in this process: forks copy it

    def tool(self, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Tool]:
        def register(fn: Callable[..., Any]) -> Tool:
            return self.add(fn, name=name, **options)

        return register

    def add(self, tool: Callable[..., Any], **options: Any) -> Tool:
        """Serve ``tool``, a :class:`Tool` or a function (``name``, ``description``,
        ``title`` as for :class:`Tool`). A tool with the same name is replaced."""
        if not isinstance(tool, Tool):
            tool = Tool(tool, **{k: v for k, v in options.items() if v is not None})
        self.tools[tool.name] = tool
        if self.server is not None:
            self.server.add(tool)
        return tool

    async def start(self) -> None:
        # lazy: the MCP SDK and uvicorn load only when an environment serves its tools
        from .server import ToolServer

        self.server = ToolServer(self.env.name)
        for tool in self.tools.values():
            self.server.add(tool)
        await self.server.start()
        self.env.add_capability(Binding(name=self.name, protocol=PROTOCOL, url=self.server.url,
                                        params={"transport": "streamable-http"}))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.aclose()
            self.server = None

    async def rehome(self) -> None:
        """In a branch made by ``tasks.fork``: serve the tools anew, on the branch's loop
        (the copied server's sockets are the parent's); their state came with the copy."""
        await self.start()


_toolboxes: weakref.WeakKeyDictionary[Environment, Toolbox] = weakref.WeakKeyDictionary()


def toolbox(env: Environment) -> Toolbox:
    """The environment's :class:`Toolbox`, created (and its hooks registered) on first use."""
    box = _toolboxes.get(env)
    if box is None:
        box = _toolboxes[env] = Toolbox(env)
    return box


def declare_tool(env: Environment, name: str | None = None, /, **options: Any
                 ) -> Callable[[Callable[..., Any]], Tool]:
    """The ``hud.capabilities.env`` entry point ``tool`` (``@env.tool()``)."""
    return toolbox(env).tool(name, **options)


def declare_added_tool(env: Environment, tool: Callable[..., Any], /, **options: Any) -> Tool:
    """The ``hud.capabilities.env`` entry point ``add_tool`` (``env.add_tool(fn)``)."""
    return toolbox(env).add(tool, **options)
