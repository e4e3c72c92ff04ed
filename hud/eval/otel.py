"""Runs as OpenTelemetry traces, with the GenAI semantic conventions, sent over OTLP/HTTP.

Off unless asked for (``hud eval --otlp URL``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): this module imports no OpenTelemetry package until
:func:`open_otlp_export` is called, so an eval without it pays nothing.

Each finished run becomes one trace, built after the fact from its :class:`Trace` with the
recorded timestamps (the OTel trace id is the hud trace id)::

    invoke_agent <agent>          the run: task slug, reward, status (ERROR when it failed)
      <phase>                     environment, setup, agent, grade, cleanup
        chat <model>              one model call (inside the phase it happened in)
        execute_tool <tool>       one tool call

Span attributes follow the GenAI conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``, ``gen_ai.tool.*``);
hud's own are under ``hud.*``. Message and tool contents are left out (the conventions make
them opt-in; the trace store has them). Spans go out from the SDK's batch processor thread;
closing the export flushes what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .trace import PhaseTiming, Step, Trace

logger = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_PROVIDERS = {"claude": "anthropic", "openai": "openai", "openai_compatible": "openai",
              "gemini": "gcp.gemini"}
"""The GenAI ``gen_ai.provider.name`` of each built-in harness; others give their own name."""
_SAMPLING = {"temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
             "max_tokens": "gen_ai.request.max_tokens", "seed": "gen_ai.request.seed"}
_USAGE = {"input_tokens": "gen_ai.usage.input_tokens",
          "output_tokens": "gen_ai.usage.output_tokens",
          "cached_input_tokens": "gen_ai.usage.cache_read.input_tokens",
          "cache_write_input_tokens": "gen_ai.usage.cache_creation.input_tokens",
          "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
          "cost_usd": "hud.cost_usd"}


def traces_endpoint(url: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Where spans go: ``url`` (an OTLP/HTTP base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``)
    plus ``/v1/traces``; else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is; else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus ``/v1/traces``; ``None``: export is off."""
    environ = os.environ if environ is None else environ
    if not url and environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = url or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not base:
        return None
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


@contextlib.contextmanager
def open_otlp_export(endpoint: str) -> Iterator[Callable[[Trace], None]]:
    """``with``: a function that exports a finished run's trace to ``endpoint`` (OTLP/HTTP,
    protobuf; headers from ``OTEL_EXPORTER_OTLP_HEADERS``); leaving flushes and shuts the
    exporter down. Raises ``ImportError`` without the ``otel`` extra."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .. import __version__

    ids = _trace_ids()
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "hud"),
                                  "service.version": __version__}), id_generator=ids)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("hud.eval", __version__)

    def export(trace: Trace) -> None:
        ids.next_trace_id = _hex_id(trace.id)
        try:
            _export(tracer, trace)
        except Exception:  # a run that cannot be exported must not stop the eval
            logger.warning("could not export trace %s over OTLP", trace.id, exc_info=True)
        finally:
            ids.next_trace_id = None

    try:
        yield export
    finally:
        provider.shutdown()  # flushes the spans still queued


def _trace_ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class TraceIds(RandomIdGenerator):
        """Random ids, except the trace id of the run being exported: its hud trace id."""

        next_trace_id: int | None = None

        def generate_trace_id(self) -> int:
            return self.next_trace_id or super().generate_trace_id()

    return TraceIds()


def _hex_id(trace_id: str) -> int | None:
    """A hud trace id (a uuid4's 32 hex digits) as a 128-bit OTel trace id, if it is one."""
    try:
        value = int(trace_id, 16)
    except ValueError:
        return None
    return value if len(trace_id) == 32 and value else None


def _export(tracer: Any, trace: Trace) -> None:
    from opentelemetry import trace as api
    from opentelemetry.trace import SpanKind, Status, StatusCode

    agent = trace.agent
    end = trace.ended_at or max([trace.started_at, *(s.time for s in trace.steps)])
    root = tracer.start_span(f"invoke_agent {agent.name if agent and agent.name else 'agent'}",
                             kind=SpanKind.INTERNAL, start_time=_ns(trace.started_at),
                             attributes=_run_attributes(trace))
    if trace.error is not None:
        root.set_status(Status(StatusCode.ERROR, f"{trace.error.type}: {trace.error.message}"))
    phases = []
    for timing in trace.phases:
        span = tracer.start_span(timing.phase, context=api.set_span_in_context(root),
                                 start_time=_ns(timing.started_at),
                                 attributes={"hud.phase": timing.phase})
        if trace.error is not None and trace.error.phase == timing.phase:
            span.set_status(Status(StatusCode.ERROR, trace.error.message))
        phases.append((timing, span))
    calls = _calls(trace.steps)
    for step in trace.steps:
        parent = _containing(phases, step.time, end) or root
        context = api.set_span_in_context(parent)
        if step.kind == "model":
            _model_span(tracer, context, trace, step)
        elif step.kind == "tool_result":
            _tool_span(tracer, context, step, calls)
    for timing, span in phases:
        span.end(end_time=_ns(timing.ended_at or end))
    root.end(end_time=_ns(end))


def _run_attributes(trace: Trace) -> dict[str, Any]:
    agent, task = trace.agent, trace.task
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent", "hud.trace.id": trace.id,
        "hud.status": trace.status, "hud.attempt": trace.attempt}
    if agent is not None and agent.name:
        attributes["gen_ai.agent.name"] = agent.name
        attributes.update(_provider(trace))
    if agent is not None and agent.model:
        attributes["gen_ai.request.model"] = agent.model
    if task is not None:
        attributes.update({"hud.task.slug": task.slug, "hud.task.env": task.env,
                           "hud.task.template": task.template})
        if task.env_version:
            attributes["hud.task.env_version"] = task.env_version
    for key, value in (("hud.job.id", trace.job_id), ("hud.group.id", trace.group_id),
                       ("hud.reward", trace.reward), ("hud.parent.id", trace.parent_id),
                       ("hud.branch_step", trace.branch_step)):
        if value is not None:
            attributes[key] = value
    if trace.error is not None:
        attributes.update({"error.type": trace.error.type, "hud.error.phase": trace.error.phase})
    attributes.update(_usage(trace.usage))
    return attributes


