"""OTLP payloads made by the OpenTelemetry SDK itself, for feeding sinks in tests.

The bytes are what the SDK's OTLP exporters would send (the exporters' own encoders), with
the ``tenant.id``/``correlation.id`` resource attributes the gateway stamps, so sink tests run
on realistic input without a gateway in front.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from bus.contract import BusRecord
from otlp.signals import (
    ATTR_CORRELATION,
    ATTR_TENANT,
    HEADER_CORRELATION,
    HEADER_SIGNAL,
    HEADER_TENANT,
    Signal,
)

# The semantic conventions' advice for http.server.request.duration.
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DURATION_VALUES = (0.003, 0.02, 0.02, 0.2, 0.7, 3.0)
PAYLOAD_VALUES = (100, 200, 400, 800, 1600, 0)
# The scope of ``metrics_data``: every series it makes carries these as otel_scope_* labels.
SCOPE_NAME, SCOPE_VERSION = "sink-tests", "1.2.3"
SCOPE_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
SCOPE_ATTRIBUTES = {"test.suite": "sinks"}
# What ``exemplar_metrics_data`` records inside its span.
EXEMPLAR_DURATION = 0.02  # falls in the (0.01, 0.025] bucket
EXEMPLAR_SIZE = 512


def resource(tenant: str, service: str = "checkout", extra: Mapping[str, str] | None = None) -> Resource:
    return Resource.create({
        "service.name": service,
        "service.namespace": "shop",
        "service.instance.id": "pod-1",
        "deployment.environment": "test",
        ATTR_TENANT: tenant,
        ATTR_CORRELATION: uuid.uuid4().hex,
        **(extra or {}),
    })


def client_resource(service: str = "checkout", forged_tenant: str | None = None) -> Resource:
    """What a client sends: service attributes; the gateway adds tenant and correlation.

    ``forged_tenant`` sets a client-side ``tenant.id``, which the gateway must replace.
    """
    attrs = {"service.name": service, "service.namespace": "shop",
             "service.instance.id": "pod-1", "deployment.environment": "test"}
    if forged_tenant is not None:
        attrs[ATTR_TENANT] = forged_tenant
    return Resource.create(attrs)


def spans_payload(tenant: str, traces: int = 2, children: int = 2,
                  service: str = "checkout") -> tuple[bytes, list[str]]:
    """(ExportTraceServiceRequest bytes, hex trace ids): per trace a root span and children."""
    spans, trace_ids = finished_spans(resource(tenant, service), traces, children)
    return encode_spans(spans).SerializeToString(), trace_ids


def finished_spans(res: Resource, traces: int = 2, children: int = 2) -> tuple[list[ReadableSpan], list[str]]:
    """SDK spans: per trace a SERVER root with an event, CLIENT children (one linked, one failed)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=res)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("sink-tests", "1.2.3")
    trace_ids = []
    for t in range(traces):
        attrs: dict[str, AttributeValue] = {"http.request.method": "GET", "http.response.status_code": 200,
                                            "trace.no": t}
        with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes=attrs) as root:
            root.add_event("cache.miss", {"cache.key": "cart-1"})
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
            for c in range(children):
                link = [Link(root.get_span_context(), {"link.kind": "parent"})] if c == 0 else []
                with tracer.start_as_current_span(f"SELECT cart {c}", kind=SpanKind.CLIENT, links=link,
                                                  attributes={"db.system": "postgresql"}) as child:
                    if c == children - 1:
                        child.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.shutdown()
    return list(exporter.get_finished_spans()), trace_ids


def logs_payload(tenant: str, n: int = 3, service: str = "checkout") -> bytes:
    """ExportLogsServiceRequest bytes: string bodies, plus one structured (map) body."""
    return encode_logs(finished_logs(resource(tenant, service), n)).SerializeToString()


