"""``hud export JOB``: training JSONL that Hugging Face ``datasets`` loads as it is (one Arrow
schema for every row, whatever each run did) and that TRL's own dataset checks and chat
template step accept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
import typer
from hud.harnesses import ToolSpec
from test_store import count, make_run
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast
from trl.data_utils import is_conversational, maybe_apply_chat_template
from typer.testing import CliRunner

from hud.cli.traces import register
from hud.eval.job import Job, group_relative
from hud.eval.store import TraceStore
from hud.protocol.messages import TextBlock

PIXEL_B64 = "iVBORw0KGgo="


def varied_job(store: TraceStore) -> Job:
    """Runs that differ in every way a row could: prompt as text or blocks with an image,
    tool calls or none, tools offered or none, sampled tokens or none, args of other types,
    subscores or none, integer or float temperature."""
    job = Job("varied", group=2, agent="scripted", model="tiny-1")
    store.begin_job(job)
    plain = make_run(job, count(word="kiwi", letter="i"), "g1", reward=1.0)
    plain.set_agent_settings(temperature=0, max_tokens=64)
    plain.set_tools([ToolSpec("bash", "Run a command.", {
        "type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]})])
    with_tokens = make_run(job, count(word="kiwi", letter="i"), "g1", reward=0.0)
    with_tokens.set_agent_settings(temperature=0.7, top_p=0.9, seed=3, extra_body={"k": 1})
    with_tokens.trace.steps[-2].data.update(  # the final model turn sampled "3"
        token_ids=[18], tokens=["3"], token_logprobs=[-0.25])
    with_tokens.set_tools([ToolSpec("add", "Add.", {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "number", "minimum": 0}}})])
    blocks = make_run(job, count(), "g2", reward=0.5,
                      prompt=[TextBlock(text="What is shown?")])
    blocks.trace.steps[0].data["prompt"].append(
        {"type": "image", "data": PIXEL_B64, "mime_type": "image/png"})
    blocks.trace.subscores = []
    for run in (plain, with_tokens, blocks):
        store.save_run(run)
    store.end_job(job)
    return job


def export_file(root: Path, job_id: str, path: Path) -> Path:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["export", job_id, "--trace-dir", str(root),
                                      "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Job, Path]:
    with TraceStore(tmp_path / "traces") as store:
        job = varied_job(store)
    return job, export_file(tmp_path / "traces", job.id, tmp_path / "export.jsonl")


def load(path: Path) -> datasets.Dataset:
    # keep_in_memory: nothing written to ~/.cache beside the test's own files
    return datasets.load_dataset("json", data_files=str(path), split="train",
                                 keep_in_memory=True, cache_dir=str(path.parent / "hf"))


def test_datasets_loads_the_export_as_it_is(exported: tuple[Job, Path]) -> None:
    job, path = exported
    table = load(path)
    assert table.num_rows == 3
    assert set(table.column_names) == {
        "trace_id", "job_id", "group_id", "task", "agent", "model", "sampling", "settings",
        "tools", "messages", "reward", "subscores", "advantage", "prefix_id", "branch_step"}
    rows = {row["trace_id"]: row for row in table}
    assert {(row["prefix_id"], row["branch_step"]) for row in table} == {(None, None)}  # no fork
    plain, with_tokens, blocks = (rows[run.trace_id] for run in job.runs)
    assert plain["task"] == {"env": "letters", "slug": job.runs[0].task.slug, "id": "count",
                             "args": '{"word":"kiwi","letter":"i"}'}
    assert (plain["agent"], plain["model"]) == ("scripted", "tiny-1")
    assert plain["sampling"] == {"temperature": 0.0, "top_p": None, "max_tokens": 64,
                                 "seed": None}
    assert with_tokens["sampling"] == {"temperature": 0.7, "top_p": 0.9, "max_tokens": None,
                                       "seed": 3}
    assert json.loads(with_tokens["settings"])["extra_body"] == {"k": 1}
    (tool,) = plain["tools"]
    assert tool["function"]["name"] == "bash"
    assert json.loads(tool["function"]["parameters"])["required"] == ["cmd"]
    assert blocks["tools"] == []
    # Group-relative advantages, as the job's helper computes them.
    assert [plain["advantage"], with_tokens["advantage"]] == pytest.approx(
        group_relative([1.0, 0.0], normalize_std=True))
    assert blocks["advantage"] == 0.0 and blocks["subscores"] == []
    assert plain["subscores"] == [{"name": "exact", "score": 1.0, "weight": 1.0}]
    # Content is always a list of typed parts; the image is a data URL.
    assert blocks["messages"][0]["content"] == [
        {"type": "text", "text": "What is shown?", "image": None},
        {"type": "image", "text": None, "image": f"data:image/png;base64,{PIXEL_B64}"}]
    call = plain["messages"][1]["tool_calls"][0]
    assert call["function"] == {"name": "bash", "arguments": '{"cmd":"echo 3"}'}
    result = plain["messages"][2]
    assert (result["role"], result["tool_call_id"], result["name"]) == ("tool", "call_1", "bash")
    final = with_tokens["messages"][-1]
    assert (final["token_ids"], final["tokens"], final["logprobs"]) == ([18], ["3"], [-0.25])
    assert plain["messages"][-1]["token_ids"] is None


def test_every_row_has_one_schema_whatever_the_run_did(exported: tuple[Job, Path]) -> None:
    # What Arrow needs: at each place in a row, one type (or null), and dicts with one set
    # of keys, across all rows and all list items.
    _, path = exported
    seen: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        walk(json.loads(line), "$", seen)
    mixed = {place: kinds for place, kinds in seen.items() if len(kinds - {"null"}) > 1}
    assert not mixed
    assert seen["$.messages[].content"] == {"list"}
    assert seen["$.messages[].content[].type"] == {"str"}


def walk(value: Any, place: str, seen: dict[str, set[str]]) -> None:
    """Record the type found at each place (dict keys included, as a type of their own)."""
    if isinstance(value, dict):
        seen.setdefault(place, set()).add("dict:" + ",".join(sorted(value)))
        for key, item in value.items():
            walk(item, f"{place}.{key}", seen)
        return
    kind = {bool: "bool", int: "number", float: "number", str: "str", list: "list",
            type(None): "null"}[type(value)]
    seen.setdefault(place, set()).add(kind)
    for item in value if isinstance(value, list) else []:
        walk(item, place + "[]", seen)


# A chat template in the multimodal convention (content as typed parts), as transformers
# renders it; the tokenizer is built here, so nothing is downloaded.
TEMPLATE = (
    "{% for tool in tools or [] %}<tool>{{ tool.function.name }}</tool>{% endfor %}"
    "{% for m in messages %}<|{{ m.role }}|>"
    "{% for part in m.content %}{% if part.type == 'text' %}{{ part.text }}{% endif %}"
    "{% endfor %}{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}"
    "{{ c.function.arguments }}</call>{% endfor %}<|end|>{% endfor %}")


def tokenizer() -> PreTrainedTokenizerFast:
    words = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=words, chat_template=TEMPLATE)


def test_text_only_rows_pass_trls_dataset_checks(exported: tuple[Job, Path]) -> None:
    job, path = exported
    table = load(path)
    text_only = table.filter(lambda row: all(
        part["type"] == "text" for m in row["messages"] for part in m["content"]))
    assert text_only.num_rows == 2  # the image prompt is left out
    for row in text_only:
        assert is_conversational(row)
        rendered = maybe_apply_chat_template(row, tokenizer(), tools=row["tools"])
        slug = job.runs[0].task.slug
        assert rendered["text"].startswith(f"<tool>{row['tools'][0]['function']['name']}"
                                           f"</tool><|user|>Count in {slug}<|end|>")
        assert '<call>bash{"cmd":"echo 3"}</call>' in rendered["text"]
        assert rendered["text"].endswith("<|tool|>3<|end|><|assistant|>3<|end|>")

