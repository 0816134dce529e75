"""OTLP spans and logs to Elasticsearch documents in Elastic's OpenTelemetry-native layout.

The layout follows the collector's ``elasticsearchexporter`` ``otel`` mapping mode, so
dashboards and queries written for that exporter work here: ``@timestamp``, hex ids,
``attributes`` keyed by the full dotted attribute name, ``resource.attributes``,
``scope.{name,version,attributes}``, span ``kind``/``status.code`` as the OTLP enum names,
``duration`` in nanoseconds, and for logs ``body.text`` or ``body.structured``.

Each document gets an ``_id`` from the Kafka coordinates of the record it came from and its
position in that record, so a redelivered record overwrites the same documents instead of
adding copies (DESIGN.md principle 3).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from gateway.bus.base import BusRecord
from gateway.signals import Signal
from pipelines.convert.otlp_values import any_value, attributes, resource_tenant

Doc = dict[str, Any]

TRACES_PREFIX = "traces-otel-"
LOGS_PREFIX = "logs-otel-"
INDEX_PREFIX = {Signal.TRACES: TRACES_PREFIX, Signal.LOGS: LOGS_PREFIX}

# OTLP enum numbers to the names the otel mapping mode stores.
SPAN_KIND = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODE = ("Unset", "Ok", "Error")

_INDEX_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_MAX_TENANT_CHARS = 200  # index names are limited to 255 bytes; leave room for the prefix


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One document ready for the bulk API: target index, idempotent id, JSON source."""

    index: str
    doc_id: str
    source: bytes


@lru_cache(maxsize=1024)
def tenant_index_part(tenant: str) -> str:
    """Tenant as an index-name component: lower case, only ``[a-z0-9._-]``, never empty.

    Index names cannot hold upper case or most punctuation. Distinct tenants that differ only
    in such characters share an index; ``resource.attributes.tenant.id`` keeps them apart.
    """
    part = _INDEX_UNSAFE.sub("_", tenant.lower())[:_MAX_TENANT_CHARS].strip(".")
    return part or "_"


def index_name(signal: Signal, tenant: str) -> str:
    return INDEX_PREFIX[signal] + tenant_index_part(tenant)


def document_id(record: BusRecord, position: int) -> str:
    """``<topic>-<partition>-<offset>-<position>``: stable across redelivery of the record."""
    return f"{record.topic}-{record.partition}-{record.offset}-{position}"


@lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_nanos(unix_nano: int) -> str:
    """RFC 3339 with nanoseconds, what a ``date_nanos`` field keeps without loss."""
    seconds, frac = divmod(unix_nano, 1_000_000_000)
    return f"{_second_prefix(seconds)}.{frac:09d}Z"


def _resource_part(resource: Resource, schema_url: str) -> Doc:
    part: Doc = {"attributes": attributes(resource.attributes)}
    if resource.dropped_attributes_count:
        part["dropped_attributes_count"] = resource.dropped_attributes_count
    if schema_url:
        part["schema_url"] = schema_url
    return part


def _scope_part(scope: InstrumentationScope, schema_url: str) -> Doc:
    part: Doc = {"name": scope.name}
    if scope.version:
        part["version"] = scope.version
    if scope.attributes:
        part["attributes"] = attributes(scope.attributes)
    if scope.dropped_attributes_count:
        part["dropped_attributes_count"] = scope.dropped_attributes_count
    if schema_url:
        part["schema_url"] = schema_url
    return part


def _data_stream(kind: str, tenant: str) -> Doc:
    return {"type": kind, "dataset": "otel", "namespace": tenant_index_part(tenant)}


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every document of one scope shares: built, and serialized, once per scope."""

    tenant: str
    parts: Doc  # data_stream, resource, scope
    json: bytes  # the same members as JSON, without the enclosing braces


def _walk(resources: Iterable[Any], scopes: str, items: str, kind: str,
          fallback_tenant: str) -> Iterator[tuple[_Shared, Any]]:
    """(shared parts, span or log record) for every item of a decoded request."""
    for rx in resources:
        tenant = resource_tenant(rx.resource.attributes, fallback_tenant)
        resource = _resource_part(rx.resource, rx.schema_url)
        stream = _data_stream(kind, tenant)
        for sx in getattr(rx, scopes):
            scope = _scope_part(sx.scope, sx.schema_url)
            parts = {"data_stream": stream, "resource": resource, "scope": scope}
            shared = _Shared(tenant, parts, orjson.dumps(parts)[1:-1])
            for item in getattr(sx, items):
                yield shared, item


def _span_doc(span: Span) -> Doc:
    """A span's own fields (without the shared data_stream/resource/scope)."""
    start = span.start_time_unix_nano
    doc: Doc = {
        "@timestamp": iso_nanos(start),
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "name": span.name,
        "kind": SPAN_KIND[span.kind] if span.kind < len(SPAN_KIND) else str(span.kind),
        "duration": max(span.end_time_unix_nano - start, 0),
        "attributes": attributes(span.attributes),
        "status": {
            "code": STATUS_CODE[span.status.code] if span.status.code < 3 else "Unset",
        },
    }
    if span.parent_span_id:
        doc["parent_span_id"] = span.parent_span_id.hex()
    if span.trace_state:
        doc["trace_state"] = span.trace_state
    if span.status.message:
        doc["status"]["message"] = span.status.message
    if span.events:
        doc["events"] = [
            {"name": ev.name, "timestamp": iso_nanos(ev.time_unix_nano),
             "attributes": attributes(ev.attributes)}
            for ev in span.events
        ]
    if span.links:
        doc["links"] = [
            {"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex(),
             "trace_state": ln.trace_state, "attributes": attributes(ln.attributes)}
            for ln in span.links
        ]
    for key in ("dropped_attributes_count", "dropped_events_count", "dropped_links_count"):
        n = getattr(span, key)
        if n:
            doc[key] = n
    return doc


