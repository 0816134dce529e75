"""Realistic OTLP Export requests, for the bench's load and for tests; serialized once up front.

This module owns them because the bench is shipped and tests are not: ``tests/otlp_payloads.py``
re-exports it. The shapes follow what the OpenTelemetry SDKs send: one resource with the usual
service/host attributes, one instrumentation scope, spans with ~10 attributes as a
BatchSpanProcessor exports them (512 per request by default). Everything is deterministic for
a given ``seed`` so tests can compare bytes.

Each ``*_request`` function returns the message; ``payload(signal, ...)`` returns it serialized.
The load generator must stay cheap next to the system under test, so a worker builds a small
ring of distinct serialized requests (``build_ring``) at start and sends those bytes over and over.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp.signals import Signal

BASE_TIME_NS = 1_700_000_000_000_000_000

REQUEST_TYPES: dict[Signal, Any] = {s: s.spec.request for s in Signal}


def kv(key: str, value: str | int | float | bool) -> KeyValue:
    """A KeyValue with the AnyValue variant that matches the Python type."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def resource(service: str = "checkout", extra: dict[str, str] | None = None) -> Resource:
    """An SDK-like resource; ``extra`` adds attributes (e.g. a forged ``tenant.id``)."""
    attrs = [
        kv("service.name", service),
        kv("service.version", "1.4.2"),
        kv("deployment.environment", "prod"),
        kv("host.name", "ip-10-0-3-17"),
        kv("telemetry.sdk.name", "opentelemetry"),
        kv("telemetry.sdk.language", "python"),
        kv("telemetry.sdk.version", "1.27.0"),
    ]
    attrs += [kv(k, v) for k, v in (extra or {}).items()]
    return Resource(attributes=attrs)


def scope(name: str = "opentelemetry.instrumentation.flask") -> InstrumentationScope:
    return InstrumentationScope(name=name, version="0.48b0")


def _span_attributes(rng: random.Random, n: int) -> list[KeyValue]:
    pool: list[KeyValue] = [
        kv("http.request.method", rng.choice(["GET", "POST", "PUT"])),
        kv("url.path", f"/api/v1/orders/{rng.randrange(100000)}"),
        kv("http.route", "/api/v1/orders/{id}"),
        kv("http.response.status_code", rng.choice([200, 200, 200, 404, 500])),
        kv("server.address", "checkout.internal"),
        kv("server.port", 8080),
        kv("network.protocol.version", "1.1"),
        kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        kv("client.address", f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"),
        kv("thread.id", rng.randrange(1, 64)),
    ]
    while len(pool) < n:
        pool.append(kv(f"app.attr{len(pool)}", rng.random()))
    return pool[:n]


def spans(count: int = 512, attributes: int = 10, traces: int = 16, events: int = 0,
          seed: int = 1) -> list[trace_pb2.Span]:
    """``count`` spans spread over ``traces`` trace ids, each with ``attributes`` attributes
    and ``events`` span events."""
    rng = random.Random(seed)
    trace_ids = [rng.randbytes(16) for _ in range(max(1, traces))]
    out = []
    for i in range(count):
        start = BASE_TIME_NS + i * 1_000_000
        span = trace_pb2.Span(
            trace_id=trace_ids[i % len(trace_ids)],
            span_id=rng.randbytes(8),
            parent_span_id=rng.randbytes(8) if i % 4 else b"",
            name=rng.choice(["GET /api/v1/orders/{id}", "SELECT orders", "publish order.created"]),
            kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=start,
            end_time_unix_nano=start + rng.randrange(100_000, 50_000_000),
            attributes=_span_attributes(rng, attributes),
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK),
            flags=0x100,
        )
        for e in range(events):
            span.events.add(time_unix_nano=start + e, name="exception",
                            attributes=[kv("exception.type", "ValueError")])
        out.append(span)
    return out


def traces_request(spans_per_request: int = 512, attributes: int = 10, resources: int = 1,
                   scopes: int = 1, traces: int = 16, events: int = 0, seed: int = 1,
                   resource_extra: dict[str, str] | None = None) -> ExportTraceServiceRequest:
    """``resources`` ResourceSpans x ``scopes`` ScopeSpans, each holding ``spans_per_request``
    spans (so the request has resources*scopes*spans_per_request spans)."""
    req = ExportTraceServiceRequest()
    for r in range(resources):
        rs = req.resource_spans.add(resource=resource(f"svc-{r}", resource_extra),
                                    schema_url="https://opentelemetry.io/schemas/1.24.0")
        for s in range(scopes):
            rs.scope_spans.add(scope=scope(f"scope-{s}"),
                               spans=spans(spans_per_request, attributes, traces, events, seed + r * 31 + s))
    return req


def logs_request(records: int = 512, attributes: int = 6, resources: int = 1, scopes: int = 1,
                 seed: int = 1, resource_extra: dict[str, str] | None = None) -> ExportLogsServiceRequest:
    """``resources`` x ``scopes`` blocks of ``records`` log records with ``attributes`` each."""
    rng = random.Random(seed)
    req = ExportLogsServiceRequest()
    for r in range(resources):
        rl = req.resource_logs.add(resource=resource(f"svc-{r}", resource_extra))
        for s in range(scopes):
            sl = rl.scope_logs.add(scope=scope(f"logger-{s}"))
            for i in range(records):
                sl.log_records.add(
                    time_unix_nano=BASE_TIME_NS + i,
                    observed_time_unix_nano=BASE_TIME_NS + i + 10,
                    severity_number=logs_pb2.SEVERITY_NUMBER_INFO,
                    severity_text="INFO",
                    body=AnyValue(string_value=f"order {rng.randrange(10**6)} created for customer"),
                    attributes=_span_attributes(rng, attributes),
                    trace_id=rng.randbytes(16),
                    span_id=rng.randbytes(8),
                    flags=1,
                )
    return req


