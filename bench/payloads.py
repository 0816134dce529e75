"""OTLP request builders for load: realistic, configurable, and serialized once up front.

The generator must stay cheap next to the system under test, so a worker builds a small ring
of distinct serialized requests at start and sends those bytes over and over. Shape defaults
follow what the OpenTelemetry SDKs send: batches of 512 spans or log records, a handful of
semantic-convention attributes, a resource naming the service. Tests and the bench share
these builders; this module owns them because the bench is shipped and tests are not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from gateway.signals import Signal

# Attribute keys a typical HTTP server span or log line carries (semantic conventions).
_ATTR_KEYS = (
    "http.request.method", "http.route", "http.response.status_code", "url.path", "server.address",
    "network.peer.address", "user_agent.original", "db.system", "db.statement", "messaging.system",
    "rpc.service", "rpc.method", "thread.name", "code.function", "code.filepath", "enduser.id",
)
_START_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True, slots=True)
class PayloadShape:
    """How big one Export request is. ``items`` are spans, log records or metric data points."""

    items: int = 512
    attributes: int = 8
    value_bytes: int = 24
    body_bytes: int = 200  # log body length
    services: int = 1  # resources per request; items are spread over them


@dataclass(frozen=True, slots=True)
class Payload:
    """One serialized request and how many items it carries (what the loss check counts)."""

    signal: Signal
    data: bytes
    items: int


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789/_-.", k=n))


def _attrs(rng: random.Random, shape: PayloadShape) -> list[KeyValue]:
    out: list[KeyValue] = []
    for i in range(shape.attributes):
        key = _ATTR_KEYS[i % len(_ATTR_KEYS)] + ("" if i < len(_ATTR_KEYS) else f".{i}")
        if key == "http.response.status_code":
            out.append(KeyValue(key=key, value=AnyValue(int_value=rng.choice((200, 200, 201, 404, 500)))))
        else:
            out.append(KeyValue(key=key, value=AnyValue(string_value=_text(rng, shape.value_bytes))))
    return out


def _resource(rng: random.Random, index: int) -> Resource:
    def s(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    return Resource(attributes=[
        s("service.name", f"bench-service-{index}"),
        s("service.version", "1.4.2"),
        s("service.instance.id", _text(rng, 16)),
        s("host.name", f"bench-host-{rng.randrange(100)}"),
        s("telemetry.sdk.name", "opentelemetry"),
        s("telemetry.sdk.language", "python"),
        s("deployment.environment.name", "bench"),
    ])


_SCOPE = InstrumentationScope(name="telemetry-gateway.bench", version="0.1.0")


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total)) if total else 1
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def build_traces(shape: PayloadShape, seed: int = 0) -> Payload:
    """Spans in traces of ~8 spans each (a root and children), like a sampled service batch."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    for r, count in enumerate(_split(shape.items, shape.services)):
        rs = ResourceSpans(resource=_resource(rng, r))
        ss = ScopeSpans(scope=_SCOPE)
        trace_id = b""
        root = b""
        for i in range(count):
            if i % 8 == 0:
                trace_id, root = rng.randbytes(16), rng.randbytes(8)
                span_id, parent = root, b""
            else:
                span_id, parent = rng.randbytes(8), root
            start = _START_NS + rng.randrange(10**12)
            ss.spans.append(Span(
                trace_id=trace_id, span_id=span_id, parent_span_id=parent,
                name="GET /api/v1/" + _text(rng, 12), kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start, end_time_unix_nano=start + rng.randrange(10**5, 10**9),
                attributes=_attrs(rng, shape), status=Status(code=Status.STATUS_CODE_OK),
            ))
        rs.scope_spans.append(ss)
        req.resource_spans.append(rs)
    return Payload(Signal.TRACES, req.SerializeToString(), shape.items)