def log_body(body: AnyValue) -> Doc:
    """``{"text": ...}`` for scalar bodies, ``{"structured": {...}}`` for maps and arrays.

    ``body.structured`` is a ``flattened`` field, which wants an object at its root, so an
    array body is kept under ``value``.
    """
    kind = body.WhichOneof("value")
    if kind is None:
        return {}
    value = any_value(body)
    if kind == "kvlist_value":
        return {"structured": value}
    if kind == "array_value":
        return {"structured": {"value": value}}
    if kind == "string_value":
        return {"text": value}
    if kind == "bool_value":
        return {"text": "true" if value else "false"}
    return {"text": str(value)}


def _log_doc(lr: LogRecord) -> Doc:
    """A log record's own fields (without the shared data_stream/resource/scope)."""
    observed = lr.observed_time_unix_nano
    # Per the OTLP spec a missing event time falls back to the observed time.
    doc: Doc = {
        "@timestamp": iso_nanos(lr.time_unix_nano or observed),
        "severity_number": lr.severity_number,
        "attributes": attributes(lr.attributes),
    }
    if observed:
        doc["observed_timestamp"] = iso_nanos(observed)
    if lr.severity_text:
        doc["severity_text"] = lr.severity_text
    body = log_body(lr.body)
    if body:
        doc["body"] = body
    if lr.trace_id:
        doc["trace_id"] = lr.trace_id.hex()
    if lr.span_id:
        doc["span_id"] = lr.span_id.hex()
    if lr.event_name:
        doc["event_name"] = lr.event_name
    if lr.dropped_attributes_count:
        doc["dropped_attributes_count"] = lr.dropped_attributes_count
    return doc


def _items(signal: Signal, payload: bytes, fallback_tenant: str) -> Iterator[tuple[_Shared, Doc]]:
    if signal is Signal.TRACES:
        traces = ExportTraceServiceRequest.FromString(payload)
        for shared, span in _walk(traces.resource_spans, "scope_spans", "spans", "traces", fallback_tenant):
            yield shared, _span_doc(span)
    else:
        logs = ExportLogsServiceRequest.FromString(payload)
        for shared, lr in _walk(logs.resource_logs, "scope_logs", "log_records", "logs", fallback_tenant):
            yield shared, _log_doc(lr)


def span_documents(payload: bytes, fallback_tenant: str = "") -> Iterator[tuple[str, Doc]]:
    """(tenant, document) per span of a serialized ExportTraceServiceRequest."""
    for shared, doc in _items(Signal.TRACES, payload, fallback_tenant):
        yield shared.tenant, {**doc, **shared.parts}


def log_documents(payload: bytes, fallback_tenant: str = "") -> Iterator[tuple[str, Doc]]:
    """(tenant, document) per log record of a serialized ExportLogsServiceRequest."""
    for shared, doc in _items(Signal.LOGS, payload, fallback_tenant):
        yield shared.tenant, {**doc, **shared.parts}


def bulk_items(record: BusRecord) -> list[BulkItem]:
    """Every document of one consumed record, with its index and idempotent id.

    The parts a scope's documents share are serialized once and spliced into each document's
    JSON, which is most of the serializing work saved for SDK-shaped batches.
    """
    return [
        BulkItem(index_name(record.signal, shared.tenant), document_id(record, i),
                 orjson.dumps(doc)[:-1] + b"," + shared.json + b"}")
        for i, (shared, doc) in enumerate(_items(record.signal, record.value, record.tenant))
    ]


def bulk_body(items: Sequence[BulkItem], op: str = "create") -> bytes:
    """NDJSON for ``POST /_bulk``: an action line and the source per document.

    ``create`` is the action data streams accept; a repeated ``_id`` answers 409 (already
    written), which is what makes redelivery harmless.
    """
    parts: list[bytes] = []
    for it in items:
        parts.append(orjson.dumps({op: {"_index": it.index, "_id": it.doc_id}}))
        parts.append(it.source)
    parts.append(b"")
    return b"\n".join(parts)
