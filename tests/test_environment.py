"""The authoring API: templates mint task rows, arguments are checked, hooks run in order."""

from __future__ import annotations

import pytest

from hud import Environment, Task
from hud.protocol.errors import InvalidParams
from hud.protocol.messages import Binding

pytestmark = pytest.mark.anyio


def letter_env() -> tuple[Environment, object]:
    env = Environment("letters", version="1.2.3")

    @env.template()
    async def count(word: str = "strawberry", letter: str = "r", times: int = 1):
        """Count letters.

        A longer explanation that is not part of the description.
        """
        answer = yield f"{word}/{letter}"
        yield 1.0 if answer else 0.0

    return env, count


def test_calling_a_template_mints_a_task_without_running_it() -> None:
    _, count = letter_env()
    task = count(word="banana", letter="a")
    assert isinstance(task, Task)
    assert (task.env, task.id) == ("letters", "count")
    assert task.args == {"word": "banana", "letter": "a", "times": 1}
    assert task.slug.startswith("count-") and len(task.slug) == len("count-") + 8
    assert task.to_dict() == {"env": "letters", "id": "count", "args": task.args,
                              "slug": task.slug}


def test_defaults_are_applied_so_equal_tasks_have_equal_slugs() -> None:
    _, count = letter_env()
    assert count().slug == count(word="strawberry").slug == count("strawberry", "r").slug
    assert count().slug != count(word="kiwi").slug
    assert count.task(slug="custom", word="kiwi").slug == "custom"


def test_invalid_arguments_fail_at_mint_time() -> None:
    _, count = letter_env()
    with pytest.raises(InvalidParams, match="argument 'times' must be int, not str") as bad:
        count(times="many")
    assert bad.value.data == {"path": "$.params.args.times"}
    with pytest.raises(InvalidParams, match="colour"):
        count(colour="red")
    with pytest.raises(InvalidParams):
        count("a", "b", 1, "too many")


def test_description_defaults_to_the_docstring_summary() -> None:
    _, count = letter_env()
    info = count.info()
    assert info.description == "Count letters."
    assert info.args.get("required", []) == []  # every argument has a default
    assert set(info.args["properties"]) == {"word", "letter", "times"}
    assert info.args["properties"]["times"] == {"type": "integer", "default": 1}


def test_required_arguments_and_complex_types_in_schema() -> None:
    env = Environment("typed")

    @env.template(description="Pick items.")
    async def pick(items: list[str], limit: int | None = None, weights: dict[str, float] = {}):  # noqa: B006
        yield "pick"
        yield 1.0

    schema = pick.info().args
    assert schema["required"] == ["items"]
    assert schema["properties"]["items"] == {"type": "array", "items": {"type": "string"}}
    with pytest.raises(InvalidParams):
        pick()
    assert pick(items=["a"]).args == {"items": ["a"], "limit": None, "weights": {}}


def test_template_must_be_an_async_generator_and_ids_unique() -> None:
    env = Environment("strict")
    with pytest.raises(TypeError, match="async generator"):

        @env.template()
        async def not_a_generator():
            return "prompt"

    @env.template(id="one")
    async def first():
        yield "p"
        yield 1.0

    with pytest.raises(ValueError, match="already has a template 'one'"):

        @env.template(id="one")
        async def second():
            yield "p"
            yield 1.0


def test_scenario_is_the_older_spelling_of_template() -> None:
    env = Environment("old-style")

    @env.scenario("count")
    async def count_letters(word: str, letter: str):
        answer = yield f"How many '{letter}' in '{word}'?"
        yield 1.0 if answer == str(word.count(letter)) else 0.0

    assert list(env.templates) == ["count"] and env.tasks is env.templates
    assert count_letters.task(word="banana", letter="a").id == "count"


def test_capabilities_are_declared_and_replaced_by_name() -> None:
    env = Environment("caps", capabilities=[Binding(name="shell", protocol="ssh/2",
                                                    url="ssh://127.0.0.1:2222")])
    env.add_capability("shell", "ssh/2", "ssh://127.0.0.1:2223", {"user": "agent"})
    env.add_capability(Binding(name="screen", protocol="rfb/3.8", url="rfb://127.0.0.1:5900"))
    assert [(b.name, b.url) for b in env.capabilities] == [
        ("shell", "ssh://127.0.0.1:2223"), ("screen", "rfb://127.0.0.1:5900")]
    with pytest.raises(KeyError, match="declared: screen, shell"):
        env.capability("browser")
    with pytest.raises(ValueError):
        env.add_capability("x", "tcp/1", "")


async def test_hooks_run_in_order_and_shutdown_in_reverse() -> None:
    env = Environment("hooks")
    calls: list[str] = []
    env.initialize(lambda: calls.append("init-1"))

    @env.initialize
    async def second() -> None:
        calls.append("init-2")

    @env.shutdown
    async def stop_first() -> None:
        calls.append("stop-1")

    @env.shutdown
    def stop_second() -> None:
        calls.append("stop-2")
        raise RuntimeError("a failing hook is logged, the rest still run")

    await env.start()
    await env.start()  # idempotent
    await env.stop()
    assert calls == ["init-1", "init-2", "stop-2", "stop-1"]
