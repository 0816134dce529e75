"""The embedded default end to end, driven by the OpenTelemetry SDK's own OTLP exporters.

SDK exporter (gRPC or HTTP/protobuf, gzip or not) -> gateway subprocess -> memory bus -> file
sink. Every exported item must land in the sink stamped with ``tenant.id`` and
``correlation.id``, and SIGTERM must flush what was accepted and exit 0.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
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
    spans = _spans(service, n)
    exporter = _exporter(gw, "traces", transport)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
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


@dataclass(frozen=True)
class _Export:
    """One SDK export of SIGTERM_SPANS spans of ``service``: when it was sent and answered
    (``time.monotonic()``), and whether the exporter reported SUCCESS."""

    service: str
    started: float
    answered: float
    ok: bool


SIGTERM_SPANS = 256  # spans per export in the SIGTERM tests
SIGTERM_CLIENTS = 6  # exporters sending at once, so requests are in the gateway when SIGTERM comes


def _export_through_sigterm(gw: GatewayProcess, *, durable: bool) -> tuple[list[_Export], float]:
    """SIGTERM_CLIENTS threads, each one service with its spans made once and one gRPC exporter
    (one connection), export back to back; once each was answered (and, for ``durable``, the
    gateway reports a request in flight, waiting on its batch), SIGTERM the gateway.

    The batcher flushes an idle (signal, tenant) at once (group commit), so only many requests at
    once keep data in the gateway: what it holds at SIGTERM is what the exports answered after it
    carried. Returns every export and when SIGTERM was sent; asserts the exit code is 0.
    """
    done = threading.Event()
    exports: list[_Export] = []

    def client(n: int) -> None:
        service = f"svc-{uuid.uuid4().hex[:8]}-{n}"
        spans = _spans(service, SIGTERM_SPANS)
        exporter = _exporter(gw, "traces", "grpc")
        try:
            while not done.is_set():
                started = time.monotonic()
                ok = exporter.export(spans) == SpanExportResult.SUCCESS
                exports.append(_Export(service, started, time.monotonic(), ok))
                if not ok:
                    return  # the gateway is going away: nothing more to send
        finally:
            exporter.shutdown()

    with ThreadPoolExecutor(SIGTERM_CLIENTS) as pool:
        clients = [pool.submit(client, n) for n in range(SIGTERM_CLIENTS)]
        try:
            wait_for(lambda: len({e.service for e in exports}) == SIGTERM_CLIENTS
                     and (not durable or gw.metric("gateway_inflight_requests") > 0),
                     within=30, interval=0.01, what="every client answered, exports in flight")
            sigterm_at = time.monotonic()
            assert gw.stop() == 0, gw.log()
        finally:
            done.set()
            for c in clients:
                c.result(timeout=60)
    return exports, sigterm_at


def _spans(service: str, n: int) -> tuple[ReadableSpan, ...]:
    """``n`` finished SDK spans of ``service``."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource(service))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}", attributes={"i": i}):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def _assert_every_success_landed(gw: GatewayProcess, exports: list[_Export]) -> None:
    """Per service: at least the spans of every export answered SUCCESS, at most those of every
    export sent (one refused while shutting down may still have been taken), whole exports only."""
    landed: dict[str, int] = {}
    for attrs, _item in sink_items(gw.read_sink("default", "traces"), "traces"):
        assert attrs["tenant.id"] == "default" and attrs.get("correlation.id"), attrs
        landed[attrs["service.name"]] = landed.get(attrs["service.name"], 0) + 1
    for service in {e.service for e in exports}:
        ok = sum(1 for e in exports if e.service == service and e.ok)
        sent = sum(1 for e in exports if e.service == service)
        n = landed.get(service, 0)
        assert ok * SIGTERM_SPANS <= n <= sent * SIGTERM_SPANS and n % SIGTERM_SPANS == 0, \
            f"{service}: {n} spans in the sink, {ok} exports answered SUCCESS of {sent} sent"


def test_sigterm_flushes_accepted_data_and_exits_zero() -> None:
    """``ack: accepted`` answers on enqueue: exports answered while SIGTERM is handled are data the
    gateway still held (batcher or memory bus). Exit 0, and every accepted span is in the sink."""
    gw = GatewayProcess({"TG_ACK": "accepted"})
    try:
        gw.start()
        exports, sigterm_at = _export_through_sigterm(gw, durable=False)
        held = [e for e in exports if e.ok and e.started < sigterm_at < e.answered]
        assert held, f"no export in flight at SIGTERM was accepted: {exports[-SIGTERM_CLIENTS:]}"
        _assert_every_success_landed(gw, exports)
    finally:
        gw.cleanup()


def test_sigterm_answers_durable_requests_in_flight() -> None:
    """ack: durable: exports in flight when SIGTERM comes are answered (SUCCESS once their batch
    is on the bus), the gateway exits 0, and every span answered SUCCESS is in the sink."""
    gw = GatewayProcess()
    try:
        gw.start()
        exports, sigterm_at = _export_through_sigterm(gw, durable=True)
        in_flight = [e for e in exports if e.started < sigterm_at < e.answered]
        assert in_flight, "no export was in flight at SIGTERM"
        assert any(e.ok for e in in_flight), f"none in flight at SIGTERM was answered SUCCESS: {in_flight}"
        _assert_every_success_landed(gw, exports)
    finally:
        gw.cleanup()