def _provider(trace: Trace) -> dict[str, str]:
    name = trace.agent.name if trace.agent else None
    if not name:
        return {}
    provider = _PROVIDERS.get(name, name)
    # gen_ai.system is the name before gen_ai.provider.name; many backends still read it.
    return {"gen_ai.provider.name": provider, "gen_ai.system": provider}


def _model_span(tracer: Any, context: Any, trace: Trace, step: Step) -> None:
    from opentelemetry.trace import SpanKind

    data = step.data
    model = (data.get("request") or {}).get("model") or (trace.agent and trace.agent.model)
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", **_provider(trace)}
    if model:
        attributes["gen_ai.request.model"] = model
    settings = trace.agent.settings if trace.agent else {}
    attributes.update({name: settings[key] for key, name in _SAMPLING.items()
                       if isinstance(settings.get(key), int | float)})
    if data.get("stop_reason"):
        attributes["gen_ai.response.finish_reasons"] = [str(data["stop_reason"])]
    response = data.get("response")
    if isinstance(response, dict) and isinstance(response.get("id"), str):
        attributes["gen_ai.response.id"] = response["id"]
    usage = dict(data.get("usage") or {})
    if "cost_usd" not in usage and isinstance(data.get("cost_usd"), int | float):
        usage["cost_usd"] = data["cost_usd"]
    attributes.update(_usage(usage))
    start, end = _interval(step)
    span = tracer.start_span(f"chat {model}" if model else "chat", context=context,
                             kind=SpanKind.CLIENT, start_time=start, attributes=attributes)
    span.end(end_time=end)


def _tool_span(tracer: Any, context: Any, step: Step, calls: dict[str, str]) -> None:
    from opentelemetry.trace import Status, StatusCode

    data = step.data
    name = str(data.get("name") or calls.get(str(data.get("tool_call_id")), "tool"))
    attributes: dict[str, Any] = {"gen_ai.operation.name": "execute_tool",
                                  "gen_ai.tool.name": name, "gen_ai.tool.type": "function"}
    if data.get("tool_call_id"):
        attributes["gen_ai.tool.call.id"] = str(data["tool_call_id"])
    start, end = _interval(step)
    span = tracer.start_span(f"execute_tool {name}", context=context, start_time=start,
                             attributes=attributes)
    if data.get("is_error"):
        span.set_attribute("error.type", "tool_error")
        span.set_status(Status(StatusCode.ERROR, "the tool reported an error"))
    span.end(end_time=end)


def _calls(steps: list[Step]) -> dict[str, str]:
    """Tool call id → tool name, from the model steps (for results that name no tool)."""
    return {str(call.get("id")): str(call.get("name")) for step in steps
            if step.kind == "model" for call in step.data.get("tool_calls") or []}


def _containing(phases: list[tuple[PhaseTiming, Any]], moment: float, end: float) -> Any:
    for timing, span in phases:
        if timing.started_at <= moment <= (timing.ended_at or end):
            return span
    return None


def _interval(step: Step) -> tuple[int, int]:
    """A step is recorded when its work ends; its duration says when the work began."""
    return _ns(step.time - (step.duration or 0.0)), _ns(step.time)


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {name: usage[key] for key, name in _USAGE.items()
            if isinstance(usage.get(key), int | float)}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