def metrics_request(points: int = 4, resources: int = 1, scopes: int = 1,
                    resource_extra: dict[str, str] | None = None) -> ExportMetricsServiceRequest:
    """One metric of every kind (gauge, sum, histogram, exponential histogram, summary) per
    scope, each with ``points`` data points: 5 * points * resources * scopes data points."""
    req = ExportMetricsServiceRequest()
    attrs = [kv("http.route", "/orders"), kv("http.request.method", "GET")]
    t = BASE_TIME_NS
    for r in range(resources):
        rm = req.resource_metrics.add(resource=resource(f"svc-{r}", resource_extra))
        for s in range(scopes):
            sm = rm.scope_metrics.add(scope=scope(f"meter-{s}"))
            g = sm.metrics.add(name="process.cpu.utilization", unit="1")
            g.gauge.data_points.extend(
                metrics_pb2.NumberDataPoint(attributes=attrs, time_unix_nano=t + i, as_double=0.5 + i)
                for i in range(points))
            m = sm.metrics.add(name="http.server.requests", unit="{request}")
            m.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
            m.sum.is_monotonic = True
            m.sum.data_points.extend(
                metrics_pb2.NumberDataPoint(attributes=attrs, start_time_unix_nano=t, time_unix_nano=t + i,
                                            as_int=100 + i) for i in range(points))
            h = sm.metrics.add(name="http.server.request.duration", unit="s")
            h.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
            h.histogram.data_points.extend(
                metrics_pb2.HistogramDataPoint(attributes=attrs, time_unix_nano=t + i, count=6, sum=1.5,
                                               bucket_counts=[1, 2, 3], explicit_bounds=[0.1, 0.5])
                for i in range(points))
            e = sm.metrics.add(name="rpc.duration", unit="ms")
            e.exponential_histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
            e.exponential_histogram.data_points.extend(
                metrics_pb2.ExponentialHistogramDataPoint(
                    attributes=attrs, time_unix_nano=t + i, count=3, sum=7.0, scale=2, zero_count=1,
                    positive=metrics_pb2.ExponentialHistogramDataPoint.Buckets(offset=1,
                                                                               bucket_counts=[1, 1]))
                for i in range(points))
            q = sm.metrics.add(name="db.latency", unit="s")
            q.summary.data_points.extend(
                metrics_pb2.SummaryDataPoint(
                    attributes=attrs, time_unix_nano=t + i, count=10, sum=2.0,
                    quantile_values=[metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.2)])
                for i in range(points))
    return req


def request(signal: Signal, **kwargs: Any) -> Any:
    """The builder for ``signal`` with its keyword arguments."""
    if signal is Signal.TRACES:
        return traces_request(**kwargs)
    if signal is Signal.LOGS:
        return logs_request(**kwargs)
    return metrics_request(**kwargs)


def payload(signal: Signal, **kwargs: Any) -> bytes:
    """``request(signal, **kwargs)`` serialized."""
    data: bytes = request(signal, **kwargs).SerializeToString()
    return data


def item_count(signal: Signal, data: bytes) -> int:
    """Spans / log records / data points in a serialized request, counted by a full decode."""
    msg = REQUEST_TYPES[signal].FromString(data)
    if signal is Signal.TRACES:
        return sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    if signal is Signal.LOGS:
        return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind:
                    n += len(getattr(m, kind).data_points)
    return n


# -- the bench's view: a shape from the command line, a ring of serialized requests ---------------


@dataclass(frozen=True, slots=True)
class PayloadShape:
    """How big one Export request is. ``items``: spans, log records or metric data points."""

    items: int = 512
    attributes: int = 10
    resources: int = 1


@dataclass(frozen=True, slots=True)
class Payload:
    """One serialized request and how many items it carries (what the loss check counts)."""

    signal: Signal
    data: bytes
    items: int


def build(signal: Signal, shape: PayloadShape, seed: int = 0) -> Payload:
    """A request of ``shape``; metrics come as 5 kinds x N points, so ``items`` rounds down to 5s."""
    per_resource = max(1, shape.items // max(1, shape.resources))
    if signal is Signal.TRACES:
        msg: Any = traces_request(spans_per_request=per_resource, attributes=shape.attributes,
                                  resources=shape.resources, seed=seed + 1)
    elif signal is Signal.LOGS:
        msg = logs_request(records=per_resource, attributes=shape.attributes, resources=shape.resources,
                           seed=seed + 1)
    else:
        msg = metrics_request(points=max(1, per_resource // 5), resources=shape.resources)
    data: bytes = msg.SerializeToString()
    return Payload(signal, data, item_count(signal, data))


def build_ring(signal: Signal, shape: PayloadShape, count: int = 8, seed: int = 0) -> list[Payload]:
    """``count`` requests with different ids and values (metrics: identical) to cycle through."""
    return [build(signal, shape, seed * 1000 + i) for i in range(count)]
