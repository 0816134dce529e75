"""Names shared by the edge, the bus and the pipelines, so the wire contract lives in one place:
the signals, one ``SignalSpec`` row each, and the names on the wire around them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


class Signal(StrEnum):
    """An OTLP signal. The value is the OTLP/HTTP path suffix (``/v1/<value>``); everything
    else about it is its row in ``SPECS``, reached as ``signal.spec``."""

    TRACES = "traces"
    LOGS = "logs"
    METRICS = "metrics"

    @property
    def spec(self) -> SignalSpec:
        return SPECS[self]

    @property
    def topic_suffix(self) -> str:
        """Kafka topic suffix: ``otlp_spans``/``otlp_logs``/``otlp_metrics`` per docs/architecture.md."""
        return SPECS[self].topic_suffix

    def topic(self, prefix: str = "otlp_") -> str:
        return prefix + self.topic_suffix


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """Every per-signal fact the edge, the bus and the pipelines need, in one row.

    Field names are the protobuf ones (snake_case); the ``*_json`` ones are their OTLP/JSON
    (lowerCamelCase) keys. An Export request is ``repeated <resource_field> = 1``, each
    ResourceX holds ``repeated <scope_field> = 2``, each ScopeX ``repeated <item_field> = 2``.
    """

    request: Any
    """The ``Export*ServiceRequest`` message class."""
    response: Any
    """The ``Export*ServiceResponse`` message class."""
    resource: Any
    """The ``ResourceX`` message class (what the content check walks)."""
    grpc_service: str
    """Full name of the OTLP/gRPC service, whose one method is ``Export``."""
    http_path: str
    topic_suffix: str
    resource_field: str
    resource_json: str
    scope_field: str
    scope_json: str
    item_field: str
    item_json: str
    rejected_field: str
    """The ``partial_success`` field that counts rejected items."""
    rejected_json: str
    counts_data_points: bool = False
    """Whether an item, as counted and limited, is a data point inside the item messages
    (metrics) rather than the item message itself."""

    @property
    def request_name(self) -> str:
        return str(self.request.DESCRIPTOR.name)

    @property
    def grpc_path(self) -> str:
        return f"/{self.grpc_service}/Export"


SPECS: dict[Signal, SignalSpec] = {
    Signal.TRACES: SignalSpec(
        request=trace_service_pb2.ExportTraceServiceRequest,
        response=trace_service_pb2.ExportTraceServiceResponse, resource=trace_pb2.ResourceSpans,
        grpc_service="opentelemetry.proto.collector.trace.v1.TraceService", http_path="/v1/traces",
        topic_suffix="spans", resource_field="resource_spans", resource_json="resourceSpans",
        scope_field="scope_spans", scope_json="scopeSpans", item_field="spans", item_json="spans",
        rejected_field="rejected_spans", rejected_json="rejectedSpans"),
    Signal.LOGS: SignalSpec(
        request=logs_service_pb2.ExportLogsServiceRequest,
        response=logs_service_pb2.ExportLogsServiceResponse, resource=logs_pb2.ResourceLogs,
        grpc_service="opentelemetry.proto.collector.logs.v1.LogsService", http_path="/v1/logs",
        topic_suffix="logs", resource_field="resource_logs", resource_json="resourceLogs",
        scope_field="scope_logs", scope_json="scopeLogs", item_field="log_records", item_json="logRecords",
        rejected_field="rejected_log_records", rejected_json="rejectedLogRecords"),
    Signal.METRICS: SignalSpec(
        request=metrics_service_pb2.ExportMetricsServiceRequest,
        response=metrics_service_pb2.ExportMetricsServiceResponse, resource=metrics_pb2.ResourceMetrics,
        grpc_service="opentelemetry.proto.collector.metrics.v1.MetricsService", http_path="/v1/metrics",
        topic_suffix="metrics", resource_field="resource_metrics", resource_json="resourceMetrics",
        scope_field="scope_metrics", scope_json="scopeMetrics", item_field="metrics", item_json="metrics",
        rejected_field="rejected_data_points", rejected_json="rejectedDataPoints", counts_data_points=True),
}

# Resource attributes the gateway owns; client-supplied values are replaced.
ATTR_TENANT = "tenant.id"
ATTR_CORRELATION = "correlation.id"

# Kafka message headers (docs/architecture.md "Names on the wire").
HEADER_TENANT = "tenant"
HEADER_CORRELATION = "correlation-id"
HEADER_SIGNAL = "signal"

# Request/response header carrying the correlation id (HTTP header and gRPC metadata key).
CORRELATION_HEADER = "x-correlation-id"
TENANT_HEADER = "x-scope-orgid"

DEFAULT_TENANT = "default"