def build_logs(shape: PayloadShape, seed: int = 0) -> Payload:
    rng = random.Random(seed)
    req = ExportLogsServiceRequest()
    for r, count in enumerate(_split(shape.items, shape.services)):
        rl = ResourceLogs(resource=_resource(rng, r))
        sl = ScopeLogs(scope=_SCOPE)
        for _ in range(count):
            t = _START_NS + rng.randrange(10**12)
            sl.log_records.append(LogRecord(
                time_unix_nano=t, observed_time_unix_nano=t,
                severity_number=SeverityNumber.SEVERITY_NUMBER_INFO, severity_text="INFO",
                body=AnyValue(string_value=_text(rng, shape.body_bytes)), attributes=_attrs(rng, shape),
                trace_id=rng.randbytes(16), span_id=rng.randbytes(8),
            ))
        rl.scope_logs.append(sl)
        req.resource_logs.append(rl)
    return Payload(Signal.LOGS, req.SerializeToString(), shape.items)


def build_metrics(shape: PayloadShape, seed: int = 0) -> Payload:
    """Data points spread over gauges, cumulative sums and histograms, 8 points per metric."""
    rng = random.Random(seed)
    req = ExportMetricsServiceRequest()
    bounds = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]
    for r, count in enumerate(_split(shape.items, shape.services)):
        rm = ResourceMetrics(resource=_resource(rng, r))
        sm = ScopeMetrics(scope=_SCOPE)
        left, m = count, 0
        while left > 0:
            n = min(8, left)
            left -= n
            t = _START_NS + rng.randrange(10**12)
            kind = m % 3
            metric = Metric(name=f"bench.metric.{m}", unit="ms")
            if kind == 0:
                metric.gauge.CopyFrom(Gauge(data_points=[
                    NumberDataPoint(time_unix_nano=t, as_double=rng.random() * 100,
                                    attributes=_attrs(rng, shape))
                    for _ in range(n)]))
            elif kind == 1:
                metric.sum.CopyFrom(Sum(
                    aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
                    is_monotonic=True,
                    data_points=[NumberDataPoint(start_time_unix_nano=_START_NS, time_unix_nano=t,
                                                 as_int=rng.randrange(10**6), attributes=_attrs(rng, shape))
                                 for _ in range(n)]))
            else:
                metric.histogram.CopyFrom(Histogram(
                    aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
                    data_points=[HistogramDataPoint(
                        start_time_unix_nano=_START_NS, time_unix_nano=t, count=90, sum=4321.0,
                        explicit_bounds=bounds, bucket_counts=[10] * (len(bounds) + 1),
                        attributes=_attrs(rng, shape)) for _ in range(n)]))
            sm.metrics.append(metric)
            m += 1
        rm.scope_metrics.append(sm)
        req.resource_metrics.append(rm)
    return Payload(Signal.METRICS, req.SerializeToString(), shape.items)


_BUILDERS = {Signal.TRACES: build_traces, Signal.LOGS: build_logs, Signal.METRICS: build_metrics}


def build(signal: Signal, shape: PayloadShape, seed: int = 0) -> Payload:
    return _BUILDERS[signal](shape, seed)


def build_ring(signal: Signal, shape: PayloadShape, count: int = 8, seed: int = 0) -> list[Payload]:
    """``count`` distinct requests (different ids and values) to cycle through while sending."""
    return [build(signal, shape, seed * 1000 + i) for i in range(count)]


def count_items(signal: Signal, data: bytes) -> int:
    """Items in one serialized request, counted the same way for what was sent and what arrived.

    A Kafka message may hold several concatenated requests with resources merged by the
    gateway; decoding the whole value counts them all, whatever the framing.
    """
    if signal is Signal.TRACES:
        t = ExportTraceServiceRequest.FromString(data)
        return sum(len(ss.spans) for rs in t.resource_spans for ss in rs.scope_spans)
    if signal is Signal.LOGS:
        lg = ExportLogsServiceRequest.FromString(data)
        return sum(len(sl.log_records) for rl in lg.resource_logs for sl in rl.scope_logs)
    mt = ExportMetricsServiceRequest.FromString(data)
    total = 0
    for rm in mt.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total
