"""Every reward a template can yield either reaches the client intact or is a template error
of the grade phase that says what was wrong: never an internal error, a reply the client
must reject, or no reply at all."""

from __future__ import annotations

import asyncio
import datetime
import math

import pytest
from conftest import serving

from hud import Environment
from hud.client import open_client
from hud.graders import Grade, Score
from hud.protocol.errors import TemplateError

pytestmark = pytest.mark.anyio

BAD = {
    "huge_int": (10**400, "the reward must be a finite number, got an integer of 401 digits"),
    "inf": (math.inf, "the reward must be a finite number, got inf"),
    "bool": (True, "the reward must be a number, got bool"),  # a bool is no bare number
    "above_one": (1.5, "the reward must be in [0, 1], got 1.5"),
    "negative_int": (-1, "the reward must be in [0, 1], got -1"),
    "nan_subscore": ({"reward": 1.0, "subscores": {"tests": math.nan}},
                     "the score of subscore 'tests' must be a finite number, got nan"),
    "huge_subscore": ({"reward": 1.0, "subscores": [{"name": "t", "score": 10**400}]},
                      "the score of subscore 't' must be a finite number"),
    "subscore_above_one": ({"reward": 1.0, "subscores": {"tests": 2}},
                           "the score of subscore 'tests' must be in [0, 1], got 2"),
    "inf_weight": ({"reward": 1.0, "subscores": [{"name": "t", "score": 1, "weight": -math.inf}]},
                   "the weight of subscore 't' must be a finite number, got -inf"),
    "nameless_subscore": ({"reward": 1.0, "subscores": [{"score": 1}]},
                          "subscores[0] must be an object with a string 'name'"),
    "object_in_info": ({"reward": 1.0, "info": {"log": [1, object()]}},
                       "info['log'][1] is a object, which JSON cannot carry"),
    "nan_in_info": ({"reward": 1.0, "info": {"ratio": math.nan}},
                    "info['ratio'] is nan, which JSON cannot carry"),
    "int_key_in_info": ({"reward": 1.0, "info": {"runs": {3: "ok"}}},
                        "info['runs'] has a key of type int (3)"),
    "info_not_object": ({"reward": 1.0, "info": ["a"]}, "info must be an object, got list"),
}

env = Environment("rewards")


@env.template()
async def bad(kind: str):
    yield "prompt"
    yield BAD[kind][0]


@env.template()
async def good():
    yield "prompt"
    yield Grade(reward=0.75, subscores=[Score(name="slow", score=1.0, weight=-0.25)],
                info={"when": datetime.date(2026, 1, 2), "tags": ("a", "b")})


@pytest.mark.parametrize("kind", sorted(BAD))
async def test_bad_reward_is_a_template_error_of_the_grade_phase(kind: str) -> None:
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("bad", {"kind": kind})
        with pytest.raises(TemplateError) as caught:
            async with asyncio.timeout(10):  # before the fix, some got no reply at all
                await client.grade("")
        assert BAD[kind][1] in caught.value.message
        assert "invalid reward" in caught.value.message
        assert caught.value.data["phase"] == "grade"
        await client.start("good")  # the connection serves on
        assert (await client.grade("")).reward == 0.75


async def test_penalties_and_convertible_info_reach_the_client() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("good")
        result = await client.grade("")
    assert [(s.name, s.weight) for s in result.subscores] == [("slow", -0.25)]
    assert result.info == {"when": "2026-01-02", "tags": ["a", "b"]}
