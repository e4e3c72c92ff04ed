"""The authoring API: ``Environment``, its task templates, lifecycle hooks and capabilities.

An environment is a declaration. Nothing runs until it is served (``hud serve``) or opened
in-process; calling a template only mints a :class:`Task` row.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from . import capability
from .arguments import AnswerType, Arguments
from .protocol.messages import Binding, PeerInfo, TaskRef, TemplateInfo
from .runner import TaskHook, TaskRunner

if TYPE_CHECKING:
    from .capabilities.cdp.browser import Browser
    from .capabilities.mcp.tools import Tool
    from .capabilities.rfb.desktop import Desktop
    from .capabilities.robot import RobotEndpoint
    from .capabilities.ssh.workspace import Workspace

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None] | None]
H = TypeVar("H", bound=Hook)
TemplateFunction = Callable[..., AsyncGenerator[Any, Any]]


@dataclass(frozen=True, slots=True)
class Task:
    """One runnable task row: an environment, a template id, validated arguments, a slug.

    ``args`` holds the JSON form of the arguments with defaults applied, so ``count()`` and
    ``count(word="strawberry")`` are the same task with the same slug.
    """

    env: str
    id: str
    args: dict[str, Any] = field(default_factory=dict)
    slug: str = ""
    template: Template | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "id": self.id, "args": self.args, "slug": self.slug}


def default_slug(template_id: str, args: dict[str, Any]) -> str:
    """``id`` alone without arguments; else ``id-<8 hex of the canonical JSON of args>``."""
    if not args:
        return template_id
    canonical = msgspec.json.encode(args, order="sorted")
    return f"{template_id}-{hashlib.sha1(canonical).hexdigest()[:8]}"


class Template:
    """A registered task template. Call it (or :meth:`task`) to mint a :class:`Task`."""

    def __init__(
        self,
        env: Environment,
        func: TemplateFunction,
        *,
        id: str | None = None,
        description: str | None = None,
        returns: Any = None,
        timeout: float | None = None,
        solution: Callable[..., Any] | None = None,
        agent_timeout: float | None = None,
    ) -> None:
        if not inspect.isasyncgenfunction(func):
            raise TypeError(
                f"@template needs an async generator function (`async def` with `yield`), "
                f"got {func!r}"
            )
        self.env = env
        self.func = func
        self.id = id or func.__name__
        self.description = description if description is not None else _summary(func)
        self.arguments = Arguments(func, self.id)
        self.answer = AnswerType(returns)
        self.timeout = timeout
        self.agent_timeout = agent_timeout
        self.solution_func = solution
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Task:
        return self.task(*args, **kwargs)

    def task(self, *args: Any, slug: str | None = None, **kwargs: Any) -> Task:
        """Mint a task row; arguments are checked against the type hints, defaults applied."""
        _, wire = self.arguments.validate(self.arguments.bind(args, kwargs))
        return Task(
            env=self.env.name,
            id=self.id,
            args=wire,
            slug=slug or default_slug(self.id, wire),
            template=self,
        )

    def solution(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Declare the reference solution: called with the task's arguments (sync or async),
        it performs the task inside the environment and returns the answer.

        Only the ``oracle`` harness and ``hud check`` use it, and only against a server started
        with solutions enabled: it reveals answers.
        """
        self.solution_func = func
        return func

    async def solve(self, args: dict[str, Any]) -> Any:
        kwargs, _ = self.arguments.validate(args)
        answer = self.solution_func(**kwargs) if self.solution_func else None
        return await answer if inspect.isawaitable(answer) else answer

    def info(self) -> TemplateInfo:
        return TemplateInfo(
            id=self.id,
            description=self.description,
            args=self.arguments.schema(self.id, self.description),
            answer=self.answer.schema(),
            has_solution=self.solution_func is not None,
        )

    def open(self, args: dict[str, Any]) -> tuple[TaskRunner, TaskRef]:
        """Validate wire arguments and create the generator (nothing of it runs yet)."""
        kwargs, wire = self.arguments.validate(args)
        runner = TaskRunner(self.id, self.func(**kwargs), self.env.task_hooks)
        return runner, TaskRef(template=self.id, args=wire)


