"""``hud eval --otlp URL`` (and ``OTEL_EXPORTER_OTLP_ENDPOINT``): a real eval's runs arrive at
an OTLP/HTTP receiver on 127.0.0.1 as OpenTelemetry traces with the GenAI semantic
conventions: one ``invoke_agent`` span per run, a span per phase under it, and ``chat`` and
``execute_tool`` spans inside the phase they happened in, at the trace's own timestamps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from interchange_jobs import MODEL, hud, oracle_job, tool_job

from hud.eval.otel import traces_endpoint
from hud.eval.store import TraceStore

pytest.importorskip("opentelemetry.exporter.otlp.proto.http",
                    reason="the otel extra is not installed: pip install -e '.[otel]'")
from otlp_receiver import serve_otlp  # after the check: it needs opentelemetry-proto

NS = 1_000_000_000
SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2


@pytest.fixture(scope="module")
def tool_spans(tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    traces = tmp_path_factory.mktemp("otel") / "store"
    with serve_otlp() as receiver:
        summary = tool_job(traces, "--otlp", receiver.endpoint)
    assert set(receiver.paths) == {"/v1/traces"}
    return traces, summary, receiver.spans


def by_trace(spans: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [span for span in spans if span["trace_id"] == trace_id]


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [span for span in spans if span["name"] == name]


def test_each_run_is_one_trace_whose_id_is_the_hud_trace_id(
        tool_spans: tuple[Path, dict[str, Any], list[dict[str, Any]]]) -> None:
    _, summary, spans = tool_spans
    assert {span["trace_id"] for span in spans} == {run["trace_id"] for run in summary["runs"]}
    for run in summary["runs"]:
        mine = by_trace(spans, run["trace_id"])
        assert Counter(span["name"] for span in mine) == {
            "invoke_agent openai_compatible": 1, "environment": 1, "setup": 1, "agent": 1,
            "grade": 1, f"chat {MODEL}": 2, "execute_tool count_letter": 1}
        assert mine[0]["resource"]["service.name"] == "hud"


def test_the_run_span_carries_task_reward_status_and_usage(
        tool_spans: tuple[Path, dict[str, Any], list[dict[str, Any]]]) -> None:
    traces, summary, spans = tool_spans
    run = summary["runs"][0]
    (root,) = named(by_trace(spans, run["trace_id"]), "invoke_agent openai_compatible")
    assert root["parent_span_id"] is None and root["kind"] == SPAN_KIND_INTERNAL
    assert root["attributes"] == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "openai_compatible",
        "gen_ai.provider.name": "openai", "gen_ai.system": "openai",
        "gen_ai.request.model": MODEL, "hud.trace.id": run["trace_id"],
        "hud.status": "completed", "hud.attempt": 1, "hud.reward": 1.0,
        "hud.task.slug": run["slug"], "hud.task.env": "coding",
        "hud.task.template": "count_with_tools", "hud.task.env_version": "1.0.0",
        "hud.job.id": summary["job"], "hud.group.id": run["group_id"],
        "gen_ai.usage.input_tokens": 70, "gen_ai.usage.output_tokens": 10}
    with TraceStore(traces) as store:
        trace = store.trace(run["trace_id"])
    # the run's real times, to the nanosecond the SDK keeps
    assert abs(root["start"] - trace.started_at * NS) < 1000
    assert trace.ended_at is not None and abs(root["end"] - trace.ended_at * NS) < 1000


def test_phases_hold_the_model_and_tool_spans_at_their_recorded_times(
        tool_spans: tuple[Path, dict[str, Any], list[dict[str, Any]]]) -> None:
    traces, summary, spans = tool_spans
    run = summary["runs"][1]
    mine = by_trace(spans, run["trace_id"])
    (root,) = named(mine, "invoke_agent openai_compatible")
    phases = {name: named(mine, name)[0] for name in ("environment", "setup", "agent", "grade")}
    assert all(span["parent_span_id"] == root["span_id"] for span in phases.values())
    calls = named(mine, f"chat {MODEL}") + named(mine, "execute_tool count_letter")
    assert {span["parent_span_id"] for span in calls} == {phases["agent"]["span_id"]}
    agent = phases["agent"]
    assert all(agent["start"] <= span["start"] <= span["end"] <= agent["end"] for span in calls)
    with TraceStore(traces) as store:
        steps = store.trace(run["trace_id"]).steps
    model_steps = [step for step in steps if step.kind == "model"]
    chats = sorted(named(mine, f"chat {MODEL}"), key=lambda span: span["start"])
    for span, step in zip(chats, model_steps, strict=True):
        assert abs(span["end"] - step.time * NS) < 1000
        assert step.duration is not None
        assert abs(span["end"] - span["start"] - step.duration * NS) < 2000
    (tool,) = named(mine, "execute_tool count_letter")
    (result,) = [step for step in steps if step.kind == "tool_result"]
    assert abs(tool["end"] - result.time * NS) < 1000
    assert chats[0]["end"] <= tool["start"] and tool["end"] <= chats[1]["start"]


def test_model_and_tool_spans_follow_the_genai_conventions(
        tool_spans: tuple[Path, dict[str, Any], list[dict[str, Any]]]) -> None:
    _, summary, spans = tool_spans
    mine = by_trace(spans, summary["runs"][0]["trace_id"])
    first, second = sorted(named(mine, f"chat {MODEL}"), key=lambda span: span["start"])
    assert first["kind"] == SPAN_KIND_CLIENT
    common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
              "gen_ai.system": "openai", "gen_ai.request.model": MODEL,
              "gen_ai.request.temperature": 0.2}
    assert first["attributes"] == {**common, "gen_ai.response.finish_reasons": ["tool_calls"],
                                   "gen_ai.response.id": first["attributes"]["gen_ai.response.id"],
                                   "gen_ai.usage.input_tokens": 30,
                                   "gen_ai.usage.output_tokens": 7}
    assert first["attributes"]["gen_ai.response.id"].startswith("chatcmpl-")
    assert second["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert second["attributes"]["gen_ai.usage.input_tokens"] == 40
    (tool,) = named(mine, "execute_tool count_letter")
    assert tool["kind"] == SPAN_KIND_INTERNAL
    assert tool["attributes"] == {"gen_ai.operation.name": "execute_tool",
                                  "gen_ai.tool.name": "count_letter",
                                  "gen_ai.tool.type": "function",
                                  "gen_ai.tool.call.id": "call_count"}


def test_the_environment_variable_turns_export_on_for_the_oracle(tmp_path: Path) -> None:
    with serve_otlp() as receiver:
        summary = oracle_job(tmp_path / "store",
                             env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                  "OTEL_SERVICE_NAME": "letters"})
    spans = receiver.spans
    roots = named(spans, "invoke_agent oracle")
    assert sorted(root["trace_id"] for root in roots) == sorted(
        run["trace_id"] for run in summary["runs"])
    for root in roots:
        assert root["attributes"]["hud.reward"] == 1.0
        assert root["attributes"]["hud.status"] == "completed"
        assert root["attributes"]["hud.task.slug"].startswith("count_letter-")
        assert root["resource"]["service.name"] == "letters"
    # the oracle calls no model: phases only
    assert {span["name"] for span in spans} == {
        "invoke_agent oracle", "environment", "setup", "agent", "grade"}


def test_a_failed_run_is_an_error_span_naming_its_phase(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.py"
    tasks.write_text(
        "from hud import Environment\n"
        "env = Environment('broken')\n"
        "@env.template()\n"
        "async def fails():\n"
        "    raise RuntimeError('setup went wrong')\n"
        "    yield 'never'\n"
        "tasks = [fails()]\n")
    with serve_otlp() as receiver:
        done = hud("eval", str(tasks), "oracle", "--runtime", "inprocess", "--otlp",
                   receiver.endpoint + "/", traces=tmp_path / "store")
    assert done.returncode == 7, done.stderr
    (root,) = named(receiver.spans, "invoke_agent oracle")
    assert root["status"] == STATUS_ERROR
    assert root["attributes"]["hud.status"] == "error"
    assert root["attributes"]["hud.error.phase"] == "setup"
    assert root["attributes"]["error.type"]
    assert "hud.reward" not in root["attributes"]
    (setup,) = named(receiver.spans, "setup")
    assert setup["status"] == STATUS_ERROR


def test_without_an_endpoint_nothing_is_exported_or_imported(tmp_path: Path) -> None:
    with serve_otlp() as receiver:
        oracle_job(tmp_path / "store")
    assert receiver.spans == []
    done = hud("eval", "examples/letter_count/tasks.py", "nop", "--runtime", "inprocess",
               "--json", traces=tmp_path / "store2", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr
    assert "import time:" in done.stderr  # -X importtime: a line for every module imported
    assert "opentelemetry.sdk" not in done.stderr
    assert "opentelemetry.exporter" not in done.stderr


def test_the_endpoint_is_the_base_url_as_in_the_otlp_specification() -> None:
    assert traces_endpoint(None, {}) is None
    assert traces_endpoint("http://h:4318", {}) == "http://h:4318/v1/traces"
    assert traces_endpoint("http://h:4318/", {}) == "http://h:4318/v1/traces"
    assert traces_endpoint("http://h:4318/v1/traces", {}) == "http://h:4318/v1/traces"
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4318"}
    assert traces_endpoint(None, environ) == "http://e:4318/v1/traces"
    assert traces_endpoint("http://flag:1", environ) == "http://flag:1/v1/traces"
    assert traces_endpoint(None, {**environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
                                  "http://t:9/custom"}) == "http://t:9/custom"
