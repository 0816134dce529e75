"""The embedded default end to end, driven by the OpenTelemetry SDK's own OTLP exporters.

SDK exporter (gRPC or HTTP/protobuf, gzip or not) -> gateway subprocess -> memory bus -> file
sink. Every exported item must land in the sink stamped with ``tenant.id`` and
``correlation.id``, and SIGTERM must flush what was accepted and exit 0.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from grpc import Compression as GrpcCompression
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.gateway_process import GatewayProcess, running_gateway, sink_items
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TRANSPORTS = ["grpc", "grpc-gzip", "http", "http-gzip"]


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with running_gateway() as gw:
        yield gw


def _resource(service: str) -> Resource:
    # A forged tenant.id must not survive: the gateway owns that attribute.
    return Resource.create({"service.name": service, "tenant.id": "forged"})


# signal -> (gRPC exporter class, HTTP exporter class)
_EXPORTERS: dict[str, tuple[Any, Any]] = {
    "traces": (GrpcSpanExporter, HttpSpanExporter),
    "logs": (GrpcLogExporter, HttpLogExporter),
    "metrics": (GrpcMetricExporter, HttpMetricExporter),
}


def _exporter(gw: GatewayProcess, signal: str, transport: str) -> Any:
    """The SDK's own OTLP exporter for ``signal`` over ``transport`` (``grpc``/``http``[``-gzip``])."""
    grpc_cls, http_cls = _EXPORTERS[signal]
    gz = transport.endswith("gzip")
    if transport.startswith("grpc"):
        comp = GrpcCompression.Gzip if gz else GrpcCompression.NoCompression
        return grpc_cls(endpoint=gw.grpc_target, insecure=True, compression=comp, timeout=10)
    comp_h = HttpCompression.Gzip if gz else HttpCompression.NoCompression
    return http_cls(endpoint=f"{gw.http_url}/v1/{signal}", compression=comp_h, timeout=10)


def _landed(gw: GatewayProcess, signal: str, service: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(attrs, item) for attrs, item in sink_items(gw.read_sink("default", signal), signal)
            if attrs.get("service.name") == service]


def _wait_landed(gw: GatewayProcess, signal: str, service: str,
                 n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """At least ``n`` items of ``service`` in the file sink, within a deadline."""
    def enough() -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
        found = _landed(gw, signal, service)
        return found if len(found) >= n else None

    return wait_for(enough, within=15, what=f"{n} {signal} items of {service} in the file sink")


def _assert_stamped(found: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for attrs, _item in found:
        assert attrs["tenant.id"] == "default"
        assert attrs.get("correlation.id"), attrs


def export_spans(gw: GatewayProcess, transport: str, service: str, n: int) -> None:
    """Make ``n`` spans with the SDK and send them with the SDK's OTLP exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource(service))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}", attributes={"i": i}):
            pass
    provider.shutdown()
    exporter = _exporter(gw, "traces", transport)
    try:
        assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_land_in_file_sink(gateway: GatewayProcess, transport: str) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    export_spans(gateway, transport, service, 25)
    found = _wait_landed(gateway, "traces", service, 25)
    assert len(found) == 25
    assert sorted(item["name"] for _a, item in found) == sorted(f"op-{i}" for i in range(25))
    _assert_stamped(found)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_logs_land_in_file_sink(gateway: GatewayProcess, transport: str) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=_resource(service))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("e2e")
    for i in range(7):
        logger.emit(body=f"line {i}", severity_number=SeverityNumber.INFO, attributes={"i": i})
    provider.shutdown()
    exporter = _exporter(gateway, "logs", transport)
    try:
        assert exporter.export(memory.get_finished_logs()) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    found = _wait_landed(gateway, "logs", service, 7)
    assert sorted(item["body"]["stringValue"] for _a, item in found) == [f"line {i}" for i in range(7)]
    _assert_stamped(found)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_land_in_file_sink(gateway: GatewayProcess, transport: str) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=_resource(service), metric_readers=[reader])
    meter = provider.get_meter("e2e")
    meter.create_counter("orders").add(3, {"k": "v"})
    meter.create_histogram("latency", unit="s").record(0.25)
    meter.create_gauge("temperature").set(21.5)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    exporter = _exporter(gateway, "metrics", transport)
    try:
        assert exporter.export(data) == MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
    found = _wait_landed(gateway, "metrics", service, 3)
    assert sorted(item["name"] for _a, item in found) == ["latency", "orders", "temperature"]
    _assert_stamped(found)


def test_received_items_are_counted(gateway: GatewayProcess) -> None:
    before = gateway.metric("gateway_received_items_total", signal="traces", transport="http")
    export_spans(gateway, "http", f"svc-{uuid.uuid4().hex[:8]}", 4)
    after = gateway.metric("gateway_received_items_total", signal="traces", transport="http")
    assert after - before == 4


def test_sigterm_flushes_accepted_data_and_exits_zero() -> None:
    """With ``ack: accepted`` and a long batch age, data sits in the batcher when SIGTERM comes."""
    env = {"TG_ACK": "accepted", "TG_BATCH__MAX_AGE_MS": "60000"}
    gw = GatewayProcess(env)
    try:
        gw.start()
        service = f"svc-{uuid.uuid4().hex[:8]}"
        export_spans(gw, "grpc", service, 10)
        export_spans(gw, "http", service, 10)
        assert _landed(gw, "traces", service) == []  # still in the open batch
        assert gw.stop() == 0, gw.log()
        found = _landed(gw, "traces", service)
        assert len(found) == 20
        _assert_stamped(found)
    finally:
        gw.cleanup()


def test_sigterm_answers_durable_requests_in_flight() -> None:
    """ack: durable with a 60 s batch age: the export waits on its batch when SIGTERM comes; the
    shutdown flushes it, the exporter gets its success, and the spans are in the sink."""
    gw = GatewayProcess({"TG_BATCH__MAX_AGE_MS": "60000"})
    try:
        gw.start()
        service = f"svc-{uuid.uuid4().hex[:8]}"
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(export_spans, gw, "grpc", service, 5)
            wait_for(lambda: gw.metric("gateway_inflight_requests") == 1, within=15,
                     what="the export waiting on its batch")
            assert gw.stop() == 0, gw.log()
            pending.result(timeout=15)  # export_spans asserts SUCCESS
        assert len(_landed(gw, "traces", service)) == 5
    finally:
        gw.cleanup()