def finished_logs(res: Resource, n: int = 3) -> list[ReadableLogRecord]:
    """SDK log records: ``n`` string bodies ("order <i> placed") and one map body."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=res)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("sink-tests", "1.2.3")
    for i in range(n):
        logger.emit(body=f"order {i} placed", severity_number=SeverityNumber.INFO, severity_text="INFO",
                    attributes={"order.id": i, "http.route": "/orders"})
    logger.emit(body={"event": "refund", "amount": 12.5}, severity_number=SeverityNumber.WARN,
                severity_text="WARN", attributes={"order.id": n})
    provider.shutdown()
    return list(exporter.get_finished_logs())


def metrics_payload(tenant: str, service: str = "checkout", scale: float = 1.0) -> bytes:
    """ExportMetricsServiceRequest bytes of ``metrics_data`` for a gateway-stamped resource."""
    return encode_metrics(metrics_data(resource(tenant, service), scale)).SerializeToString()


def metrics_data(res: Resource, scale: float = 1.0) -> MetricsData:
    """SDK metrics with every instrument kind, cumulative.

    counter ``orders`` {order} -> ``orders_total``; up-down counter ``queue.depth`` {item};
    gauge ``cpu.utilization`` 1 -> ``..._ratio``; histogram ``http.server.request.duration`` s;
    exponential histogram ``payload.size`` By (via the exponential aggregation view).
    ``scale`` multiplies the recorded values so repeated calls can move the series.
    """
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=res,
        metric_readers=[reader],
        views=[
            View(instrument_name="payload.size",
                 aggregation=ExponentialBucketHistogramAggregation(max_size=40)),
            View(instrument_name="http.server.request.duration",
                 aggregation=ExplicitBucketHistogramAggregation(DURATION_BOUNDS)),
        ],
    )
    meter = provider.get_meter(SCOPE_NAME, SCOPE_VERSION, schema_url=SCOPE_SCHEMA_URL,
                               attributes=SCOPE_ATTRIBUTES)
    counter = meter.create_counter("orders", unit="{order}", description="orders placed")
    updown = meter.create_up_down_counter("queue.depth", unit="{item}")
    gauge = meter.create_gauge("cpu.utilization", unit="1")
    hist = meter.create_histogram("http.server.request.duration", unit="s")
    exph = meter.create_histogram("payload.size", unit="By")
    counter.add(5 * scale, {"payment.method": "card"})
    counter.add(2 * scale, {"payment.method": "cash"})
    updown.add(10 * scale)
    updown.add(-3 * scale)
    gauge.set(0.25 * scale, {"cpu": "0"})
    for v in DURATION_VALUES:
        hist.record(v * scale, {"http.route": "/cart"})
    for v in PAYLOAD_VALUES:
        exph.record(v * scale)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


@dataclass(frozen=True)
class Exemplified:
    """SDK metrics with exemplars, and the (hex) ids of the span they were recorded in."""

    data: MetricsData
    trace_id: str
    span_id: str


def exemplar_metrics_data(res: Resource) -> Exemplified:
    """Measurements taken inside a sampled span, so the SDK's default (trace-based) exemplar
    filter gives each point an exemplar, as it would in a traced service.

    counter ``checkouts`` -> ``checkouts_total``; histogram ``checkout.duration`` s (classic
    buckets, one measurement of ``EXEMPLAR_DURATION``); exponential histogram ``checkout.size``
    By (``EXEMPLAR_SIZE``); up-down counter ``checkout.queue`` (a gauge: its exemplar is dropped).
    Views keep only ``http.route`` on the counter and the histogram, so ``user.id`` arrives as an
    exemplar's filtered attribute.
    """
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=res, metric_readers=[reader], views=[
        View(instrument_name="checkouts", attribute_keys={"http.route"}),
        View(instrument_name="checkout.duration", attribute_keys={"http.route"},
             aggregation=ExplicitBucketHistogramAggregation(DURATION_BOUNDS)),
        View(instrument_name="checkout.size", aggregation=ExponentialBucketHistogramAggregation(max_size=40)),
    ])
    meter = provider.get_meter("exemplar-tests", "0.1.0")
    counter = meter.create_counter("checkouts", unit="{checkout}")
    hist = meter.create_histogram("checkout.duration", unit="s")
    exph = meter.create_histogram("checkout.size", unit="By")
    updown = meter.create_up_down_counter("checkout.queue", unit="{item}")
    tracer_provider = TracerProvider(resource=res)
    attrs: dict[str, AttributeValue] = {"http.route": "/cart", "user.id": "u-42"}
    with tracer_provider.get_tracer("exemplar-tests").start_as_current_span("POST /checkout") as span:
        counter.add(1, attrs)
        hist.record(EXEMPLAR_DURATION, attrs)
        exph.record(EXEMPLAR_SIZE)
        updown.add(1)
        ctx = span.get_span_context()
    data = reader.get_metrics_data()
    provider.shutdown()
    tracer_provider.shutdown()
    assert data is not None
    return Exemplified(data, format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))


def bus_record(signal: Signal, value: bytes, tenant: str, offset: int, partition: int = 0,
               topic: str | None = None) -> BusRecord:
    """A consumed record as the Kafka source would hand it to a sink."""
    return BusRecord(
        topic=topic or signal.topic(), partition=partition, offset=offset, key=tenant.encode(), value=value,
        headers={HEADER_TENANT: tenant, HEADER_CORRELATION: uuid.uuid4().hex, HEADER_SIGNAL: signal.value},
        signal=signal,
    )
