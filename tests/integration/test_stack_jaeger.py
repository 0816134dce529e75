"""The Jaeger from ``stack/`` takes spans from the OpenTelemetry SDK's own OTLP/gRPC exporter
and serves them back from its query API: the path the Jaeger sink and the e2e tests rely on.
Also checks that the tools built with it (the collector-capable ``jaeger`` binary and
``telemetrygen``) are there and run."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests import stackenv
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _traces(service: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"service": service, "limit": 20})
    with urllib.request.urlopen(f"{stackenv.JAEGER_QUERY_URL}/api/traces?{query}", timeout=10) as resp:
        data: list[dict[str, Any]] = json.loads(resp.read())["data"] or []
        return data


def test_otlp_grpc_export_is_readable_from_query_api() -> None:
    stackenv.require("jaeger", "jaeger-query")
    service = f"stack-check-{uuid.uuid4().hex[:10]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service, "tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=stackenv.JAEGER_OTLP_GRPC, insecure=True, timeout=10)))
    tracer = provider.get_tracer("stack-check")
    with tracer.start_as_current_span("parent") as parent, tracer.start_as_current_span("child"):
        trace_id = f"{parent.get_span_context().trace_id:032x}"
    provider.shutdown()

    # The SDK exports the child before the parent, in two requests, and Jaeger's writer may
    # index them in different flushes: wait for the whole trace, not its first span.
    def _whole_trace() -> list[dict[str, Any]]:
        found = _traces(service)
        return found if sum(len(t["spans"]) for t in found) >= 2 else []

    traces = wait_for(_whole_trace, within=20, what=f"both spans of {service} in Jaeger")
    assert [t["traceID"] for t in traces] == [trace_id]
    assert sorted(s["operationName"] for s in traces[0]["spans"]) == ["child", "parent"]
    process = next(iter(traces[0]["processes"].values()))
    assert {"key": "tenant.id", "type": "string", "value": "acme"} in process["tags"]


def test_built_tools_run_and_telemetrygen_reaches_jaeger() -> None:
    jaeger = stackenv.require_binary(stackenv.JAEGER_BIN)
    telemetrygen = stackenv.require_binary(stackenv.TELEMETRYGEN_BIN)
    components = subprocess.run([str(jaeger), "components"], capture_output=True, text=True, timeout=60)
    assert components.returncode == 0, components.stderr
    for needed in ("otlp", "kafka", "batch"):
        assert needed in components.stdout
    stackenv.require("jaeger", "jaeger-query")
    service = f"stack-telemetrygen-{uuid.uuid4().hex[:10]}"
    sent = subprocess.run([str(telemetrygen), "traces", "--otlp-insecure", "--otlp-endpoint",
                           stackenv.JAEGER_OTLP_GRPC, "--traces", "3", "--service", service],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr[-2000:]
    wait_for(lambda: len(_traces(service)) == 3, within=20, what=f"3 telemetrygen traces of {service}")