def _summary(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


class Environment:
    """Where an agent acts: task templates, capabilities it exposes, lifecycle hooks.

    >>> env = Environment("letter-count")
    >>> @env.template()
    ... async def count(word: str = "strawberry", letter: str = "r"):
    ...     answer = yield f"How many {letter!r} in {word!r}? Just the number."
    ...     yield 1.0 if str(answer).strip() == str(word.count(letter)) else 0.0
    >>> count().args
    {'word': 'strawberry', 'letter': 'r'}
    """

    def __init__(
        self,
        name: str = "environment",
        *,
        version: str = "0.1.0",
        description: str = "",
        capabilities: list[Binding] | tuple[Binding, ...] = (),
    ) -> None:
        self.name = name
        self.version = version
        self.description = description
        self.templates: dict[str, Template] = {}
        self._capabilities: dict[str, Binding] = {}
        self._initializers: list[Hook] = []
        self._finalizers: list[Hook] = []
        self.task_hooks: list[TaskHook] = []
        self.branching: dict[str, Any] = {}
        """Capabilities a branch made by ``tasks.fork`` can take along, by name: each a
        :class:`hud.forks.Branchable`. A task of an environment with any other capability
        cannot be forked."""
        self.started = False
        for binding in capabilities:
            self.add_capability(binding)

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, templates={list(self.templates)})"

    # -- templates ------------------------------------------------------------------------

    def template(
        self,
        id: str | None = None,
        *,
        description: str | None = None,
        returns: Any = None,
        timeout: float | None = None,
        solution: Callable[..., Any] | None = None,
        agent_timeout: float | None = None,
    ) -> Callable[[TemplateFunction], Template]:
        """Register an async generator as a task template.

        The generator yields the prompt (a string, content blocks, chat messages, or
        ``{"prompt": ..., "bindings": ...}``), receives the answer (parsed into ``returns``
        when given), then yields the reward (a float in [0, 1], a dict with ``reward`` or
        ``score``, or an object with ``.reward``). ``timeout`` bounds each phase, overriding
        the server's per-call timeout. ``solution`` is the reference solution (see
        :meth:`Template.solution`). ``agent_timeout`` bounds the agent of each rollout (as a
        Harbor task's ``[agent] timeout_sec`` does): when it runs out, the agent is stopped
        and the rollout grades what it left (see :func:`hud.eval.rollout.rollout`).
        """

        def register(func: TemplateFunction) -> Template:
            tpl = Template(
                self, func, id=id, description=description, returns=returns, timeout=timeout,
                solution=solution, agent_timeout=agent_timeout,
            )
            if tpl.id in self.templates:
                raise ValueError(f"environment {self.name!r} already has a template {tpl.id!r}")
            self.templates[tpl.id] = tpl
            return tpl

        return register

    def scenario(
        self, id: str | None = None, **options: Any
    ) -> Callable[[TemplateFunction], Template]:
        """The older spelling of :meth:`template` (``@env.scenario("count")``)."""
        return self.template(id, **options)

    @property
    def tasks(self) -> dict[str, Template]:
        """Alias of :attr:`templates`."""
        return self.templates

    # -- capabilities ---------------------------------------------------------------------

    def add_capability(
        self,
        binding: Binding | str,
        protocol: str | None = None,
        url: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Binding:
        """Declare a capability: ``add_capability(Binding(...))`` or
        ``add_capability("shell", "ssh/2", "ssh://127.0.0.1:2222", {...})``.

        Only declared capabilities can be reached through the control port's tunnels.
        A capability with the same name is replaced.
        """
        if isinstance(binding, str):
            if not protocol or not url:
                raise ValueError("add_capability needs a protocol id and a URL")
            binding = Binding(name=binding, protocol=protocol, url=url, params=params or {})
        if not binding.url:
            raise ValueError(f"capability {binding.name!r} has no URL")
        if self.started:
            log.warning("capability %r added after start: clients connected before miss it",
                        binding.name)
        self._capabilities[binding.name] = binding
        return binding

    def remove_capability(self, name: str) -> None:
        self._capabilities.pop(name, None)

    @property
    def capabilities(self) -> list[Binding]:
        return list(self._capabilities.values())

    def capability(self, name: str) -> Binding:
        try:
            return self._capabilities[name]
        except KeyError:
            declared = ", ".join(sorted(self._capabilities)) or "none"
            raise KeyError(f"no capability {name!r} (declared: {declared})") from None

    def use(self, name: str, /, *args: Any, **options: Any) -> Any:
        """Declare capability plug-in ``name`` (an entry point of the group
        ``hud.capabilities.env``, built-in or installed by another package) with ``args`` and
        ``options``; returns what its declaration returns. The methods below are the
        friendly spelling of the built-in ones: ``env.workspace(root)`` is
        ``env.use("workspace", root)``. See :mod:`hud.capability`."""
        return capability.declare(self, name, *args, **options)

    def workspace(self, root: str | Any, **options: Any) -> Workspace:
        """Serve a sandboxed shell on ``root`` as an ``ssh/2`` capability (named ``shell``).

        Every task gets its own sandbox and copy-on-write view of ``root``, and its own
        credentials in the bindings of ``tasks.start``. Options and the grader-side API
        (``await ws.run(cmd)``) are in :class:`hud.capabilities.ssh.Workspace`.
        """
        declared: Workspace = self.use("workspace", root, **options)
        return declared

    def tool(self, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Tool]:
        """``@env.tool()``: serve a plain function as an MCP tool (capability ``tools``).

        Its docstring is the description and its type hints the input schema. The returned
        :class:`~hud.capabilities.mcp.Tool` takes ``@tool.before`` / ``@tool.after`` hooks.
        """
        declared: Callable[[Callable[..., Any]], Tool] = self.use("tool", name, **options)
        return declared

    def add_tool(self, tool: Callable[..., Any], **options: Any) -> Tool:
        """Serve ``tool`` (a :class:`~hud.capabilities.mcp.Tool` or a plain function) as an
        MCP tool; see :meth:`tool`."""
        declared: Tool = self.use("add_tool", tool, **options)
        return declared

    def browser(self, name: str = "browser", **options: Any) -> Browser:
        """Serve Chromium as a ``cdp/1.3`` capability: a fresh browser (and profile) per task,
        reached (through the tunnel, or at its own address) by Playwright's
        ``connect_over_cdp`` or any CDP client.

        Templates drive the task's browser with the returned object (``await
        browser.goto(url)``, ``await browser.evaluate(js)``); options are in
        :class:`hud.capabilities.cdp.Browser`.
        """
        declared: Browser = self.use("browser", name, **options)
        return declared

    def desktop(self, width: int = 1280, height: int = 800, *, name: str = "screen",
                **options: Any) -> Desktop:
        """Serve a virtual X display as an ``rfb/3.8`` (VNC) capability: a fresh display per
        task, with its own password in the bindings. Call it again, with another ``name``, for
        several displays. Templates start programs on it (``await desktop.launch([...])``);
        options are in :class:`hud.capabilities.rfb.Desktop`.
        """
        declared: Desktop = self.use("desktop", width, height, name=name, **options)
        return declared

    def gym(self, target: Any, **options: Any) -> RobotEndpoint:
        """Serve a Gymnasium environment (an id such as ``"CartPole-v1"``, a spec or a
        factory) as an ``openpi/0`` robot (capability ``robot``); spaces become the contract.

        Templates call ``episode = await robot.reset(seed=..., options=...)``, yield
        ``{"prompt": ..., "bindings": episode.bindings}``, then ``await episode.result()``.
        Options are in :func:`hud.capabilities.robot.gym.gym_endpoint`.
        """
        declared: RobotEndpoint = self.use("gym", target, **options)
        return declared

    def robot(self, factory: Callable[[], Any], *, contract: Any, **options: Any
              ) -> RobotEndpoint:
        """Serve any simulator or robot driver with Gymnasium's reset/step API that speaks
        ``contract`` directly, as an ``openpi/0`` robot; see :meth:`gym` and
        :func:`hud.capabilities.robot.endpoint.robot_endpoint`."""
        declared: RobotEndpoint = self.use("robot", factory, contract=contract, **options)
        return declared

    # -- lifecycle ------------------------------------------------------------------------

    def task_hook(self, func: TaskHook) -> TaskHook:
        """Wrap every task in ``func(scope)``, an async context manager factory.

        It is entered before the template's setup and exited once the task is over, however
        it ends; its value, ``{capability name: params}`` or None, joins the bindings that
        ``tasks.start`` returns. ``scope`` is the task's :class:`~hud.runner.TaskScope`.
        """
        self.task_hooks.append(func)
        return func

    def initialize(self, func: H) -> H:
        """Run ``func`` (sync or async, no arguments) once when the environment starts."""
        self._initializers.append(func)
        return func

    def shutdown(self, func: H) -> H:
        """Run ``func`` when the environment stops, in reverse order of registration."""
        self._finalizers.append(func)
        return func

    async def start(self) -> None:
        """Run the initialize hooks, in order. Idempotent until :meth:`stop`."""
        if self.started:
            return
        for hook in self._initializers:
            result = hook()
            if inspect.isawaitable(result):
                await result
        self.started = True

    async def stop(self) -> None:
        """Run the shutdown hooks in reverse order; a failing hook is logged, not raised."""
        if not self.started:
            return
        self.started = False
        for hook in reversed(self._finalizers):
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("shutdown hook %r failed", hook)

    def info(self) -> PeerInfo:
        return PeerInfo(name=self.name, version=self.version, description=self.description
                        or msgspec.UNSET)
