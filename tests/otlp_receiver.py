"""An OTLP/HTTP trace receiver on 127.0.0.1 for the export tests: it decodes each
``POST /v1/traces`` body (protobuf ``ExportTraceServiceRequest``, gzip or not) with
``opentelemetry-proto`` and keeps the spans, flattened to plain dicts.

>>> with serve_otlp() as receiver:
...     ...  # export to receiver.endpoint
...     receiver.spans  # [{"name", "trace_id", "span_id", "parent_span_id", "kind",
...                     #   "start", "end", "attributes", "status", "resource"}]
"""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self.endpoint = ""

    def receive(self, path: str, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = [_span(span, _attributes(resource.resource.attributes))
                 for resource in request.resource_spans
                 for scope in resource.scope_spans for span in scope.spans]
        with self._lock:
            self.paths.append(path)
            self.spans.extend(spans)


def _span(span: Any, resource: dict[str, Any]) -> dict[str, Any]:
    return {"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
            "parent_span_id": span.parent_span_id.hex() or None, "kind": span.kind,
            "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
            "attributes": _attributes(span.attributes), "status": span.status.code,
            "resource": resource}


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, which) if which else None


@contextlib.contextmanager
def serve_otlp() -> Iterator[OtlpReceiver]:
    """A receiver listening on 127.0.0.1 (a free port) until the block ends;
    ``receiver.endpoint`` is its base URL (as ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or \
                    self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            receiver.receive(self.path, body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass  # the test reads the spans, not an access log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
